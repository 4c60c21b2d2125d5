"""Score a pipeline on the tiny world the way ``TINY_WORLD.md`` scores the embedded model (``emu3 tiny-world eval``).

Every number is read off the outputs by the reference analyzer (:mod:`.analyze`), never by a network:

- ``text_to_image``: images generated from captions of the ``splits`` specs (by default ``test`` and ``validation``;
  cycled with fresh seeds up to ``images`` prompts), each attribute and all five right;
- ``heldout``: the same on the held-out (shape, colour) pairs (never in training);
- ``captions``: the chat pipeline's answer to :data:`~emu3_hf.tiny_world.recipe.CAPTION_QUESTION` about clean and
  jittered renders of those specs, exactly the canonical caption (``exact``; ``clean`` and ``jittered`` apart);
- ``video``: clips generated from the video captions of those splits: shape, colour, background, direction;
- ``seconds_per_image``: one prompt at batch 1, the median of three, after a warm-up.

Which of these prompts a model has seen depends on what it trained on: the embedded model's LM trains on every base
split (:data:`~emu3_hf.tiny_world.recipe.LM_SPLITS`), so for it only ``heldout`` is unseen.

:func:`evaluate_lora` scores the LoRA demo: pink prompts before and after the adapter, the other colours with it.

Example:
    ```python
    >>> from emu3_hf.tiny_world.evaluate import evaluate_pipeline
    >>> report = evaluate_pipeline("src/emu3_hf/assets/emu3-tiny", images=32, heldout=0, captions=0, videos=0)
    >>> report["text_to_image"]["all"]
    ```
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

from .analyze import aggregate_scores, score_image, score_video
from .render import NO_JITTER, Jitter, render_image
from .splits import make_splits

EVAL_SPLITS = ("test", "validation")


def _cycled(specs: list, count: int) -> list:
    return list(itertools.islice(itertools.cycle(specs), count))


def _base_split_names(splits: str | tuple[str, ...]) -> tuple[str, ...]:
    """``splits`` (one name or several) as a tuple of base split names; anything else is refused."""
    names = (splits,) if isinstance(splits, str) else tuple(splits)
    if not names or set(names) - {"train", "validation", "test"}:
        raise ValueError(f"splits must name one or more of ('train', 'validation', 'test') (held-out pairs are "
                         f"scored by `heldout`, pink by evaluate_lora), got {names!r}.")  # fmt: skip
    return names


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def _load(pipeline: Any, device: str | None):
    from ..pipelines import Emu3Pipeline

    pipe = Emu3Pipeline.from_pretrained(pipeline) if isinstance(pipeline, (str, os.PathLike)) else pipeline
    pipe = pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sibling(pipe: Any, name: str):
    """The chat or video pipeline over the same components."""
    from .. import pipelines

    other = getattr(pipelines, name)(**pipe.components)
    other.set_progress_bar_config(disable=True)
    return other


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def score_text_to_image(pipe: Any, specs: list, *, seed: int, batch_size: int, **sampling: Any) -> dict[str, float]:
    """Generate one image per spec from its caption and score it against the spec."""
    scores = []
    for start, chunk in _batches(specs, batch_size):
        generator = torch.Generator().manual_seed(seed + start)
        out = pipe([spec.caption() for spec in chunk], height=64, width=64, generator=generator, output_type="np",
                   **sampling)  # fmt: skip
        scores += [score_image(image, spec) for image, spec in zip(_to_uint8(out.images), chunk)]
    return aggregate_scores(scores)


def score_captions(chat: Any, specs: list, *, seed: int, batch_size: int) -> dict[str, float]:
    """``chat`` (an ``Emu3ChatPipeline``)'s greedy answer to the caption question, exactly the caption; the first
    pass over the specs uses clean renders (what ``TINY_WORLD.md`` evaluates: "no noise in the evaluation set"),
    later passes jittered ones. Returns ``exact`` (all answers), ``clean`` (the first pass), ``jittered`` (the later
    passes, when there are any) and ``count``."""
    from PIL import Image

    from .recipe import CAPTION_QUESTION

    rng = np.random.default_rng(seed)
    distinct = len(set(specs))
    hits = []
    for start, chunk in _batches(specs, batch_size):
        jitters = [NO_JITTER if start + i < distinct else Jitter.sample(rng) for i in range(len(chunk))]
        images = [render_image(spec, jitter) for spec, jitter in zip(chunk, jitters)]
        out = chat([CAPTION_QUESTION] * len(chunk), images=[Image.fromarray(image) for image in images],
                   max_new_tokens=32)  # fmt: skip
        hits += [answer.strip() == spec.caption() for answer, spec in zip(out.text, chunk)]
    report = aggregate_scores({"exact": hit} for hit in hits)
    for name, part in (("clean", hits[:distinct]), ("jittered", hits[distinct:])):
        if part:
            report[name] = sum(part) / len(part)
    return report


def score_videos(video: Any, specs: list, *, seed: int, batch_size: int, **sampling: Any) -> dict[str, float]:
    """Generate one 8-frame clip per video spec with ``video`` (an ``Emu3VideoPipeline``) and score shape, colour,
    background and direction."""
    scores = []
    for start, chunk in _batches(specs, batch_size):
        generator = torch.Generator().manual_seed(seed + start)
        out = video([spec.caption() for spec in chunk], num_frames=8, height=64, width=64, generator=generator,
                    output_type="np", **sampling)  # fmt: skip
        scores += [score_video(_to_uint8(np.asarray(frames)), spec) for frames, spec in zip(out.frames, chunk)]
    return aggregate_scores(scores)


def seconds_per_image(pipe: Any, caption: str, repeats: int = 3, **sampling: Any) -> float:
    pipe(caption, height=64, width=64, generator=torch.Generator().manual_seed(0), **sampling)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        pipe(caption, height=64, width=64, generator=torch.Generator().manual_seed(i), **sampling)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate_pipeline(
    pipeline: Any,
    *,
    images: int = 208,
    heldout: int = 240,
    captions: int = 208,
    videos: int = 200,
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    splits: tuple[str, ...] = EVAL_SPLITS,
    **sampling: Any,
) -> dict[str, Any]:
    """The tiny-world report of ``pipeline`` (a folder, repo id or ``Emu3Pipeline``); a count of 0 skips that part.
    ``splits``: the base splits whose captions the text-to-image, caption and video parts read. ``sampling`` goes
    to the image and video pipelines (``guidance_scale``, ``top_k``, ...)."""
    splits, world = _base_split_names(splits), make_splits()
    base = [spec for name in splits for spec in world.images[name]]
    clips = [spec for name in splits for spec in world.videos[name]]
    pipe = _load(pipeline, device)
    report: dict[str, Any] = {"settings": {"images": images, "heldout": heldout, "captions": captions,
                                           "videos": videos, "seed": seed, "splits": list(splits),
                                           **sampling}}  # fmt: skip
    with torch.no_grad():
        if images:
            report["text_to_image"] = score_text_to_image(pipe, _cycled(base, images), seed=seed,
                                                          batch_size=batch_size, **sampling)  # fmt: skip
        if heldout:
            report["heldout"] = score_text_to_image(pipe, _cycled(list(world.images["heldout"]), heldout),
                                                    seed=seed + 10**6, batch_size=batch_size, **sampling)  # fmt: skip
        if captions:
            chat = _sibling(pipe, "Emu3ChatPipeline")
            report["captions"] = score_captions(chat, _cycled(base, captions), seed=seed, batch_size=batch_size)
        if videos:
            video = _sibling(pipe, "Emu3VideoPipeline")
            report["video"] = score_videos(video, _cycled(clips, videos), seed=seed, batch_size=batch_size,
                                           **sampling)  # fmt: skip
        report["seconds_per_image"] = seconds_per_image(pipe, base[0].caption(), **sampling)
    return report


def evaluate_lora(
    pipeline: Any,
    adapter: str,
    *,
    pink: int = 90,
    others: int = 104,
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    splits: tuple[str, ...] = EVAL_SPLITS,
    **sampling: Any,
) -> dict[str, Any]:
    """The LoRA demo's report: text-to-image scores on the ``lora`` split's pink prompts without the ``adapter``
    (``pink_before``) and with it (``pink_after``), and on the ``splits`` prompts (by default ``test`` +
    ``validation``) with it active (``others_after``: what the adapter costs the colours it never saw). Same seeds
    before and after."""
    splits, world = _base_split_names(splits), make_splits()
    pink_specs = _cycled(list(world.images["lora"]), pink)
    other_specs = _cycled([spec for name in splits for spec in world.images[name]], others)
    pipe = _load(pipeline, device)
    report: dict[str, Any] = {"settings": {"adapter": str(adapter), "pink": pink, "others": others, "seed": seed,
                                           "splits": list(splits), **sampling}}  # fmt: skip
    score = dict(seed=seed, batch_size=batch_size, **sampling)
    with torch.no_grad():
        report["pink_before"] = score_text_to_image(pipe, pink_specs, **score)
        pipe.load_lora_weights(adapter, adapter_name="tiny-world-lora")
        try:
            report["pink_after"] = score_text_to_image(pipe, pink_specs, **score)
            if others:
                report["others_after"] = score_text_to_image(pipe, other_specs, **score)
        finally:
            pipe.unload_lora_weights()
    return report


__all__ = ["EVAL_SPLITS", "evaluate_lora", "evaluate_pipeline", "score_captions", "score_text_to_image", "score_videos",
           "seconds_per_image"]  # fmt: skip
