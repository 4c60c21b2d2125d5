"""Score a pipeline on the tiny world the way ``docs/TINY_WORLD.md`` scores the embedded model
(``emu3 tiny-world eval``).

Every number is read off the outputs by the reference analyzer (:mod:`.analyze`), never by a network:

- ``text_to_image``: images generated from the captions of the ``splits`` specs (by default ``test`` and
  ``validation``: 104 distinct captions), each attribute and all five right;
- ``heldout``: the same on the 80 held-out (shape, colour) pairs (never in training);
- ``captions``: the chat pipeline's greedy answer to :data:`~emu3_hf.tiny_world.recipe.CAPTION_QUESTION` about a clean
  and a jittered render of each of those specs, exactly the canonical caption (``exact``; ``clean`` and ``jittered``
  apart, each over one picture per spec);
- ``video``: clips generated from the 36 video captions of those splits: shape, colour, background, direction;
- ``seconds_per_image``: one prompt at batch 1, the median of three, after a warm-up.

Every ``count`` is the number of distinct outputs scored. Each prompt is used once per seed: with greedy decoding
(the embedded model's recommendation) a seed changes nothing, so ``seeds`` must stay 1 and n = the number of prompts;
with sampling (``do_sample=True``) ``seeds=S`` draws each prompt S times and n = prompts x S. A part's count
argument (``images``, ``heldout``, ...) takes the first that many prompts, ``None`` all of them.

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


def _take(specs: list, count: int | None, name: str) -> list:
    """The first ``count`` of ``specs`` (all when ``None``); more than there are is refused, since a repeated prompt
    repeats its greedy output and would count one output twice."""
    if count is None:
        return list(specs)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= len(specs):
        raise ValueError(f"{name} must be an int from 0 to {len(specs)} (the distinct prompts there are) or None for "
                         f"all of them, got {count!r}; for several outputs per prompt, sample (do_sample=True) "
                         "with seeds > 1.")  # fmt: skip
    return list(specs[:count])


def _check_seeds(seeds: int) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1 (draws per prompt), got {seeds!r}.")


def _draws(pipe: Any, seeds: int, sampling: dict[str, Any]) -> int:
    """Outputs per prompt: ``seeds`` when the pipeline samples, and a refusal of ``seeds > 1`` when it decodes
    greedily (every seed would give the same output)."""
    if seeds == 1:
        return 1
    do_sample = sampling.get("do_sample")
    if do_sample is None:
        do_sample = pipe.recommended_sampling()["do_sample"]
    if not do_sample:
        raise ValueError(f"seeds={seeds} with greedy decoding: every seed gives the same output, so the report would "
                         "count one output several times; pass seeds=1, or do_sample=True to sample.")  # fmt: skip
    return seeds


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
    pass over the specs uses clean renders (what ``docs/TINY_WORLD.md`` evaluates: "no noise in the evaluation set"),
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
    images: int | None = None,
    heldout: int | None = None,
    captions: int | None = None,
    videos: int | None = None,
    seeds: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    splits: tuple[str, ...] = EVAL_SPLITS,
    **sampling: Any,
) -> dict[str, Any]:
    """The tiny-world report of ``pipeline`` (a folder, repo id or ``Emu3Pipeline``). ``images``, ``heldout``,
    ``captions`` (specs, each captioned clean and jittered), ``videos``: how many distinct prompts of that part to
    score, ``None`` all, 0 skips the part. ``seeds``: draws per image/video prompt, only when sampling (module
    docstring). ``splits``: the base splits whose captions the text-to-image, caption and video parts read.
    ``sampling`` goes to the image and video pipelines (``guidance_scale``, ``top_k``, ``do_sample``, ...)."""
    splits, world = _base_split_names(splits), make_splits()
    _check_seeds(seeds)
    base = [spec for name in splits for spec in world.images[name]]
    prompts = {"text_to_image": _take(base, images, "images"),
               "heldout": _take(list(world.images["heldout"]), heldout, "heldout"),
               "captions": _take(base, captions, "captions"),
               "video": _take([spec for name in splits for spec in world.videos[name]], videos, "videos")}  # fmt: skip
    pipe = _load(pipeline, device)
    draws = _draws(pipe, seeds, sampling)
    report: dict[str, Any] = {"settings": {"prompts": {part: len(specs) for part, specs in prompts.items()},
                                           "seeds": draws, "seed": seed, "splits": list(splits),
                                           **sampling}}  # fmt: skip
    with torch.no_grad():
        if prompts["text_to_image"]:
            report["text_to_image"] = score_text_to_image(pipe, prompts["text_to_image"] * draws, seed=seed,
                                                          batch_size=batch_size, **sampling)  # fmt: skip
        if prompts["heldout"]:
            report["heldout"] = score_text_to_image(pipe, prompts["heldout"] * draws, seed=seed + 10**6,
                                                    batch_size=batch_size, **sampling)  # fmt: skip
        if prompts["captions"]:  # greedy answers: one clean and one jittered picture per spec, all distinct
            chat = _sibling(pipe, "Emu3ChatPipeline")
            report["captions"] = score_captions(chat, prompts["captions"] * 2, seed=seed, batch_size=batch_size)
        if prompts["video"]:
            video = _sibling(pipe, "Emu3VideoPipeline")
            report["video"] = score_videos(video, prompts["video"] * draws, seed=seed, batch_size=batch_size,
                                           **sampling)  # fmt: skip
        report["seconds_per_image"] = seconds_per_image(pipe, base[0].caption(), **sampling)
    return report


def evaluate_lora(
    pipeline: Any,
    adapter: str,
    *,
    pink: int | None = None,
    others: int | None = None,
    seeds: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    device: str | None = None,
    splits: tuple[str, ...] = EVAL_SPLITS,
    **sampling: Any,
) -> dict[str, Any]:
    """The LoRA demo's report: text-to-image scores on the ``lora`` split's pink prompts without the ``adapter``
    (``pink_before``) and with it (``pink_after``), and on the ``splits`` prompts (by default ``test`` +
    ``validation``) with it active (``others_after``: what the adapter costs the colours it never saw). Same seeds
    before and after. ``pink`` / ``others``: how many distinct prompts (``None`` all of them: 90 pink, 104 others),
    ``seeds`` as in :func:`evaluate_pipeline`."""
    splits, world = _base_split_names(splits), make_splits()
    _check_seeds(seeds)
    pink_specs = _take(list(world.images["lora"]), pink, "pink")
    other_specs = _take([spec for name in splits for spec in world.images[name]], others, "others")
    if not pink_specs:
        raise ValueError(f"pink=0 leaves the LoRA report nothing to score; pass at least 1 (or None for all "
                         f"{len(world.images['lora'])}).")  # fmt: skip
    pipe = _load(pipeline, device)
    draws = _draws(pipe, seeds, sampling)
    prompts = {"pink": len(pink_specs), "others": len(other_specs)}
    report: dict[str, Any] = {"settings": {"adapter": str(adapter), "prompts": prompts, "seeds": draws, "seed": seed,
                                           "splits": list(splits), **sampling}}  # fmt: skip
    pink_specs, other_specs = pink_specs * draws, other_specs * draws
    score = dict(seed=seed, batch_size=batch_size, **sampling)
    with torch.no_grad():
        report["pink_before"] = score_text_to_image(pipe, pink_specs, **score)
        pipe.load_lora_weights(adapter, adapter_name="tiny-world-lora")
        try:
            report["pink_after"] = score_text_to_image(pipe, pink_specs, **score)
            if other_specs:
                report["others_after"] = score_text_to_image(pipe, other_specs, **score)
        finally:
            pipe.unload_lora_weights()
    return report


__all__ = ["EVAL_SPLITS", "evaluate_lora", "evaluate_pipeline", "score_captions", "score_text_to_image", "score_videos",
           "seconds_per_image"]  # fmt: skip
