"""The vocabulary of the tiny shapes world (``docs/TINY_WORLD.md``): palette, shapes, sizes, positions, specs, captions.

Everything here is a contract: outside evaluators score generated images against exactly these numbers.

A spec is a small frozen dataclass; its :meth:`~ImageSpec.caption` is the one canonical sentence of the
grammar and :func:`parse_caption` inverts it::

    >>> spec = ImageSpec("circle", "red", "small", "top left", "black")
    >>> spec.caption()
    'a small red circle in the top left corner on a black background'
    >>> parse_caption(spec.caption()) == spec
    True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

IMAGE_SIZE = 64
"""Images and video frames are ``IMAGE_SIZE x IMAGE_SIZE`` RGB."""
NUM_FRAMES = 8
"""Frames per video clip."""

RGB = tuple[int, int, int]

PALETTE: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 130, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    # The LoRA concept: part of the palette (the analyzer must recognise it) but never in base training.
    "pink": (250, 120, 180),
}
"""Every colour of the world, pink included (see :data:`LORA_COLOR`)."""

SHAPE_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white")
"""Colours a shape takes in base training (pink excluded)."""
BACKGROUND_COLORS: tuple[str, ...] = ("white", "black", "gray")
LORA_COLOR = "pink"
"""The colour absent from base training, learned by the LoRA demo."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 16, "large": 28}
"""Size name -> S in pixels (circle diameter, square side, triangle base and height)."""

POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (18, 18),
    "top right": (46, 18),
    "bottom left": (18, 46),
    "bottom right": (46, 46),
    "center": (32, 32),
}
"""Position name -> centre (cx, cy) in pixels, y downwards."""
POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left corner",
    "top right": "in the top right corner",
    "bottom left": "in the bottom left corner",
    "bottom right": "in the bottom right corner",
    "center": "in the center",
}

DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
"""Direction name -> unit step (dx, dy), y downwards."""
VIDEO_SIZE = "small"
VIDEO_STEP = 4
"""Pixels the shape moves per frame."""
VIDEO_TRAVEL = 14
"""The shape starts this far before the frame centre and ends this far past it: 7 steps x 4 px = 2 x 14 px."""

HELD_OUT: frozenset[tuple[str, str]] = frozenset({("triangle", "purple"), ("circle", "orange"), ("square", "white")})
"""(shape, color) pairs never shown in any training split (compositional generalisation test)."""


def _check_choice(field: str, value: object, choices) -> None:
    if value not in choices:
        raise ValueError(f"{field}={value!r} is not in the tiny world; choose one of {', '.join(choices)}.")


def _check_colours(color: str, background: str) -> None:
    _check_choice("color", color, (*SHAPE_COLORS, LORA_COLOR))
    _check_choice("background", background, BACKGROUND_COLORS)
    if color == background:
        raise ValueError(
            f"color={color!r} equals background={background!r}: a shape never has the colour of its background."
        )


@dataclass(frozen=True)
class ImageSpec:
    """One still image of the world: a single solid shape on a solid background.

    Example:
        ```python
        >>> spec = ImageSpec(shape="square", color="blue", size="large", position="center", background="gray")
        >>> spec.caption()
        'a large blue square in the center on a gray background'
        >>> spec.center, spec.pixels
        ((32, 32), 28)
        ```
    """

    shape: str
    color: str
    size: str
    position: str
    background: str

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("size", self.size, SIZES)
        _check_choice("position", self.position, POSITIONS)
        _check_colours(self.color, self.background)

    @property
    def center(self) -> tuple[int, int]:
        """The shape's nominal centre (cx, cy) in pixels."""
        return POSITIONS[self.position]

    @property
    def pixels(self) -> int:
        """The shape's nominal size S in pixels."""
        return SIZES[self.size]

    @property
    def held_out(self) -> bool:
        """True when (shape, color) is one of :data:`HELD_OUT`."""
        return (self.shape, self.color) in HELD_OUT

    def caption(self) -> str:
        """The canonical caption: ``a {size} {color} {shape} {position} on a {background} background``."""
        return (
            f"a {self.size} {self.color} {self.shape} {POSITION_PHRASES[self.position]} "
            f"on a {self.background} background"
        )


@dataclass(frozen=True)
class VideoSpec:
    """One 8-frame clip: a small shape moving :data:`VIDEO_STEP` px per frame through the frame centre.

    The shape starts :data:`VIDEO_TRAVEL` px from the centre on the side it moves away from and ends
    :data:`VIDEO_TRAVEL` px past it; the coordinate across the motion stays at the frame centre (32).

    Example:
        ```python
        >>> spec = VideoSpec(shape="circle", color="red", direction="right", background="black")
        >>> spec.caption()
        'a small red circle moving right on a black background'
        >>> [c[0] for c in spec.frame_centers()]
        [18, 22, 26, 30, 34, 38, 42, 46]
        ```
    """

    shape: str
    color: str
    direction: str
    background: str

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_colours(self.color, self.background)

    @property
    def size(self) -> str:
        """Videos always show a small shape."""
        return VIDEO_SIZE

    @property
    def pixels(self) -> int:
        return SIZES[VIDEO_SIZE]

    @property
    def held_out(self) -> bool:
        return (self.shape, self.color) in HELD_OUT

    def frame_centers(self) -> list[tuple[int, int]]:
        """Nominal centre (cx, cy) of the shape in each of the :data:`NUM_FRAMES` frames."""
        dx, dy = DIRECTIONS[self.direction]
        mid = IMAGE_SIZE // 2
        offsets = [-VIDEO_TRAVEL + VIDEO_STEP * t for t in range(NUM_FRAMES)]
        return [(mid + dx * o, mid + dy * o) for o in offsets]

    def caption(self) -> str:
        """The canonical caption: ``a small {color} {shape} moving {direction} on a {background} background``."""
        return f"a {VIDEO_SIZE} {self.color} {self.shape} moving {self.direction} on a {self.background} background"


