"""The reference analyzer of ``docs/TINY_WORLD.md``: read a 64x64 image (or an 8-frame clip) back into its attributes.

No neural network: a few pixel statistics, in the same pixel convention as the renderer (pixel ``(x, y)`` has
its centre at ``(x + 0.5, y + 0.5)``, y downwards).

- background: each border pixel (the outer 1-px ring) is snapped to its nearest palette colour and the most
  common snapped colour wins. On a rendered image this is the spec's literal rule (the most common border
  colour, snapped); on a decoded image with slightly noisy pixels it still finds the background instead of
  an arbitrary exact RGB value.
- mask: pixels whose Euclidean RGB distance to the (palette) background colour is > 60.
- colour: palette colour nearest to the per-channel median RGB of the mask.
- size: ``small`` when the mask's bounding-box side (max of width, height) is < 22 px, else ``large``.
- position: the listed centre nearest to the mask centroid.
- shape: fill ratio (mask pixels / bounding-box area) >= 0.893 is a square (nominal 1.0), >= 0.643 a circle
  (nominal pi/4 = 0.785), below that a triangle (nominal 0.5) provided its centroid lies below the
  bounding-box centre (an upward triangle is heavier at its base), otherwise unknown (``None``). Thresholds
  are the midpoints between the nominal ratios.

The palette searched includes ``pink`` (the LoRA demo scores it), and all palette colours are candidates for
both the background and the shape colour, so an off-world image reads as what it looks like (its ``spec`` is
then ``None``).

Example:
    ```python
    >>> from emu3_hf.tiny_world import ImageSpec, render_image
    >>> spec = ImageSpec("circle", "green", "large", "bottom right", "white")
    >>> analyze_image(render_image(spec)).spec == spec
    True
    ```
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils.video_export import frames_to_uint8
from .world import DIRECTIONS, IMAGE_SIZE, PALETTE, POSITIONS, ImageSpec, VideoSpec

MASK_DISTANCE = 60.0
"""A pixel belongs to the shape when it is farther than this (Euclidean RGB) from the background colour."""
SMALL_MAX_SIDE = 22
"""Bounding-box side below which a shape reads as small."""
_SQUARE_MIN_FILL = (1.0 + math.pi / 4) / 2
_CIRCLE_MIN_FILL = (math.pi / 4 + 0.5) / 2

_NAMES = tuple(PALETTE)
_COLORS = np.array([PALETTE[n] for n in _NAMES], dtype=np.float64)  # (10, 3)
_CENTER_NAMES = tuple(POSITIONS)
_CENTERS = np.array([POSITIONS[n] for n in _CENTER_NAMES], dtype=np.float64)  # (5, 2) as (cx, cy)
_BORDER = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
_BORDER[0, :] = _BORDER[-1, :] = _BORDER[:, 0] = _BORDER[:, -1] = True

IMAGE_ATTRIBUTES = ("shape", "color", "background", "size", "position")
VIDEO_ATTRIBUTES = ("shape", "color", "background", "direction")


@dataclass(frozen=True)
class ImageAnalysis:
    """What the analyzer read from one image. Attributes are palette/world names, ``None`` when no shape is found.

    ``bbox`` is ``(x0, y0, x1, y1)`` with inclusive pixel indices; ``centroid`` is ``(x, y)`` in pixel-centre
    coordinates (a square painted over columns 10..25 has centroid x 18.0); ``fill_ratio`` is mask pixels over
    bounding-box area.
    """

    background: str
    color: str | None
    shape: str | None
    size: str | None
    position: str | None
    pixels: int
    bbox: tuple[int, int, int, int] | None
    centroid: tuple[float, float] | None
    fill_ratio: float

    @property
    def spec(self) -> ImageSpec | None:
        """The :class:`ImageSpec` read, or ``None`` when some attribute is missing or outside the world."""
        try:
            return ImageSpec(self.shape, self.color, self.size, self.position, self.background)
        except ValueError:
            return None


@dataclass(frozen=True)
class VideoAnalysis:
    """Per-frame analyses plus the motion direction; clip attributes are the majority over frames with a shape."""

    frames: tuple[ImageAnalysis, ...]
    direction: str | None

    def _majority(self, attribute: str) -> str | None:
        votes = Counter(getattr(f, attribute) for f in self.frames if f.pixels)
        return votes.most_common(1)[0][0] if votes else None

    @property
    def shape(self) -> str | None:
        return self._majority("shape")

    @property
    def color(self) -> str | None:
        return self._majority("color")

    @property
    def background(self) -> str:
        return Counter(f.background for f in self.frames).most_common(1)[0][0]

    @property
    def spec(self) -> VideoSpec | None:
        """The :class:`VideoSpec` read, or ``None`` when some attribute is missing or outside the world."""
        try:
            return VideoSpec(self.shape, self.color, self.direction, self.background)
        except ValueError:
            return None


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """Index into the palette of the colour nearest to each row of ``rgb`` (N, 3)."""
    return np.argmin(((rgb[:, None, :] - _COLORS[None, :, :]) ** 2).sum(-1), axis=1)


def _as_image(image: Any) -> np.ndarray:
    # frames_to_uint8 accepts PIL images, uint8 arrays, float arrays/tensors in [0, 1], HWC or CHW.
    array = frames_to_uint8([image])[0]
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"The tiny-world analyzer reads {IMAGE_SIZE}x{IMAGE_SIZE} RGB images, got shape {array.shape}; "
            f"resize the image to {IMAGE_SIZE}x{IMAGE_SIZE} first."
        )
    return array


def _analyze_array(image: np.ndarray) -> ImageAnalysis:
    pixels = image.astype(np.float64)  # (64, 64, 3)
    border_votes = np.bincount(_nearest_colour(pixels[_BORDER]), minlength=len(_NAMES))
    background = _NAMES[int(np.argmax(border_votes))]
    distance = np.sqrt(((pixels - np.array(PALETTE[background], dtype=np.float64)) ** 2).sum(-1))
    mask = distance > MASK_DISTANCE  # (64, 64), indexed [y, x]
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return ImageAnalysis(background, None, None, None, None, 0, None, None, 0.0)

    color = _NAMES[int(_nearest_colour(np.median(pixels[mask], axis=0)[None])[0])]
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    width, height = x1 - x0 + 1, y1 - y0 + 1
    size = "small" if max(width, height) < SMALL_MAX_SIDE else "large"
    centroid = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5)
    position = _CENTER_NAMES[int(np.argmin(((_CENTERS - np.array(centroid)) ** 2).sum(-1)))]

    fill = xs.size / (width * height)
    if fill >= _SQUARE_MIN_FILL:
        shape = "square"
    elif fill >= _CIRCLE_MIN_FILL:
        shape = "circle"
    elif centroid[1] > (y0 + y1 + 1) / 2:  # bbox centre in pixel-centre coordinates: (y0+0.5 + y1+0.5) / 2
        shape = "triangle"
    else:
        shape = None
    return ImageAnalysis(background, color, shape, size, position, int(xs.size), (x0, y0, x1, y1), centroid, fill)


def analyze_image(image: Any) -> ImageAnalysis:
    """Analyze one 64x64 image (PIL image, uint8 ``(64, 64, 3)`` array, or float array/tensor in [0, 1]).

    Example:
        ```python
        >>> result = analyze_image(render_image(ImageSpec("triangle", "white", "small", "center", "gray")))
        >>> result.shape, result.color, result.size, result.position, result.background
        ('triangle', 'white', 'small', 'center', 'gray')
        ```
    """
    return _analyze_array(_as_image(image))


def _direction(first: ImageAnalysis, last: ImageAnalysis) -> str | None:
    if first.centroid is None or last.centroid is None:
        return None
    dx, dy = last.centroid[0] - first.centroid[0], last.centroid[1] - first.centroid[1]
    if abs(dx) == abs(dy):  # no motion, or no dominant axis
        return None
    step = (int(np.sign(dx)), 0) if abs(dx) > abs(dy) else (0, int(np.sign(dy)))
    return next(name for name, unit in DIRECTIONS.items() if unit == step)


def analyze_video(frames: Any) -> VideoAnalysis:
    """Analyze a clip (list of PIL images, ``(T, 64, 64, 3)`` uint8 array, or frames as ``frames_to_uint8`` takes).

    The direction is the sign of the centroid shift from the first to the last frame along the axis with the
    larger shift (y downwards, so a positive vertical shift reads ``down``).

    Example:
        ```python
        >>> analyze_video(render_video(VideoSpec("circle", "blue", "left", "black"))).direction
        'left'
        ```
    """
    array = frames_to_uint8(frames)
    if array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3) or array.shape[0] < 2:
        raise ValueError(
            f"The tiny-world analyzer reads clips of at least 2 frames of {IMAGE_SIZE}x{IMAGE_SIZE} RGB, got frames "
            f"of shape {array.shape}; resize the frames to {IMAGE_SIZE}x{IMAGE_SIZE}."
        )
    analyses = tuple(_analyze_array(frame) for frame in array)
    return VideoAnalysis(analyses, _direction(analyses[0], analyses[-1]))


def score_image(image: Any, spec: ImageSpec) -> dict[str, bool]:
    """Per-attribute agreement of an image with ``spec`` (shape, color, background, size, position) and ``all``.

    Example:
        ```python
        >>> spec = ImageSpec("square", "red", "large", "center", "white")
        >>> score_image(render_image(spec), spec)["all"]
        True
        ```
    """
    if not isinstance(spec, ImageSpec):
        raise TypeError(f"score_image scores against an ImageSpec, got {type(spec).__name__}.")
    analysis = analyze_image(image)
    scores = {attribute: getattr(analysis, attribute) == getattr(spec, attribute) for attribute in IMAGE_ATTRIBUTES}
    scores["all"] = all(scores.values())
    return scores


def score_video(frames: Any, spec: VideoSpec) -> dict[str, bool]:
    """Per-attribute agreement of a clip with ``spec`` (shape, color, background, direction) and ``all``."""
    if not isinstance(spec, VideoSpec):
        raise TypeError(f"score_video scores against a VideoSpec, got {type(spec).__name__}.")
    analysis = analyze_video(frames)
    scores = {attribute: getattr(analysis, attribute) == getattr(spec, attribute) for attribute in VIDEO_ATTRIBUTES}
    scores["all"] = all(scores.values())
    return scores


def aggregate_scores(scores: Iterable[Mapping[str, bool]]) -> dict[str, float]:
    """Fraction of ``True`` per key over many score dicts, plus ``count`` (the number of dicts).

    Example:
        ```python
        >>> aggregate_scores([{"shape": True, "all": False}, {"shape": True, "all": True}])
        {'shape': 1.0, 'all': 0.5, 'count': 2}
        ```
    """
    rows = list(scores)
    if not rows:
        raise ValueError("aggregate_scores needs at least one score dict, got none.")
    keys = list(rows[0])
    for row in rows:
        if list(row) != keys:
            raise ValueError(f"Every score dict must have the keys {keys}, got {list(row)}.")
    result: dict[str, float] = {key: sum(bool(row[key]) for row in rows) / len(rows) for key in keys}
    result["count"] = len(rows)
    return result


__all__ = [
    "IMAGE_ATTRIBUTES",
    "MASK_DISTANCE",
    "SMALL_MAX_SIDE",
    "VIDEO_ATTRIBUTES",
    "ImageAnalysis",
    "VideoAnalysis",
    "aggregate_scores",
    "analyze_image",
    "analyze_video",
    "score_image",
    "score_video",
]
