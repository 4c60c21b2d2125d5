"""Check a conversion numerically: both checkpoints, each loaded by its own code, give the same outputs.

The LM side compares logits on fixed token ids; the VQ side compares the codes of a fixed image and the pixels
decoded from the source's codes (so a near-tie that flips one code does not also show up as a pixel difference).
A native checkpoint runs through transformers' ``Emu3ForConditionalGeneration``, the others through emu3-hf's
classes, so a validation of BAAI -> native is a comparison against transformers' own implementation.

Everything runs in float32 on the CPU, one model at a time. When the conversion changed the dtype, the source's
weights are first rounded to that dtype, so what is checked is the conversion itself, not the rounding it was
asked for.

Example:
    ```python
    >>> from emu3_hf.conversion import compare_checkpoints
    >>> report = compare_checkpoints("emu3-pipeline", "emu3-native")
    >>> report.passed, report.logits_max_abs_diff
    (True, 0.0)
    ```
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch

from ..modeling import Emu3LMForCausalLM, Emu3VisionVQModel
from ..processing.arguments import check_finite
from .layouts import BaaiFolders, detect_layout, model_folders

_SEED = 0
_NUM_IDS = (2, 16)  # (batch, length) of the fixed LM input
_IMAGE_TOKENS = (2, 3)  # (h, w) code grid of the fixed image; not square, so a transposed grid shows


class ConversionValidationError(ValueError):
    """A converted checkpoint does not reproduce its source; the message gives the largest differences."""


@dataclass(frozen=True)
class ValidationReport:
    """What ``--validate`` measured: largest absolute differences and the number of differing codes."""

    logits_max_abs_diff: float
    codes_mismatches: int
    codes_total: int
    pixels_max_abs_diff: float
    passed: bool

    def __str__(self) -> str:
        return (
            f"LM logits max |diff| {self.logits_max_abs_diff:.3g}; VQ codes {self.codes_mismatches}/"
            f"{self.codes_total} differ; decoded pixels max |diff| {self.pixels_max_abs_diff:.3g}"
        )


@dataclass
class _Outputs:
    logits: torch.Tensor  # (B, L, V) float32
    codes: torch.Tensor  # (1, h, w) int64
    pixels: torch.Tensor  # (1, 3, H, W) float32, decoded from the codes the comparison fixes


def _fixed_inputs(vocab_size: int, spatial_factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(_SEED)
    ids = torch.randint(0, vocab_size, _NUM_IDS, generator=generator)
    height, width = (n * spatial_factor for n in _IMAGE_TOKENS)
    image = torch.rand(1, 3, height, width, generator=generator) * 2 - 1  # normalised pixels in [-1, 1]
    return ids, image


def _load_kwargs(cast: torch.dtype | None) -> dict:
    return {"dtype": cast if cast is not None else "auto"}


@torch.no_grad()
def _run(source, layout: str, cast: torch.dtype | None, inputs, codes: torch.Tensor | None) -> _Outputs:
    """Outputs of one side; ``codes`` (when given) are decoded instead of the side's own codes."""
    ids, image = inputs
    if layout == "native":
        from transformers import Emu3ForConditionalGeneration

        native = Emu3ForConditionalGeneration.from_pretrained(source, **_load_kwargs(cast)).float().eval()
        logits = native(input_ids=ids).logits.float()
        vq = native.model.vqmodel
        own = torch.stack(list(vq.encode(image, torch.tensor([list(image.shape[-2:])])).image_tokens))
        pixels = vq.decode(codes if codes is not None else own).float()
        del native
    else:
        lm_dir, vq_dir = model_folders(source, layout)
        lm = Emu3LMForCausalLM.from_pretrained(lm_dir, **_load_kwargs(cast)).float().eval()
        logits = lm(input_ids=ids).logits.float()
        del lm  # one model in memory at a time
        vq = Emu3VisionVQModel.from_pretrained(vq_dir, **_load_kwargs(cast)).float().eval()
        own = vq.encode(image)
        pixels = vq.decode(codes if codes is not None else own).float()
        del vq
    gc.collect()
    return _Outputs(logits, own, pixels)


def _sizes(source, layout: str) -> tuple[int, int]:
    """(LM vocab size, VQ spatial factor) read from the source's configs."""
    if layout == "native":
        from transformers import Emu3Config

        config = Emu3Config.from_pretrained(source)
        return config.text_config.vocab_size, 2 ** (len(config.vq_config.channel_multiplier) - 1)
    from ..modeling import Emu3LMConfig, Emu3VisionVQConfig

    lm_dir, vq_dir = model_folders(source, layout)
    levels = len(Emu3VisionVQConfig.from_pretrained(vq_dir).ch_mult)
    return Emu3LMConfig.from_pretrained(lm_dir).vocab_size, 2 ** (levels - 1)


def compare_checkpoints(
    source: str | os.PathLike | BaaiFolders,
    target: str | os.PathLike | BaaiFolders,
    *,
    dtype: torch.dtype | None = None,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    raise_on_failure: bool = True,
) -> ValidationReport:
    """Load ``source`` and ``target`` (any layouts) and compare LM logits, VQ codes and decoded pixels.

    Args:
        source, target: checkpoints on disk (folders, or :class:`BaaiFolders`).
        dtype: the dtype the conversion cast to; the source's weights are rounded to it before comparing.
        atol, rtol: tolerance on logits and pixels (``|a - b| <= atol + rtol * |b|``); codes must be equal.
        raise_on_failure: raise :class:`ConversionValidationError` (a ``ValueError``) when they differ.

    Example:
        >>> compare_checkpoints(BaaiFolders("lm", "vq"), "converted-native", atol=1e-4).passed
        True
    """
    if not (check_finite("atol", atol) >= 0 and check_finite("rtol", rtol) >= 0):
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}.")
    source_layout, target_layout = detect_layout(source), detect_layout(target)
    inputs = _fixed_inputs(*_sizes(source, source_layout))
    ref = _run(source, source_layout, dtype, inputs, codes=None)
    out = _run(target, target_layout, None, inputs, codes=ref.codes)

    def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max()) if a.shape == b.shape else float("inf")

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=rtol))

    same_shape = ref.codes.shape == out.codes.shape
    report = ValidationReport(
        logits_max_abs_diff=max_diff(out.logits, ref.logits),
        codes_mismatches=int((ref.codes != out.codes).sum()) if same_shape else ref.codes.numel(),
        codes_total=ref.codes.numel(),
        pixels_max_abs_diff=max_diff(out.pixels, ref.pixels),
        passed=close(out.logits, ref.logits) and same_shape and torch.equal(ref.codes, out.codes)
        and close(out.pixels, ref.pixels),
    )
    if raise_on_failure and not report.passed:
        raise ConversionValidationError(
            f"The converted checkpoint differs from its source beyond atol={atol}, rtol={rtol}: {report}."
        )
    return report


__all__ = ["ConversionValidationError", "ValidationReport", "compare_checkpoints"]
