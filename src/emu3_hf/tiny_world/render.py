"""Render tiny-world specs to pixels: 64x64 images and 8-frame clips, hard-edged, exactly per ``docs/TINY_WORLD.md``.

Pixel convention (the analyzer uses the same one): pixel ``(x, y)`` (column x, row y, y downwards) covers the
unit square ``[x, x+1) x [y, y+1)`` and its centre is ``(x + 0.5, y + 0.5)``. A pixel belongs to a shape when
its centre lies inside the closed shape. With this convention a square of side S centred on an integer
``(cx, cy)`` covers exactly the columns ``cx - S/2 .. cx + S/2 - 1`` (S pixels), a circle of diameter S is
symmetric about ``(cx, cy)``, and the triangle's base row is S pixels wide. The triangle's apex row (whose
centre lies 0.5 px below the apex) is 0.5 px wide, so holds no pixel: its first painted row has 2 pixels.

Example:
    ```python
    >>> img = render_image(ImageSpec("square", "red", "small", "top left", "black"))
    >>> img.shape, img.dtype, img[10, 10].tolist(), img[9, 10].tolist()
    ((64, 64, 3), dtype('uint8'), [220, 40, 40], [20, 20, 20])
    ```
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import IMAGE_SIZE, PALETTE, ImageSpec, VideoSpec

MAX_JITTER = 2
"""Training images may move the centre and change the size by up to this many pixels."""

# Pixel-centre coordinates, shape (IMAGE_SIZE, IMAGE_SIZE): _PX[y, x] = x + 0.5, _PY[y, x] = y + 0.5.
_PY, _PX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) + 0.5


@dataclass(frozen=True)
class Jitter:
    """A training-time perturbation: centre offset ``(dx, dy)`` and size change ``ds``, all in pixels.

    Offsets are integers in ``[-2, 2]``; ``ds`` is even (-2, 0 or 2): an odd size would put a square's edges
    exactly on pixel centres, making a side-S square S+1 pixels wide under the pixel convention above.
    A video applies one jitter to every frame (the motion itself stays 4 px per frame).

    Example:
        ```python
        >>> Jitter.sample(np.random.default_rng(0))
        Jitter(dx=..., dy=..., ds=...)
        >>> render_image(ImageSpec("circle", "red", "small", "center", "black"), Jitter(dx=2, dy=-1, ds=-2)).shape
        (64, 64, 3)
        ```
    """

    dx: int = 0
    dy: int = 0
    ds: int = 0

    def __post_init__(self) -> None:
        for name in ("dx", "dy", "ds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or abs(value) > MAX_JITTER:
                raise ValueError(f"Jitter {name}={value!r} must be an integer in [-{MAX_JITTER}, {MAX_JITTER}].")
        if self.ds % 2:
            raise ValueError(f"Jitter ds={self.ds} must be even (-2, 0 or 2): odd sizes misplace square edges.")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Jitter:
        """Draw a jitter uniformly: dx, dy in {-2..2}, ds in {-2, 0, 2}."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}.")
        dx, dy = (int(v) for v in rng.integers(-MAX_JITTER, MAX_JITTER + 1, size=2))
        ds = 2 * int(rng.integers(-(MAX_JITTER // 2), MAX_JITTER // 2 + 1))
        return cls(dx, dy, ds)


NO_JITTER = Jitter()
"""The identity jitter: the evaluation rendering."""


def shape_mask(shape: str, size: float, center: tuple[float, float]) -> np.ndarray:
    """Boolean mask ``(64, 64)`` (indexed ``[y, x]``) of the pixels whose centre lies inside the shape.

    ``size`` is S (circle diameter, square side, triangle base and height); ``center`` is ``(cx, cy)``.

    Example:
        ```python
        >>> int(shape_mask("square", 16, (18, 18)).sum())
        256
        ```
    """
    cx, cy = center
    half = size / 2.0
    if shape == "circle":
        return (_PX - cx) ** 2 + (_PY - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(_PX - cx) <= half) & (np.abs(_PY - cy) <= half)
    if shape == "triangle":
        # Apex (cx, cy - S/2), base y = cy + S/2 from cx - S/2 to cx + S/2: at depth h below the apex
        # the triangle is h wide, so a pixel centre is inside when |x - cx| <= h / 2.
        depth = _PY - (cy - half)
        return (depth >= 0) & (depth <= size) & (np.abs(_PX - cx) <= depth / 2.0)
    raise ValueError(f"shape={shape!r} is not a tiny-world shape; choose circle, square or triangle.")


def _paint(mask: np.ndarray, color: str, background: str) -> np.ndarray:
    image = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    image[...] = PALETTE[background]
    image[mask] = PALETTE[color]
    return image


def _check_jitter(jitter: Jitter) -> None:
    if not isinstance(jitter, Jitter):
        raise TypeError(f"jitter must be a Jitter (e.g. Jitter.sample(rng) or NO_JITTER), got {type(jitter).__name__}.")


def image_mask(spec: ImageSpec, jitter: Jitter = NO_JITTER) -> np.ndarray:
    """``(64, 64)`` bool: the pixels :func:`render_image` paints in the shape's colour, with the same jitter."""
    _check_jitter(jitter)
    cx, cy = spec.center
    return shape_mask(spec.shape, spec.pixels + jitter.ds, (cx + jitter.dx, cy + jitter.dy))


def render_image(spec: ImageSpec, jitter: Jitter = NO_JITTER) -> np.ndarray:
    """Render an image spec to a ``(64, 64, 3)`` uint8 array; ``jitter`` perturbs it for training.

    Example:
        ```python
        >>> rng = np.random.default_rng(0)
        >>> spec = ImageSpec("triangle", "yellow", "large", "center", "gray")
        >>> clean, noisy = render_image(spec), render_image(spec, Jitter.sample(rng))
        ```
    """
    if not isinstance(spec, ImageSpec):
        raise TypeError(f"render_image expects an ImageSpec, got {type(spec).__name__}; use render_video for clips.")
    return _paint(image_mask(spec, jitter), spec.color, spec.background)


def render_video(spec: VideoSpec, jitter: Jitter = NO_JITTER) -> np.ndarray:
    """Render a video spec to an ``(8, 64, 64, 3)`` uint8 array of frames.

    Example:
        ```python
        >>> render_video(VideoSpec("square", "blue", "down", "white")).shape
        (8, 64, 64, 3)
        ```
    """
    if not isinstance(spec, VideoSpec):
        raise TypeError(f"render_video expects a VideoSpec, got {type(spec).__name__}; use render_image for stills.")
    _check_jitter(jitter)
    size = spec.pixels + jitter.ds
    return np.stack(
        [
            _paint(shape_mask(spec.shape, size, (cx + jitter.dx, cy + jitter.dy)), spec.color, spec.background)
            for cx, cy in spec.frame_centers()
        ]
    )


__all__ = ["MAX_JITTER", "NO_JITTER", "Jitter", "render_image", "render_video", "shape_mask"]
