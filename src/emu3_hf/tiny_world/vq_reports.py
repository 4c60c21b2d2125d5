"""How a VQ reads the tiny world back: each report decodes pictures through the VQ and scores them with the reference
analyzer (:mod:`.analyze`), the way ``emu3 tiny-world eval`` scores the LM's.

- :func:`vq_reconstruction_report`: clean images or clips of a split, ``encode`` -> ``decode``, per attribute.
- :func:`vq_locality_report`: how far a cell's code depends on the rest of the picture.
- :func:`canonical_reconstruction_report`: the canonical grids of a split (stage 1d, :mod:`.canonical`) decoded, what
  an LM that writes them exactly would score.

Example:
    ```python
    >>> from emu3_hf.tiny_world.vq_reports import vq_reconstruction_report
    >>> vq_reconstruction_report("runs/tiny/vq-decoder", "validation")["all"]  # share of images read back exactly
    ```
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .analyze import aggregate_scores, score_image, score_video
from .splits import iter_image_examples, iter_video_examples, make_splits


@torch.no_grad()
def vq_reconstruction_report(vq: Any, split: str = "validation", batch_size: int = 32,
                             kind: str = "image") -> dict[str, float]:  # fmt: skip
    """Share of a split's clean images (``kind="image"``) or 8-frame clips (``"video"``) whose VQ round trip the
    analyzer reads back right, per attribute and ``all`` (:func:`~emu3_hf.tiny_world.analyze.aggregate_scores`).
    ``vq``: an ``Emu3VisionVQModel`` or its folder."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel

    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', got {kind!r}.")
    if not isinstance(vq, torch.nn.Module):
        vq = Emu3VisionVQModel.from_pretrained(vq)
    vq = vq.eval()
    splits = make_splits()
    if kind == "image":
        specs, score = splits.images[split], score_image
        samples = [np.asarray(image) for image, _ in iter_image_examples(split, jitter=False, shuffle=False)]
    else:
        specs, score = splits.videos[split], score_video
        samples = [np.stack([np.asarray(f) for f in frames])
                   for frames, _ in iter_video_examples(split, jitter=False, shuffle=False)]  # fmt: skip
    scores = []
    for start in range(0, len(samples), batch_size):
        pixels = torch.from_numpy(np.stack(samples[start : start + batch_size])).float() / 127.5 - 1.0
        pixels = pixels.movedim(-1, -3).to(next(vq.parameters()).device)  # (B, [T,] 3, 64, 64)
        decoded = vq.decode(vq.encode(pixels))
        if kind == "image" and decoded.dim() == 5:
            decoded = decoded[:, 0]
        rounds = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()
        scores += [score(sample, spec) for sample, spec in zip(rounds, specs[start : start + batch_size])]
    return aggregate_scores(scores)


@torch.no_grad()
def vq_locality_report(vq: Any, split: str = "validation", margin: int = 1) -> dict[str, float]:
    """How local a VQ's codes are: each clean image of a split is paired with the next image of the split on the same
    background (cyclically), and over the cells where neither image has a shape pixel within ``margin`` cells, the
    share whose code is the same in both images.

    A code that depends only on its neighbourhood scores 1.0; an encoder that mixes the whole picture into every code
    scores near 0, and an LM over its codes must learn each picture's background anew. Returns ``{"background_same":
    share, "cells": number of cells compared}``. ``vq``: an ``Emu3VisionVQModel`` or its folder."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel

    if not isinstance(vq, torch.nn.Module):
        vq = Emu3VisionVQModel.from_pretrained(vq)
    vq = vq.eval()
    device, sf = next(vq.parameters()).device, vq.spatial_scale_factor
    specs = make_splits().images[split]
    images = np.stack([np.asarray(image) for image, _ in iter_image_examples(split, jitter=False, shuffle=False)])
    partner = []
    for i, spec in enumerate(specs):
        same = [j for j, other in enumerate(specs) if other.background == spec.background]
        partner.append(same[(same.index(i) + 1) % len(same)])
    pixels = torch.from_numpy(images).float().div(127.5).sub(1.0).movedim(-1, -3).to(device)
    codes = torch.cat([vq.encode(chunk) for chunk in pixels.split(32)]).cpu()  # (N, h, w)
    shape = torch.from_numpy((images != images[:, :1, :1]).any(-1)).float()[:, None]  # (N, 1, H, W), corner = bg
    near = torch.nn.functional.max_pool2d(torch.nn.functional.max_pool2d(shape, sf), 2 * margin + 1, stride=1,
                                          padding=margin)[:, 0] > 0  # fmt: skip
    far = ~(near | near[partner])
    same = (codes == codes[partner])[far]
    return {"background_same": float(same.float().mean()) if same.numel() else float("nan"), "cells": int(far.sum())}


@torch.no_grad()
def canonical_reconstruction_report(vq: Any, split: str = "validation") -> dict[str, float]:
    """Share of a split's clean image specs whose canonical grid (:func:`~emu3_hf.tiny_world.canonical.canonical_codes`) the VQ decodes to a
    picture the analyzer reads back right, per attribute and ``all``: what an LM that writes exact canonical grids
    would score (for ``heldout``: the composition it is asked for). ``vq``: a stage-1d model or folder."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel
    from .canonical import canonical_codes

    if not isinstance(vq, torch.nn.Module):
        vq = Emu3VisionVQModel.from_pretrained(vq).eval()
    specs = make_splits().images[split]
    grids = torch.stack(canonical_codes(vq, specs)).to(next(vq.parameters()).device)
    scores = []
    for start in range(0, len(specs), 64):
        drawn = vq.decode(grids[start : start + 64])
        pictures = ((drawn.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()
        scores += [score_image(p, s) for p, s in zip(pictures, specs[start : start + 64])]
    return aggregate_scores(scores)

__all__ = ["canonical_reconstruction_report", "vq_locality_report", "vq_reconstruction_report"]
