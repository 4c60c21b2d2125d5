"""Folder-to-folder conversion between BAAI's layout, emu3-hf pipeline folders and transformers' native layout.

``convert_checkpoint`` reads any layout (:mod:`.layouts`), writes the requested one into a staging folder next to
the output, optionally validates it against the source (:mod:`.validate`), and only then renames the staging
folder to the output: an interrupted or failed conversion leaves no output folder, never a partial one.

Example:
    ```python
    >>> from emu3_hf.conversion import BaaiFolders, convert_checkpoint
    >>> convert_checkpoint(BaaiFolders("Emu3-Gen", "Emu3-VisionTokenizer"), "emu3-gen-hf", "native",
    ...                    dtype=torch.bfloat16, validate=True).report.passed
    True
    ```
"""

from __future__ import annotations

import gc
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..processing.arguments import check_finite
from ..utils.atomic import staged_folder
from .layouts import (
    LAYOUTS,
    BaaiFolders,
    baai_rope_scaling,
    check_baai_folders,
    check_writable,
    detect_layout,
    load_checkpoint,
    model_folders,
    save_checkpoint,
    source_parts,
)
from .native import baai_configs_from_native, native_config_from_baai
from .validate import ValidationReport, compare_checkpoints

DEFAULT_MAX_SHARD_SIZE = "5GB"


@dataclass(frozen=True)
class ConversionResult:
    """Where the converted checkpoint is, which layouts were involved, and the validation report (if run)."""

    output: Path
    source_layout: str
    target_layout: str
    report: ValidationReport | None = None


def _configs(source, layout: str):
    """(LM config, VQ config) of a checkpoint, in our classes, without loading any weights."""
    from ..modeling import Emu3LMConfig, Emu3VisionVQConfig

    if layout == "native":
        from transformers import Emu3Config

        return baai_configs_from_native(Emu3Config.from_pretrained(source))
    if isinstance(source, BaaiFolders):
        check_baai_folders(source)
    lm_dir, vq_dir = model_folders(source, layout)
    return Emu3LMConfig.from_pretrained(lm_dir), Emu3VisionVQConfig.from_pretrained(vq_dir)


def _check_representable(source, layout: str, to: str) -> None:
    """Refuse, before loading weights, what the target layout cannot hold (native VQ widths and reserved codes,
    BAAI RoPE types, native VQ attention outside BAAI's)."""
    if to == layout:
        return
    lm_config, vq_config = _configs(source, layout)
    if to == "native":
        native_config_from_baai(lm_config, vq_config)
    if to == "baai":
        baai_rope_scaling(lm_config.rope_parameters)


def check_shard_size(max_shard_size: int | str) -> int | str:
    """Accept the forms transformers' and huggingface_hub's ``max_shard_size`` take (bytes, or "5GB", "500MB")."""
    if isinstance(max_shard_size, int) and not isinstance(max_shard_size, bool) and max_shard_size > 0:
        return max_shard_size
    if isinstance(max_shard_size, str) and re.fullmatch(r"\d+(\.\d+)?[KMGT]i?B", max_shard_size, re.IGNORECASE):
        return max_shard_size
    raise ValueError(f"max_shard_size must be a positive number of bytes or a size like '5GB' / '500MB', got "
                     f"{max_shard_size!r}.")  # fmt: skip


def check_output(output: Path) -> None:
    """Refuse an output path that exists and is not an empty folder (conversions and merges never overwrite)."""
    if output.exists() and not (output.is_dir() and not any(output.iterdir())):
        raise ValueError(
            f"output {str(output)!r} already exists and is not an empty folder; conversions never overwrite. Choose a "
            "new path or remove it first."
        )


def convert_checkpoint(
    source: str | os.PathLike | BaaiFolders,
    output: str | os.PathLike,
    to: str,
    *,
    source_layout: str | None = None,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    validate: bool = False,
    atol: float = 1e-3,
    rtol: float = 1e-3,
) -> ConversionResult:
    """Convert a checkpoint folder into another layout; nothing appears at ``output`` unless all of it succeeded.

    Args:
        source: a checkpoint folder (pipeline, native, or a folder with BAAI's ``lm/`` + ``vq/``) or
            :class:`BaaiFolders` for BAAI's separate LM / VQ (/ tokenizer) folders.
        output: a new (or empty) folder. For ``to="baai"`` it receives ``lm/`` (weights, config, tokenizer files)
            and ``vq/`` (weights, config, ``preprocessor_config.json``), the two Hub repos side by side.
        to: ``"baai"``, ``"pipeline"`` or ``"native"``.
        source_layout: the source's layout when you want it checked; detected otherwise.
        dtype: cast every floating-point weight (LM and VQ) to this dtype; default: as stored.
        max_shard_size: largest safetensors shard (``"5GB"``, ``"500MB"``, or bytes).
        validate: after writing, load both sides and compare LM logits, VQ codes and pixels; a difference raises
            :class:`ConversionValidationError` with the largest difference, and nothing is written.
        atol, rtol: the validation tolerance.

    Example:
        >>> convert_checkpoint("emu3-pipeline", "emu3-baai", "baai").output
        PosixPath('emu3-baai')
    """
    if to not in LAYOUTS:
        raise ValueError(f"to must be one of {LAYOUTS}, got {to!r}.")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype such as torch.bfloat16, got {dtype!r}.")
    check_shard_size(max_shard_size)
    if not (check_finite("atol", atol) >= 0 and check_finite("rtol", rtol) >= 0):
        raise ValueError(f"atol and rtol must be >= 0, got atol={atol}, rtol={rtol}.")
    output = Path(output)
    check_output(output)
    layout = detect_layout(source)
    if source_layout is not None and source_layout != layout:
        raise ValueError(f"source {source} was given as layout {source_layout!r} but looks like {layout!r}.")
    check_writable(source_parts(source, layout), to)
    _check_representable(source, layout, to)
    report = None
    with staged_folder(output) as staging:
        checkpoint = load_checkpoint(source, layout, dtype=dtype)
        save_checkpoint(checkpoint, staging, to, max_shard_size=max_shard_size)
        del checkpoint
        gc.collect()
        if validate:
            report = compare_checkpoints(source, staging, dtype=dtype, atol=atol, rtol=rtol)
    return ConversionResult(output, layout, to, report)


__all__ = ["DEFAULT_MAX_SHARD_SIZE", "ConversionResult", "check_output", "check_shard_size", "convert_checkpoint"]
