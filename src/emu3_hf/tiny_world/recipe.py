"""The embedded model's training recipe (``TINY_WORLD.md``), stage by stage, on the package's own training code.

Stage 1, the VQ tokenizer (:func:`train_tiny_vq`): :func:`~emu3_hf.training.tiny_world_vq_config` (BAAI's
architecture at width 32, a 64x64 image -> 8x8 codes, an 8-frame clip -> 2x8x8) trained by
:func:`~emu3_hf.training.train_vq` on jittered images and clips of the ``train`` split **and of the ``lora`` split
(pink)**. The VQ is the image codec: for the LoRA demo to draw pink, the codec must be able to write it, as a BPE
must be able to spell a word the LM has not learnt. The LM (stage 2) never sees pink nor the held-out pairs; the
``validation``, ``test`` and ``heldout`` specs are shown to neither.

:func:`vq_reconstruction_report` scores a VQ the way the spec scores the LM: the reference analyzer reads back
each ``encode`` -> ``decode`` round trip of clean images, per attribute.

Example:
    ```python
    >>> from emu3_hf.tiny_world.recipe import train_tiny_vq, vq_reconstruction_report
    >>> vq_dir = train_tiny_vq("runs/tiny-vq", max_steps=2000)          # hours on 2 CPU cores, minutes on a GPU
    >>> vq_reconstruction_report(vq_dir, "validation")["all_five"]      # share of images read back exactly
    ```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .analyze import analyze_image
from .splits import iter_image_examples, iter_video_examples, make_splits

VQ_STEPS = 2000  # TINY_WORLD.md: "plan ~2000 steps"
VQ_IMAGE_BATCH, VQ_VIDEO_BATCH = 8, 4


def vq_training_specs() -> tuple[tuple, tuple]:
    """(image specs, video specs) the VQ trains on: the ``train`` and ``lora`` splits."""
    splits = make_splits()
    return (splits.images["train"] + splits.images["lora"], splits.videos["train"] + splits.videos["lora"])


def train_tiny_vq(
    output_dir: str | os.PathLike,
    *,
    max_steps: int = VQ_STEPS,
    image_batch_size: int = VQ_IMAGE_BATCH,
    video_batch_size: int = VQ_VIDEO_BATCH,
    save_steps: int = 100,
    resume: bool = True,
    seed: int = 0,
    device: str | None = None,
    **overrides: Any,
) -> Path:
    """Stage 1: train the tiny world's VQ into ``output_dir`` (checkpoints there; resumes the newest one when
    ``resume`` and one exists); returns the trained VQ folder. ``overrides`` go to :class:`VQTrainConfig`."""
    from ..training import VQTrainConfig, tiny_world_vq_config, train_vq
    from ..training.checkpoint import find_checkpoints

    output_dir = Path(output_dir)
    resume_from = "latest" if resume and output_dir.is_dir() and find_checkpoints(output_dir) else None
    config = VQTrainConfig(
        model=tiny_world_vq_config(), output_dir=output_dir, max_steps=max_steps, image_batch_size=image_batch_size,
        video_batch_size=video_batch_size, save_steps=save_steps, resume_from_checkpoint=resume_from, seed=seed,
        device=device, **overrides,
    )  # fmt: skip
    images, videos = vq_training_specs()
    streams = dict(seed=seed, jitter=True, epochs=None)
    result = train_vq(
        config,
        images=iter_image_examples(images, **streams) if image_batch_size else None,
        videos=iter_video_examples(videos, **streams) if video_batch_size else None,
    )
    return Path(result.output_dir)


@torch.no_grad()
def vq_reconstruction_report(vq: Any, split: str = "validation", batch_size: int = 32) -> dict[str, float]:
    """Share of a split's clean images whose VQ round trip the analyzer reads back right: per attribute and all five.

    ``vq``: an :class:`~emu3_hf.Emu3VisionVQModel` or its folder.
    """
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel

    if not isinstance(vq, torch.nn.Module):
        vq = Emu3VisionVQModel.from_pretrained(vq)
    vq = vq.eval()
    specs = make_splits().images[split]
    pairs = list(iter_image_examples(split, jitter=False, shuffle=False))
    hits = {name: 0 for name in ("shape", "color", "background", "size", "position", "all_five")}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pixels = np.stack([np.asarray(image, dtype=np.float32) for image, _ in chunk]) / 127.5 - 1.0
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(next(vq.parameters()).device)
        decoded = vq.decode(vq.encode(batch))
        decoded = decoded[:, 0] if decoded.dim() == 5 else decoded  # (B, 3, 64, 64)
        images = ((decoded.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for spec, image in zip(specs[start : start + batch_size], images):
            read = analyze_image(image)
            right = {name: getattr(read, name) == getattr(spec, name) for name in hits if name != "all_five"}
            for name, ok in right.items():
                hits[name] += ok
            hits["all_five"] += all(right.values())
    return {name: count / len(pairs) for name, count in hits.items()}


__all__ = ["VQ_STEPS", "train_tiny_vq", "vq_reconstruction_report", "vq_training_specs"]