def all_image_specs(include_pink: bool = False) -> tuple[ImageSpec, ...]:
    """Every valid image spec (held-out pairs included), in a fixed order; pink shapes only if asked.

    Example:
        ```python
        >>> len(all_image_specs()), len(all_image_specs(include_pink=True))
        (600, 690)
        ```
    """
    colors = (*SHAPE_COLORS, LORA_COLOR) if include_pink else SHAPE_COLORS
    return tuple(
        ImageSpec(shape, color, size, position, background)
        for shape, color, size, position, background in itertools.product(
            SHAPES, colors, SIZES, POSITIONS, BACKGROUND_COLORS
        )
        if color != background
    )


def all_video_specs(include_pink: bool = False) -> tuple[VideoSpec, ...]:
    """Every valid video spec (held-out pairs included), in a fixed order; pink shapes only if asked.

    Example:
        ```python
        >>> len(all_video_specs()), len(all_video_specs(include_pink=True))
        (240, 276)
        ```
    """
    colors = (*SHAPE_COLORS, LORA_COLOR) if include_pink else SHAPE_COLORS
    return tuple(
        VideoSpec(shape, color, direction, background)
        for shape, color, direction, background in itertools.product(SHAPES, colors, DIRECTIONS, BACKGROUND_COLORS)
        if color != background
    )


_COLOR_WORDS = (*SHAPE_COLORS, LORA_COLOR)


def _outside(text: str, why: str) -> ValueError:
    return ValueError(
        f"Caption {text!r} is outside the tiny-world grammar: {why}. Expected "
        "'a {size} {color} {shape} {position} on a {background} background' or "
        "'a small {color} {shape} moving {direction} on a {background} background' (lower case, no final period)."
    )


def _expect_word(text: str, words: list[str], index: int, what: str, choices) -> str:
    word = words[index] if index < len(words) else None
    if word not in choices:
        got = "the end of the caption" if word is None else repr(word)
        raise _outside(text, f"word {index + 1} should be {what} ({', '.join(choices)}), got {got}")
    return word


def parse_caption(text: str) -> ImageSpec | VideoSpec:
    """Read a canonical caption back into its spec; ``ValueError`` naming the offending word otherwise.

    Example:
        ```python
        >>> parse_caption("a small blue square moving up on a white background")
        VideoSpec(shape='square', color='blue', direction='up', background='white')
        >>> parse_caption("a big red circle in the center on a black background")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: Caption '...' is outside the tiny-world grammar: word 2 should be a size (small, large), ...
        ```
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_caption expects the caption as a str, got {type(text).__name__}.")
    if text != " ".join(text.split()):
        raise _outside(text, "it has leading, trailing or repeated whitespace")
    words = text.split(" ")
    _expect_word(text, words, 0, "the article", ("a",))
    size = _expect_word(text, words, 1, "a size", tuple(SIZES))
    color = _expect_word(text, words, 2, "a colour", _COLOR_WORDS)
    shape = _expect_word(text, words, 3, "a shape", SHAPES)
    is_video = len(words) > 4 and words[4] == "moving"
    if is_video:
        if size != VIDEO_SIZE:
            raise _outside(text, f"a moving shape is always {VIDEO_SIZE!r}, got {size!r}")
        direction = _expect_word(text, words, 5, "a direction", tuple(DIRECTIONS))
        rest = 6
    else:
        phrases = {p: phrase.split() for p, phrase in POSITION_PHRASES.items()}
        position = next((p for p, phrase in phrases.items() if words[4 : 4 + len(phrase)] == phrase), None)
        if position is None:
            got = " ".join(words[4:7]) or "the end of the caption"
            expected = "; ".join(POSITION_PHRASES.values())
            why = f"after the shape expected 'moving {{direction}}' or a position ({expected}), got {got!r}"
            raise _outside(text, why)
        rest = 4 + len(POSITION_PHRASES[position].split())
    _expect_word(text, words, rest, "'on'", ("on",))
    _expect_word(text, words, rest + 1, "'a'", ("a",))
    background = _expect_word(text, words, rest + 2, "a background colour", BACKGROUND_COLORS)
    _expect_word(text, words, rest + 3, "'background'", ("background",))
    if len(words) > rest + 4:
        raise _outside(text, f"unexpected words after 'background': {' '.join(words[rest + 4:])!r}")
    if color == background:
        raise _outside(text, f"a {color} shape on a {background} background: a shape never has its background colour")
    if is_video:
        return VideoSpec(shape, color, direction, background)
    return ImageSpec(shape, color, size, position, background)


__all__ = [
    "BACKGROUND_COLORS",
    "DIRECTIONS",
    "HELD_OUT",
    "IMAGE_SIZE",
    "ImageSpec",
    "LORA_COLOR",
    "NUM_FRAMES",
    "PALETTE",
    "POSITIONS",
    "POSITION_PHRASES",
    "SHAPES",
    "SHAPE_COLORS",
    "SIZES",
    "VIDEO_STEP",
    "VIDEO_TRAVEL",
    "VideoSpec",
    "all_image_specs",
    "all_video_specs",
    "parse_caption",
]
