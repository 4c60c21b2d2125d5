"""The embedded model's VQ stages 1, 1b and 1c (``docs/TINY_WORLD.md``; the whole recipe: :mod:`.recipe`).

Stage 1 (:func:`train_tiny_vq`), stage 1b (:func:`compact_codebook`) and stage 1c (:func:`tune_tiny_vq_decoder`), as
:mod:`.recipe`'s docstring tells them. Stage 1d (:mod:`.canonical`) builds on stage 1c, and the LM stages
(:mod:`.recipe`) on both: each stage module imports only earlier ones.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..training.checkpoint import resume_point
from .splits import LM_SPLITS, iter_image_examples, iter_video_examples, specs_of

# Measured here (the validation split read back by the analyzer, see BENCHMARKS.md): the spec's ~2000 steps of
# images + clips at lr 1e-3 leave every shape one average colour; images alone at lr 5e-3 read back 94% by 10k steps.
# 600 further steps on images + clips at lr 1e-3 cost the images (94% -> 67%) and did not fix clips, so the shipped
# VQ skips phase 2 (clip_steps=0): clips keep their motion (direction 100%) but lose most colour and shape.
VQ_IMAGE_STEPS, VQ_CLIP_STEPS = 10_000, 0
VQ_IMAGE_LR, VQ_CLIP_LR = 5e-3, 1e-3
# compact_codebook (an even cover of the codebook): 128 codes read the validation images back 92% (1024: 94%); a
# 2-pixel jitter keeps 71% of an image's codes (1024: 33%, k-means to 128: 53%), and background cells keep their code
# when the shape moves elsewhere 55% of the time (vq_locality_report; 1024: 7%, k-means to 128: 22%).
VQ_CODES = 128
# train_vq's locality term (locality_weight, off by default) bought more local codes (cover-128 locality 0.65 at step
# 3000 with weight 3) at the price of the reconstruction (colour 0.04 at step 3000 against 0.87 at step 2500 without
# it), so the recipe leaves it off (pass locality_weight=... through train_tiny_vq's overrides to try it).
VQ_IMAGE_BATCH, VQ_VIDEO_BATCH = 8, 4
# Stage 1c, the decoder on the compacted codes (tune_tiny_vq_decoder; BENCHMARKS.md): 1500 steps of 16 images + 2 clips
# read the validation images back 96% (92% before) and give the clips their background (61% -> 100%); images alone
# cost the clips their background, 1000 steps some of their motion.
VQ_DECODER_STEPS, VQ_DECODER_LR, VQ_DECODER_IMAGES, VQ_DECODER_CLIPS = 1500, 1e-3, 16, 2


def vq_training_specs() -> tuple[tuple, tuple]:
    """(image specs, video specs) the VQ trains on: the ``train`` and ``lora`` splits."""
    images, videos = specs_of(("train", "lora"))
    return tuple(images), tuple(videos)


def train_tiny_vq(
    output_dir: str | os.PathLike,
    *,
    image_steps: int = VQ_IMAGE_STEPS,
    clip_steps: int = VQ_CLIP_STEPS,
    image_batch_size: int = VQ_IMAGE_BATCH,
    video_batch_size: int = VQ_VIDEO_BATCH,
    save_steps: int = 500,
    resume: bool = True,
    seed: int = 0,
    device: str | None = None,
    **overrides: Any,
) -> Path:
    """Stage 1: train the tiny world's VQ; returns the trained VQ folder, ``output_dir``.

    Phase 1 (``output_dir/images``): a fresh VQ on images only, ``image_steps`` steps at lr :data:`VQ_IMAGE_LR`
    (images are a quarter of a clip's cost, and colour is learnt late: see the module docstring). Phase 2
    (``output_dir``), when ``clip_steps`` > 0: phase 1's VQ on images and clips, ``clip_steps`` steps at lr
    :data:`VQ_CLIP_LR` (with the default ``clip_steps=0`` phase 1 writes ``output_dir`` itself). Each phase keeps its
    checkpoints and, when ``resume``, continues its newest one; a finished phase 1 is not run again. ``overrides``
    go to both phases' :class:`~emu3_hf.training.VQTrainConfig`."""
    from ..training import VQTrainConfig, tiny_world_vq_config, train_vq

    if image_steps < 1 or clip_steps < 0:
        raise ValueError(f"image_steps must be >= 1 and clip_steps >= 0, got {image_steps} and {clip_steps}.")
    output_dir = Path(output_dir)
    images, videos = vq_training_specs()
    streams = dict(seed=seed, jitter=True, epochs=None)

    def phase(folder: Path, model: Any, steps: int, learning_rate: float, warmup: int, clips: int) -> Path:
        config = VQTrainConfig(
            model=model, output_dir=folder, max_steps=steps, image_batch_size=image_batch_size,
            video_batch_size=clips, save_steps=save_steps, learning_rate=learning_rate,
            warmup_steps=min(warmup, steps), resume_from_checkpoint=resume_point(folder) if resume else None,
            seed=seed, device=device, **overrides,
        )  # fmt: skip
        sources = dict(images=iter_image_examples(images, **streams) if image_batch_size else None,
                       videos=iter_video_examples(videos, **streams) if clips else None)  # fmt: skip
        return Path(train_vq(config, **sources).output_dir)

    first = output_dir / "images" if clip_steps else output_dir
    if not (first / "config.json").is_file() or not resume:
        phase(first, tiny_world_vq_config(), image_steps, VQ_IMAGE_LR, 100, 0)
    if clip_steps:
        phase(output_dir, str(first), clip_steps, VQ_CLIP_LR, 20, video_batch_size)
    return output_dir


def _leaders(distances: np.ndarray, radius: float) -> list[int]:
    """Entries in id order; one farther than ``radius`` from every leader so far becomes a leader."""
    leaders: list[int] = []
    for i in range(len(distances)):
        if not leaders or distances[i, leaders].min() > radius:
            leaders.append(i)
    return leaders


def compact_codebook(vq: Any, output_dir: str | os.PathLike, num_codes: int = VQ_CODES) -> Path:
    """Stage 1b: merge the trained codebook into at most ``num_codes`` evenly spaced vectors and save the VQ to
    ``output_dir``.

    Dead-code restarts seed entries where latent vectors are common, so the background (most of every image) ends up
    with many near-equal codes, and the tiny changes a shape elsewhere makes to a background latent pick another one
    of them. The entries are covered greedily instead: in id order, an entry farther than a radius from every leader
    so far becomes a leader, with the smallest radius (bisected) that leaves at most ``num_codes`` leaders; every
    entry then becomes its nearest leader. Leaders are more than the radius apart and every entry lies within it of
    its leader, so no content region holds more codes than another. Equal entries quantise to the lowest id
    (``argmin`` keeps the first): the VQ writes only the leaders' ids. The config (all ids) is unchanged; a module
    ``vq`` is copied, not changed."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel
    from ..utils.atomic import staged_folder

    vq = Emu3VisionVQModel.from_pretrained(vq) if not isinstance(vq, torch.nn.Module) else copy.deepcopy(vq)
    codebook = vq.quantize.embedding.weight.data
    if not 1 <= num_codes <= codebook.shape[0]:
        raise ValueError(f"num_codes must be in [1, {codebook.shape[0]}], got {num_codes}.")
    distances = torch.cdist(codebook.double(), codebook.double()).numpy()
    low, high = 0.0, float(distances.max())  # _leaders(high) is one leader
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (low, middle) if len(_leaders(distances, middle)) <= num_codes else (middle, high)
    leaders = codebook[_leaders(distances, high)].clone()
    codebook.copy_(leaders[torch.cdist(codebook, leaders).argmin(1)])
    with staged_folder(output_dir) as staging:
        vq.save_pretrained(str(staging))
    return Path(output_dir)


def _clean_and_jittered(stream: Any, specs: list, seed: int):
    """Alternately a clean and a jittered render of ``specs``, forever (``stream``: iter_image/video_examples)."""
    clean, jittered = stream(specs, seed=seed, jitter=False, epochs=None), stream(specs, seed=seed + 1, epochs=None)
    for pair in zip(clean, jittered):
        yield from pair


def tune_tiny_vq_decoder(
    vq: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    steps: int = VQ_DECODER_STEPS,
    learning_rate: float = VQ_DECODER_LR,
    image_batch_size: int = VQ_DECODER_IMAGES,
    video_batch_size: int = VQ_DECODER_CLIPS,
    seed: int = 0,
    device: str | None = None,
    objective: Any = None,
    **overrides: Any,
) -> Path:
    """Stage 1c: train the decoder side of the VQ folder ``vq`` (stage 1b's) further into ``output_dir``; returns it.

    Clean and jittered renders (alternately) of the images and clips of :data:`LM_SPLITS` and ``lora`` (pink), the
    pictures the LM will ask it to draw; never ``heldout``. ``VQTrainConfig(decoder_only=True)``: the encoder,
    ``quant_conv`` and codebook stay bit-exact, so the codes of every input are those of ``vq``. Resumes a checkpoint
    in ``output_dir``. ``overrides`` go to :class:`~emu3_hf.training.VQTrainConfig`; ``objective`` (a
    :class:`~emu3_hf.training.VQObjective`) to :func:`~emu3_hf.training.train_vq` (stage 1d passes its canonical
    grids, :func:`~emu3_hf.tiny_world.canonical.tune_tiny_vq_canonical`)."""
    from ..training import VQTrainConfig, train_vq

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    output_dir = Path(output_dir)
    images, clips = specs_of(LM_SPLITS + ("lora",))
    settings = dict(
        model=str(vq), output_dir=output_dir, max_steps=steps, image_batch_size=image_batch_size,
        video_batch_size=video_batch_size, learning_rate=learning_rate, warmup_steps=min(50, steps),
        decoder_only=True, save_steps=250, resume_from_checkpoint=resume_point(output_dir), seed=seed, device=device,
    )  # fmt: skip
    settings.update(overrides)
    sources = dict(images=_clean_and_jittered(iter_image_examples, images, seed) if image_batch_size else None,
                   videos=_clean_and_jittered(iter_video_examples, clips, seed) if video_batch_size else None)
    return Path(train_vq(VQTrainConfig(**settings), **sources, objective=objective).output_dir)


__all__ = [
    "VQ_CLIP_LR",
    "VQ_CLIP_STEPS",
    "VQ_CODES",
    "VQ_DECODER_CLIPS",
    "VQ_DECODER_IMAGES",
    "VQ_DECODER_LR",
    "VQ_DECODER_STEPS",
    "VQ_IMAGE_BATCH",
    "VQ_IMAGE_LR",
    "VQ_IMAGE_STEPS",
    "VQ_VIDEO_BATCH",
    "compact_codebook",
    "train_tiny_vq",
    "tune_tiny_vq_decoder",
    "vq_training_specs",
]
