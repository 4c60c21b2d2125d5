"""The tiny shapes world (``docs/TINY_WORLD.md``): the procedural data the embedded model is trained and scored on.

- :mod:`.world`: palette, shapes, sizes, positions, :class:`ImageSpec` / :class:`VideoSpec`, the caption grammar.
- :mod:`.render`: specs to hard-edged 64x64 pixels (images and 8-frame clips), optional training jitter.
- :mod:`.analyze`: the reference pixel analyzer and the scoring helpers of the evaluation.
- :mod:`.splits`: deterministic train/validation/test/heldout/lora splits and the example streams.
- :mod:`.recipe` / :mod:`.evaluate`: how the embedded model (:data:`EMU3_TINY`) is trained and scored;
  :mod:`.canonical`: its text-to-image targets (canonical grids, stage 1d); :mod:`.vq_reports`: how a VQ reads back.

Pure numpy + Pillow: importing it needs no torch beyond what ``import emu3_hf`` already costs.

Example:
    ```python
    >>> from emu3_hf.tiny_world import ImageSpec, analyze_image, parse_caption, render_image
    >>> spec = parse_caption("a large purple square in the bottom left corner on a white background")
    >>> analyze_image(render_image(spec)).spec == spec
    True
    ```
"""

from pathlib import Path

from .analyze import (
    IMAGE_ATTRIBUTES,
    VIDEO_ATTRIBUTES,
    ImageAnalysis,
    VideoAnalysis,
    aggregate_scores,
    analyze_image,
    analyze_video,
    score_image,
    score_video,
)
from .render import MAX_JITTER, NO_JITTER, Jitter, image_mask, render_image, render_video, shape_mask
from .splits import (
    DEFAULT_SPLIT_SEED,
    SPLIT_NAMES,
    WorldSplits,
    iter_image_examples,
    iter_video_examples,
    make_splits,
)
from .world import (
    BACKGROUND_COLORS,
    DIRECTIONS,
    HELD_OUT,
    IMAGE_SIZE,
    LORA_COLOR,
    NUM_FRAMES,
    PALETTE,
    POSITIONS,
    SHAPE_COLORS,
    SHAPES,
    SIZES,
    ImageSpec,
    VideoSpec,
    all_image_specs,
    all_video_specs,
    parse_caption,
)

EMU3_TINY = Path(__file__).resolve().parents[1] / "assets" / "emu3-tiny"
"""The embedded model: a pipeline folder trained by ``emu3 tiny-world train`` (the default of every entry point)."""
EMU3_TINY_PINK_LORA = EMU3_TINY.with_name("emu3-tiny-pink-lora")
"""The embedded LoRA demo: a PEFT adapter for :data:`EMU3_TINY` that teaches it the colour pink."""

__all__ = [
    "EMU3_TINY",
    "EMU3_TINY_PINK_LORA",
    "BACKGROUND_COLORS",
    "DEFAULT_SPLIT_SEED",
    "DIRECTIONS",
    "HELD_OUT",
    "IMAGE_ATTRIBUTES",
    "IMAGE_SIZE",
    "ImageAnalysis",
    "ImageSpec",
    "Jitter",
    "LORA_COLOR",
    "MAX_JITTER",
    "NO_JITTER",
    "NUM_FRAMES",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SHAPE_COLORS",
    "SIZES",
    "SPLIT_NAMES",
    "VIDEO_ATTRIBUTES",
    "VideoAnalysis",
    "VideoSpec",
    "WorldSplits",
    "aggregate_scores",
    "all_image_specs",
    "all_video_specs",
    "analyze_image",
    "analyze_video",
    "image_mask",
    "iter_image_examples",
    "iter_video_examples",
    "make_splits",
    "parse_caption",
    "render_image",
    "render_video",
    "score_image",
    "score_video",
    "shape_mask",
]
