"""Canonical grids: text-to-image targets whose codes factorise by construction (stage 1d of the recipe, issue 11).

The VQ's encoder writes a picture with codes that mix its shape and its colour, so an LM trained on them learns each
(shape, colour) pair apart and cannot draw a pair it has not seen (held-out compositions: 0.16). The LM's
text-to-image targets are therefore written canonically (BENCHMARKS.md, "Held-out pairs, fourth part"):

- in the cells the shape touches and the :data:`CANONICAL_RING` cells around them: the codes of the same picture
  drawn in :data:`CANONICAL_COLOR` (they carry the shape, position and size, never the colour);
- in every other cell: the *field* of its (shape colour, background), one codebook row per pair (:data:`FIELD_KEYS`)
  that the encoder never writes (the compacted VQ writes 128 of its 1024 rows).

Stage 1d (:func:`tune_tiny_vq_canonical`) teaches the decoder to draw these grids as the picture the caption names,
with stage 1c's settings (``decoder_only``: the encoder, its BatchNorm statistics and every code it writes stay as
they are) plus :class:`CanonicalGridObjective`: each step decodes the canonical grids of a batch of specs the LM
trains on (never a held-out pair), half of them jittered. A field is a learnt linear function of the colour's RGB and
the background, and :data:`RANDOM_COLOR_SHARE` of the grids draw their shape in a random colour, never one the analyzer
would read as that shape's held-out colour: each shape is seen in a continuum of colours, so the decoder cannot tie a
colour's field to the shapes it has seen in it. The palette's fields are written into their codebook rows after each
step. The chosen rows are recorded in the VQ's config: ``reserved_codes`` (the quantiser never chooses them, so
every picture keeps exactly its codes) and ``canonical_fields`` (the map the LM stages read, :func:`canonical_codes`).

Example:
    ```python
    >>> from emu3_hf.tiny_world.canonical import canonical_codes, tune_tiny_vq_canonical
    >>> vq_dir = tune_tiny_vq_canonical("runs/tiny/vq-decoder", "runs/tiny/vq-canonical")  # ~65 min on 2 CPU cores
    >>> codes = canonical_codes(vq_dir, [parse_caption("a small red circle in the center on a black background")])
    ```
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..training.vq import VQObjective, decode_vectors
from .splits import LM_SPLITS, specs_of
from .vq_stages import tune_tiny_vq_decoder
from .render import NO_JITTER, Jitter, image_mask, render_image, render_video
from .world import BACKGROUND_COLORS, HELD_OUT, LORA_COLOR, PALETTE, SHAPE_COLORS, ImageSpec

CANONICAL_COLOR = "red"
"""The colour a shape's cells are written in, whatever colour the caption names."""
CANONICAL_RING = 1
"""Cells around the shape's own that keep the canonical picture's codes (its edge spills into them)."""
FIELD_KEYS: tuple[tuple[str, str], ...] = tuple((color, background) for color in (*SHAPE_COLORS, LORA_COLOR)
                                                for background in BACKGROUND_COLORS if color != background)  # fmt: skip
"""(colour, background) pairs that get a field row: every shape colour and pink on every other background (23)."""
RANDOM_COLOR_SHARE = 0.5
MIN_BACKGROUND_DISTANCE = 100.0
"""A random shape colour lies at least this far (Euclidean RGB) from its background."""
FIELD_LEARNING_RATE_SCALE = 10.0
# Measured (BENCHMARKS.md, "Held-out pairs, fourth part" and "Stage 1d"): the pilot's 4000 steps from the shipped VQ
# drew the held-out pairs' canonical grids right 0.925 of the time (validation 0.96); with the field map fixed after its
# first fit, 0.675 at step 1250. This stage at 2000 steps (one cosine schedule) fell short: held-out 0.725, validation
# 0.865 (white squares drawn yellow, small purple triangles gray); at 4000 steps it reached held-out 0.91 and validation
# 0.98 by step 3000, so the recipe keeps the pilot's 4000.
VQ_CANONICAL_STEPS, VQ_CANONICAL_GRIDS = 4000, 8


def field_name(color: str, background: str) -> str:
    """The key of a (colour, background) field in ``config.canonical_fields``: ``"red/black"``."""
    return f"{color}/{background}"


def in_canonical_color(spec: ImageSpec) -> ImageSpec:
    """The same picture with its shape in :data:`CANONICAL_COLOR`."""
    return ImageSpec(spec.shape, CANONICAL_COLOR, spec.size, spec.position, spec.background)


