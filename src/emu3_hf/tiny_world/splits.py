"""Deterministic splits of the tiny world and the example streams training and evaluation read.

Five splits, for images and for videos separately, disjoint and together covering every spec (pink included):

- ``train`` / ``validation`` / ``test``: the base world minus the held-out pairs, split per stratum so every
  stratum reaches every split: images by (shape, color, background) (10 specs each: 8/1/1 with the default
  fractions), videos by (shape, color) (12 or 8 specs each: 10/1/1 or 6/1/1).
- ``heldout``: every spec whose (shape, color) is in :data:`~emu3_hf.tiny_world.world.HELD_OUT`.
- ``lora``: every pink spec (the LoRA concept; pink never appears in the base splits).

Base training reads ``train`` only (``validation`` to monitor it); ``heldout`` and ``lora`` are never shown to
the base model.

Example:
    ```python
    >>> splits = make_splits(seed=0)
    >>> splits.sizes()["images"]
    {'train': 416, 'validation': 52, 'test': 52, 'heldout': 80, 'lora': 90}
    >>> image, caption = next(iter_image_examples("train", seed=0))
    >>> image.size, caption.startswith("a ")
    ((64, 64), True)
    ```
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

import numpy as np
import PIL.Image

from .render import NO_JITTER, Jitter, render_image, render_video
from .world import LORA_COLOR, ImageSpec, VideoSpec, all_image_specs, all_video_specs

SPLIT_NAMES = ("train", "validation", "test", "heldout", "lora")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
"""Share of each base stratum that goes to train, validation and test."""
DEFAULT_SPLIT_SEED = 0
"""The seed of the splits the package trains and evaluates on."""

Spec = TypeVar("Spec", ImageSpec, VideoSpec)


@dataclass(frozen=True, eq=False)
class WorldSplits:
    """Split name -> specs (in enumeration order) for images and videos; read-only mappings."""

    seed: int
    fractions: tuple[float, float, float]
    images: Mapping[str, tuple[ImageSpec, ...]]
    videos: Mapping[str, tuple[VideoSpec, ...]]

    def sizes(self) -> dict[str, dict[str, int]]:
        """Number of specs per split: ``{"images": {name: n, ...}, "videos": {...}}``."""
        return {
            "images": {name: len(self.images[name]) for name in SPLIT_NAMES},
            "videos": {name: len(self.videos[name]) for name in SPLIT_NAMES},
        }

    def split_of(self, spec: ImageSpec | VideoSpec) -> str:
        """The name of the split holding ``spec``.

        Example:
            ```python
            >>> make_splits().split_of(ImageSpec("circle", "orange", "small", "center", "black"))
            'heldout'
            ```
        """
        if not isinstance(spec, (ImageSpec, VideoSpec)):
            raise TypeError(f"split_of takes an ImageSpec or a VideoSpec, got {type(spec).__name__}.")
        table = self.images if isinstance(spec, ImageSpec) else self.videos
        return next(name for name in SPLIT_NAMES if spec in table[name])


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer.")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1.0) > 1e-9:
        raise ValueError(
            f"fractions={tuple(fractions)!r} must be three shares (train, validation, test), each >= 0, "
            "train > 0, summing to 1, e.g. (0.8, 0.1, 0.1)."
        )
    return values  # type: ignore[return-value]


def _stratified(
    specs: Sequence[Spec], key: Callable[[Spec], tuple], fractions: tuple[float, float, float], rng: np.random.Generator
) -> dict[Spec, str]:
    """Assign each base spec to train/validation/test, stratum by stratum (strata in enumeration order)."""
    strata: dict[tuple, list[Spec]] = {}
    for spec in specs:
        strata.setdefault(key(spec), []).append(spec)
    assignment: dict[Spec, str] = {}
    for members in strata.values():
        # Every split with a non-zero share gets at least one spec of every stratum.
        n_val, n_test = (max(1, round(f * len(members))) if f > 0 else 0 for f in fractions[1:])
        if n_val + n_test >= len(members):
            raise ValueError(
                f"fractions={fractions!r} leave no training spec in a stratum of {len(members)} specs; "
                "give train a larger share."
            )
        order = rng.permutation(len(members))
        for rank, index in enumerate(order):
            assignment[members[index]] = "validation" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return assignment


def _split_table(specs: Sequence[Spec], base: dict[Spec, str]) -> Mapping[str, tuple[Spec, ...]]:
    def name(spec: Spec) -> str:
        if spec.color == LORA_COLOR:
            return "lora"
        return "heldout" if spec.held_out else base[spec]

    return MappingProxyType({split: tuple(s for s in specs if name(s) == split) for split in SPLIT_NAMES})


def make_splits(seed: int = DEFAULT_SPLIT_SEED, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> WorldSplits:
    """The world's splits for ``seed`` (deterministic: the same seed gives the same splits on every machine).

    Example:
        ```python
        >>> splits = make_splits(seed=0)
        >>> len(splits.videos["train"]), len(splits.videos["heldout"]), len(splits.videos["lora"])
        (172, 32, 36)
        ```
    """
    _check_seed(seed)
    return _make_splits(int(seed), _check_fractions(fractions))


@functools.lru_cache(maxsize=8)
def _make_splits(seed: int, fractions: tuple[float, float, float]) -> WorldSplits:
    rng = np.random.default_rng(seed)
    images = all_image_specs(include_pink=True)
    videos = all_video_specs(include_pink=True)
    base_images = [s for s in images if not s.held_out and s.color != LORA_COLOR]
    base_videos = [s for s in videos if not s.held_out and s.color != LORA_COLOR]
    image_base = _stratified(base_images, lambda s: (s.shape, s.color, s.background), fractions, rng)
    video_base = _stratified(base_videos, lambda s: (s.shape, s.color), fractions, rng)
    return WorldSplits(seed, fractions, _split_table(images, image_base), _split_table(videos, video_base))


def _resolve(split: str | Sequence[Spec], table: str) -> tuple[Spec, ...]:
    if isinstance(split, str):
        if split not in SPLIT_NAMES:
            raise ValueError(f"split={split!r} is not a tiny-world split; choose one of {', '.join(SPLIT_NAMES)}.")
        return getattr(make_splits(), table)[split]
    if not isinstance(split, Sequence):
        raise TypeError(f"split must be a split name or a sequence of specs, got {type(split).__name__}.")
    specs = tuple(split)
    kind = ImageSpec if table == "images" else VideoSpec
    if not specs or not all(isinstance(s, kind) for s in specs):
        raise ValueError(f"split must be a split name or a non-empty sequence of {kind.__name__}, got {split!r}.")
    return specs


def _check_epochs(epochs: int | None) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs={epochs!r} must be a positive integer, or None to repeat forever.")


def _stream(specs: tuple[Spec, ...], seed: int, jitter: bool, epochs: int | None, shuffle: bool):
    """Yield (spec, jitter) for every spec once per epoch; one Generator drives order and jitter."""
    rng = np.random.default_rng(seed)
    for _ in itertools.count() if epochs is None else range(epochs):
        order = rng.permutation(len(specs)) if shuffle else range(len(specs))
        for index in order:
            yield specs[index], (Jitter.sample(rng) if jitter else NO_JITTER)


def iter_image_examples(
    split: str | Sequence[ImageSpec],
    *,
    seed: int = 0,
    jitter: bool = True,
    epochs: int | None = 1,
    shuffle: bool = True,
) -> Iterator[tuple[PIL.Image.Image, str]]:
    """Yield ``(image, caption)`` pairs: every spec of ``split`` once per epoch, as 64x64 RGB PIL images.

    ``split`` is a split name of :func:`make_splits` at :data:`DEFAULT_SPLIT_SEED` or an explicit sequence of
    specs. ``seed`` drives the order (when ``shuffle``) and the training jitter (when ``jitter``), so one seed
    always gives the same stream; ``epochs=None`` repeats forever (a fresh order and jitter each epoch).
    Evaluation reads ``jitter=False, shuffle=False``: the clean images in enumeration order.

    Example:
        ```python
        >>> pairs = list(iter_image_examples("heldout", seed=3, jitter=False, shuffle=False))
        >>> len(pairs), pairs[0][1]
        (80, 'a small orange circle in the top left corner on a white background')
        ```
    """
    specs = _resolve(split, "images")  # validate now, not at the first next()
    _check_seed(seed)
    _check_epochs(epochs)
    return (
        (PIL.Image.fromarray(render_image(spec, jit)), spec.caption())
        for spec, jit in _stream(specs, seed, jitter, epochs, shuffle)
    )


def iter_video_examples(
    split: str | Sequence[VideoSpec],
    *,
    seed: int = 0,
    jitter: bool = True,
    epochs: int | None = 1,
    shuffle: bool = True,
) -> Iterator[tuple[list[PIL.Image.Image], str]]:
    """Yield ``(frames, caption)`` pairs: 8 PIL frames per clip; arguments as :func:`iter_image_examples`.

    Example:
        ```python
        >>> frames, caption = next(iter_video_examples("train", seed=0))
        >>> len(frames), frames[0].size
        (8, (64, 64))
        ```
    """
    specs = _resolve(split, "videos")
    _check_seed(seed)
    _check_epochs(epochs)
    return (
        ([PIL.Image.fromarray(frame) for frame in render_video(spec, jit)], spec.caption())
        for spec, jit in _stream(specs, seed, jitter, epochs, shuffle)
    )


# What the LM trains on (the recipe's stages 1c, 1d and 2): every base split (train + validation + test; the held-out pairs and pink never train), 12
# epochs (run F in BENCHMARKS.md, the shipped LM before stage 2c). Trained on `train` only (run D) it drew its training
# captions right (all five 0.85) but not the unseen ones (0.14): it does not compose, so the shipped LM learns every
# caption the world allows it, and the held-out pairs are its unseen test. With every split, 6 epochs were too few
# (0.41, run E).
LM_SPLITS = ("train", "validation", "test")


def specs_of(names: tuple[str, ...]) -> tuple[list, list]:
    """(image specs, video specs) of the named splits, in order (e.g. ``specs_of(LM_SPLITS + ("lora",))``)."""
    splits = make_splits()
    return ([spec for name in names for spec in splits.images[name]],
            [spec for name in names for spec in splits.videos[name]])  # fmt: skip


__all__ = [
    "LM_SPLITS",
    "specs_of",
    "DEFAULT_FRACTIONS",
    "DEFAULT_SPLIT_SEED",
    "SPLIT_NAMES",
    "WorldSplits",
    "iter_image_examples",
    "iter_video_examples",
    "make_splits",
]