def shape_cells(spec: ImageSpec, jitter: Jitter = NO_JITTER, ring: int = CANONICAL_RING, cell: int = 8) -> np.ndarray:
    """(64 / cell, 64 / cell) bool: the cells holding a pixel of the (jittered) shape, grown by ``ring`` cells."""
    mask = image_mask(spec, jitter)
    side = mask.shape[0] // cell
    near = mask.reshape(side, cell, side, cell).any(axis=(1, 3))
    padded = np.pad(near, ring)
    return np.any([padded[dy : dy + side, dx : dx + side] for dy in range(2 * ring + 1) for dx in range(2 * ring + 1)],
                  axis=0)  # fmt: skip


def canonical_grid(spec: ImageSpec, shape_codes: torch.Tensor, field_row: int, jitter: Jitter = NO_JITTER,
                   ring: int = CANONICAL_RING) -> torch.Tensor:  # fmt: skip
    """(h, w) codes: ``shape_codes`` (the VQ's codes of ``in_canonical_color(spec)`` with the same jitter) in
    :func:`shape_cells`, ``field_row`` everywhere else."""
    near = torch.from_numpy(shape_cells(spec, jitter, ring, 64 // shape_codes.shape[-1])).to(shape_codes.device)
    return torch.where(near, shape_codes, torch.full_like(shape_codes, field_row))


def paint(spec: ImageSpec, rgb: Sequence[int], jitter: Jitter = NO_JITTER) -> np.ndarray:
    """``spec`` rendered with its shape in the colour ``rgb`` instead of its own (64, 64, 3) uint8."""
    background = np.asarray(PALETTE[spec.background], dtype=np.uint8)
    return np.where(image_mask(spec, jitter)[..., None], np.asarray(rgb, dtype=np.uint8), background)


_NAMES = tuple(PALETTE)
_TABLE = np.array([PALETTE[name] for name in _NAMES], dtype=np.float64)


def random_shape_rgb(spec: ImageSpec, rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour for ``spec``'s shape: at least :data:`MIN_BACKGROUND_DISTANCE` from its background, and
    never nearer to the colour that :data:`HELD_OUT` pairs with the shape than to every other palette colour."""
    banned = {color for shape, color in HELD_OUT if shape == spec.shape}
    background = np.asarray(PALETTE[spec.background], dtype=np.float64)
    while True:
        rgb = rng.integers(0, 256, 3)
        nearest = _NAMES[int(((_TABLE - rgb) ** 2).sum(1).argmin())]
        if nearest not in banned and np.linalg.norm(rgb - background) >= MIN_BACKGROUND_DISTANCE:
            return rgb.astype(np.uint8)


def field_inputs(rgb: Sequence[int], background: str) -> torch.Tensor:
    """(6,) what a field is a linear function of: the shape colour's RGB in [-1, 1] and the background, one-hot."""
    onehot = torch.zeros(len(BACKGROUND_COLORS))
    onehot[BACKGROUND_COLORS.index(background)] = 1.0
    return torch.cat([torch.as_tensor(np.asarray(rgb), dtype=torch.float32) / 127.5 - 1.0, onehot])


def _pixels(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """(B, [T,] H, W, 3) uint8 renders -> (B, [T,] 3, H, W) float in [-1, 1] on ``device``."""
    return torch.from_numpy(np.stack(images)).to(device).float().div(127.5).sub(1.0).movedim(-1, -3)


def fields_of(vq: Any) -> dict[tuple[str, str], int]:
    """The (colour, background) -> codebook row map a stage-1d VQ (a model, its config or folder) records."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel

    config = vq.config if isinstance(vq, torch.nn.Module) else vq
    if isinstance(config, (str, os.PathLike)):
        config = Emu3VisionVQModel.config_class.from_pretrained(config)
    recorded = getattr(config, "canonical_fields", None)
    if not recorded:
        raise ValueError("This VQ draws no canonical grids (its config has no `canonical_fields`); train it with "
                         "tune_tiny_vq_canonical (stage 1d) first.")  # fmt: skip
    return {tuple(key.split("/")): int(row) for key, row in recorded.items()}


@torch.no_grad()
def canonical_codes(vq: Any, specs: Sequence[ImageSpec], batch_size: int = 64) -> list[torch.Tensor]:
    """The canonical grid (h, w) of each clean spec, under a stage-1d VQ (model or folder)."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel

    if not isinstance(vq, torch.nn.Module):
        vq = Emu3VisionVQModel.from_pretrained(vq).eval()
    fields, device = fields_of(vq), next(vq.parameters()).device
    missing = sorted({(spec.color, spec.background) for spec in specs} - set(fields))
    if missing:
        raise ValueError(f"This VQ has no field for (colour, background) {missing}; its fields: {sorted(fields)}.")
    grids = []
    for start in range(0, len(specs), batch_size):
        part = specs[start : start + batch_size]
        codes = vq.encode(_pixels([render_image(in_canonical_color(s)) for s in part], device)).cpu()
        grids += [canonical_grid(s, c, fields[(s.color, s.background)]) for s, c in zip(part, codes)]
    return grids


def canonical_vq_of(pipeline: str | os.PathLike) -> Any:
    """The VQ of a pipeline folder when it draws canonical grids (stage 1d: its config names ``canonical_fields``),
    so that every LM stage trains on them; else None."""
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel

    folder = Path(pipeline) / "vq_model"
    if not (folder / "config.json").is_file():  # not a pipeline folder: the trainer that loads it names the problem
        return None
    config = Emu3VisionVQModel.config_class.from_pretrained(folder)
    return Emu3VisionVQModel.from_pretrained(folder).eval() if getattr(config, "canonical_fields", None) else None


class CanonicalGridObjective(VQObjective):
    """Stage 1d's extra term (module docstring): the decoding of canonical grids of ``specs`` (image specs the LM
    learns to draw, never a held-out pair), ``batch_size`` a step, every second one jittered. Needs ``decoder_only``
    (the encoder must not move). A VQ without ``canonical_fields`` gets as fields the first codebook rows that the
    encoder writes for none of ``bank_images`` and ``bank_clips`` (renders), each started near its background's code."""

    learning_rate_scale = FIELD_LEARNING_RATE_SCALE

    def __init__(self, specs: Sequence[ImageSpec], bank_images: Sequence[np.ndarray],
                 bank_clips: Sequence[np.ndarray] = (), *, batch_size: int = VQ_CANONICAL_GRIDS,
                 random_color_share: float = RANDOM_COLOR_SHARE, weight: float = 1.0, seed: int = 0):  # fmt: skip
        held = [spec.caption() for spec in specs if spec.held_out]
        if held:
            raise ValueError(f"Canonical grids must never show a held-out pair (docs/TINY_WORLD.md), got {held[:3]}.")
        missing = sorted({(s.color, s.background) for s in specs} - set(FIELD_KEYS))
        if not specs or missing:
            raise ValueError(f"specs must be a non-empty list of image specs with fields, got {len(specs)} specs, "
                             f"unknown (colour, background) {missing}.")  # fmt: skip
        if batch_size < 1 or not 0 <= random_color_share <= 1 or weight < 0 or not len(bank_images):
            raise ValueError(f"batch_size must be >= 1, random_color_share in [0, 1], weight >= 0 and bank_images "
                             f"non-empty; got {batch_size}, {random_color_share}, {weight}, {len(bank_images)}.")
        self.specs, self.batch_size, self.share, self.weight, self.seed = list(specs), batch_size, random_color_share, \
            weight, seed  # fmt: skip
        self.bank_images, self.bank_clips = list(bank_images), list(bank_clips)
        self.inputs = torch.stack([field_inputs(PALETTE[color], background) for color, background in FIELD_KEYS])

    @torch.no_grad()
    def setup(self, model: Any, device: torch.device) -> None:
        if any(p.requires_grad for p in model.encoder.parameters()) or model.encoder.training:
            raise ValueError("CanonicalGridObjective needs VQTrainConfig(decoder_only=True): the encoder must stay "
                             "frozen, or every code the LM learns would move.")  # fmt: skip
        codebook, config = model.quantize.embedding.weight, model.config
        if getattr(config, "canonical_fields", None):  # a stage-1d VQ trained further: its rows
            self.rows = [int(config.canonical_fields[field_name(*key)]) for key in FIELD_KEYS]
        else:  # the first rows the encoder never writes for the bank, each started near its background's code
            used: set[int] = set()
            for pictures, size in ((self.bank_images, 64), (self.bank_clips, 8)):
                for i in range(0, len(pictures), size):
                    used |= set(model.encode(_pixels(pictures[i : i + size], device)).unique().tolist())
            self.rows = [row for row in range(codebook.shape[0]) if row not in used][: len(FIELD_KEYS)]
            if len(self.rows) < len(FIELD_KEYS):
                raise ValueError(f"The codebook has {len(self.rows)} rows the encoder never writes; the fields need "
                                 f"{len(FIELD_KEYS)}.")  # fmt: skip
            generator = torch.Generator().manual_seed(self.seed)
            plain = [render_image(ImageSpec("circle", CANONICAL_COLOR, "small", "center", b)) for b in BACKGROUND_COLORS]
            corner = model.encode(_pixels(plain, device))[:, 0, 0]  # a background cell's code, per background
            for (color, background), row in zip(FIELD_KEYS, self.rows):
                start = codebook[corner[BACKGROUND_COLORS.index(background)]]
                codebook[row] = start + start.norm() * torch.randn(codebook.shape[1], generator=generator).to(device)
        # the quantiser never chooses a field, so every picture keeps its codes whatever the fields learn
        config.reserved_codes = sorted(set(config.reserved_codes or []) | set(self.rows))
        config.canonical_fields = {field_name(*key): row for key, row in zip(FIELD_KEYS, self.rows)}
        self.inputs = self.inputs.to(device)
        fit = torch.linalg.lstsq(self.inputs, codebook[self.rows]).solution  # (6, C)
        self.map = torch.nn.Parameter(fit.clone())
        self.device = device
        self.after_step(model)  # the field rows are the map's values from the start

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.map]

    def loss(self, model: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng([self.seed, step])  # one draw per step: a resumed run draws the same batches
        picks = [self.specs[i] for i in rng.integers(0, len(self.specs), self.batch_size)]
        jitters = [Jitter.sample(rng) if k % 2 else NO_JITTER for k in range(self.batch_size)]
        colors = [random_shape_rgb(s, rng) if rng.random() < self.share else np.asarray(PALETTE[s.color], np.uint8)
                  for s in picks]  # fmt: skip
        codebook = model.quantize.embedding.weight.detach()
        with torch.no_grad():
            shapes = model.encode(_pixels([render_image(in_canonical_color(s), j) for s, j in zip(picks, jitters)],
                                          self.device))  # (B, h, w)  # fmt: skip
            cell = 64 // shapes.shape[-1]
            near = torch.stack([torch.from_numpy(shape_cells(s, j, cell=cell)) for s, j in zip(picks, jitters)])
            target = _pixels([paint(s, c, j) for s, c, j in zip(picks, colors, jitters)], self.device)
        fills = torch.stack([field_inputs(c, s.background) for s, c in zip(picks, colors)]).to(self.device) @ self.map
        vectors = torch.where(near.to(self.device)[..., None], codebook[shapes], fills[:, None, None])  # (B, h, w, C)
        drawn = decode_vectors(model, vectors.movedim(-1, 1)[:, None], first_frame_only=True)[:, 0]
        error = drawn - target
        canonical = error.abs().mean() + error.square().mean()
        return self.weight * canonical, {"canonical": canonical.item()}

    @torch.no_grad()
    def after_step(self, model: Any) -> None:
        model.quantize.embedding.weight[self.rows] = (self.inputs @ self.map).to(model.quantize.embedding.weight.dtype)


def tune_tiny_vq_canonical(
    vq: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    steps: int = VQ_CANONICAL_STEPS,
    grid_batch_size: int = VQ_CANONICAL_GRIDS,
    seed: int = 0,
    bank_jitters: int = 1,
    **overrides: Any,
) -> Path:
    """Stage 1d: stage 1c's decoder training (:func:`~emu3_hf.tiny_world.vq_stages.tune_tiny_vq_decoder`: clean and
    jittered images and clips of every split the LM draws and of pink; ``overrides`` go there) from the VQ folder
    ``vq`` into ``output_dir``, plus the canonical grids of the same image specs (:class:`CanonicalGridObjective`).
    The fields are rows the encoder writes for none of these images (clean and ``bank_jitters`` times jittered) and
    clips (clean). Returns ``output_dir``; its config's ``canonical_fields`` names the field rows."""
    if steps < 1 or bank_jitters < 0:
        raise ValueError(f"steps must be >= 1 and bank_jitters >= 0, got {steps} and {bank_jitters}.")
    images, clips = specs_of(LM_SPLITS + ("lora",))
    rng = np.random.default_rng(seed)
    bank = [render_image(s) for s in images] + [render_image(s, Jitter.sample(rng))
                                                for _ in range(bank_jitters) for s in images]  # fmt: skip
    objective = CanonicalGridObjective(images, bank, [render_video(s) for s in clips], batch_size=grid_batch_size,
                                       seed=seed)  # fmt: skip
    return tune_tiny_vq_decoder(vq, output_dir, steps=steps, seed=seed, objective=objective, **overrides)


__all__ = [
    "CANONICAL_COLOR",
    "CANONICAL_RING",
    "FIELD_KEYS",
    "RANDOM_COLOR_SHARE",
    "VQ_CANONICAL_GRIDS",
    "VQ_CANONICAL_STEPS",
    "CanonicalGridObjective",
    "canonical_codes",
    "canonical_grid",
    "canonical_vq_of",
    "field_inputs",
    "field_name",
    "fields_of",
    "in_canonical_color",
    "paint",
    "random_shape_rgb",
    "shape_cells",
]
