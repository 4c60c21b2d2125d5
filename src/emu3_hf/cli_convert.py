"""The ``emu3 convert``, ``emu3 convert-lora`` and ``emu3 merge-lora`` commands (see :mod:`emu3_hf.conversion`).

Example:
    ```bash
    # BAAI's two folders -> an emu3-hf pipeline folder, checked numerically against the source
    emu3 convert --lm Emu3-Gen --vq Emu3-VisionTokenizer --to pipeline -o emu3-gen-pipeline --validate
    # any layout -> any other (the source layout is detected); BAAI output = OUT/lm + OUT/vq
    emu3 convert emu3-gen-pipeline --to native -o emu3-gen-hf --dtype bfloat16 --max-shard-size 2GB
    emu3 convert emu3-gen-hf --to baai -o emu3-gen-baai
    # LoRA adapters between our (= BAAI's) module names and transformers' native ones, and merging
    emu3 convert-lora my-lora --to native -o my-lora-native
    emu3 merge-lora emu3-gen-pipeline my-lora emu3-gen-merged
    ```
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Callable

from .conversion.folders import DEFAULT_MAX_SHARD_SIZE, check_shard_size
from .conversion.layouts import LAYOUTS

_CONVERT_HELP = """\
Convert an Emu3 checkpoint between layouts: 'baai' (BAAI's LM folder + VQ folder), 'pipeline' (an emu3-hf
pipeline folder: model_index.json + components) and 'native' (transformers' Emu3ForConditionalGeneration with its
processor). The source layout is detected. BAAI input: --lm DIR --vq DIR [--tokenizer DIR], or one folder holding
lm/ and vq/. BAAI output: OUTPUT/lm (weights, config, tokenizer files) and OUTPUT/vq (weights, config,
preprocessor_config.json), BAAI's two Hub repos side by side. Weights are written as safetensors only, the
tokenizer with tokenizer.json; nothing appears at OUTPUT unless the whole conversion (and --validate) succeeded."""


def _dtype(name: str):
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise argparse.ArgumentTypeError(f"{name!r} is not a floating-point torch dtype (float32, bfloat16, float16).")
    return dtype


def _shard_size(value: str) -> int | str:
    try:
        return check_shard_size(int(value) if value.isdigit() else value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _report_os_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Missing or unreadable files end the command with their message and status 2, without a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except OSError as err:
            print(f"emu3: {err}", file=sys.stderr)
            return 2

    return run


def add_convert_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``convert``, ``convert-lora`` and ``merge-lora`` to the ``emu3`` command's subparsers."""
    convert = subparsers.add_parser("convert", help="convert a checkpoint between BAAI, pipeline and native layouts",
                                    description=_CONVERT_HELP)  # fmt: skip
    convert.add_argument("source", nargs="?", type=Path, default=None,
                         help="checkpoint folder (pipeline, native, or one holding BAAI's lm/ + vq/); omit with --lm")
    convert.add_argument("--lm", type=Path, default=None, help="BAAI LM folder (with --vq)")
    convert.add_argument("--vq", type=Path, default=None, help="BAAI VQ folder (with --lm)")
    convert.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder if the BAAI LM folder has none")
    convert.add_argument("--to", required=True, choices=LAYOUTS, help="target layout")
    convert.add_argument("--output", "-o", required=True, type=Path, help="new folder to write")
    convert.add_argument("--from", dest="source_layout", choices=LAYOUTS, default=None,
                         help="the source's layout, checked against the detected one")
    convert.add_argument("--dtype", type=_dtype, default=None, help="cast all weights (default: as stored)")
    convert.add_argument("--max-shard-size", type=_shard_size, default=DEFAULT_MAX_SHARD_SIZE,
                         help=f"largest safetensors shard (default {DEFAULT_MAX_SHARD_SIZE})")
    convert.add_argument("--validate", action="store_true",
                         help="compare LM logits and VQ codes + pixels of both sides; exit 1 when they differ")
    convert.add_argument("--atol", type=float, default=1e-3, help="--validate absolute tolerance (default 1e-3)")
    convert.add_argument("--rtol", type=float, default=1e-3, help="--validate relative tolerance (default 1e-3)")
    convert.set_defaults(run=_convert)

    lora = subparsers.add_parser("convert-lora", help="rename a PEFT LoRA adapter between emu3 and native modules",
                                 description="Rename a PEFT LoRA adapter's modules between emu3-hf's LM (the same "
                                 "names as BAAI's remote code: 'emu3', alias 'baai') and transformers' native "
                                 "Emu3ForConditionalGeneration ('native'). Weights stay bit-identical.")  # fmt: skip
    lora.add_argument("adapter", type=Path, help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    lora.add_argument("--to", required=True, choices=("native", "emu3", "baai"), help="target module names")
    lora.add_argument("--output", "-o", required=True, type=Path, help="new folder to write")
    lora.set_defaults(run=_convert_lora)

    merge = subparsers.add_parser("merge-lora", help="fuse a LoRA adapter into a copy of its base checkpoint",
                                  description="Write BASE with the adapter fused into its LM weights (everything "
                                  "else copied) to the new folder OUTPUT, in BASE's layout.")  # fmt: skip
    merge.add_argument("base", type=Path, help="BAAI LM folder, folder with BAAI's lm/ + vq/, or pipeline folder")
    merge.add_argument("adapter", type=Path, help="PEFT adapter folder (emu3 or native module names)")
    merge.add_argument("output", type=Path, help="new folder to write")
    merge.add_argument("--max-shard-size", type=_shard_size, default=DEFAULT_MAX_SHARD_SIZE,
                       help=f"largest safetensors shard (default {DEFAULT_MAX_SHARD_SIZE})")
    merge.set_defaults(run=_merge_lora)


@_report_os_errors
def _convert(args: argparse.Namespace) -> int:
    from .conversion import BaaiFolders, ConversionValidationError, convert_checkpoint

    if args.lm is not None or args.vq is not None:
        if args.lm is None or args.vq is None or args.source is not None:
            raise ValueError("Give BAAI's folders as --lm DIR --vq DIR (both, and no SOURCE), or one SOURCE folder.")
        source = BaaiFolders(args.lm, args.vq, args.tokenizer)
    elif args.source is None:
        raise ValueError("Give the checkpoint to convert: SOURCE, or --lm DIR --vq DIR for BAAI's folders.")
    elif args.tokenizer is not None:
        raise ValueError("--tokenizer goes with --lm/--vq (BAAI's folders); other layouts carry their tokenizer.")
    else:
        source = args.source
    try:
        result = convert_checkpoint(source, args.output, args.to, source_layout=args.source_layout, dtype=args.dtype,
                                    max_shard_size=args.max_shard_size, validate=args.validate, atol=args.atol,
                                    rtol=args.rtol)  # fmt: skip
    except ConversionValidationError as err:
        print(f"emu3: validation failed, nothing written: {err}")
        return 1
    print(f"{result.source_layout} -> {result.target_layout}: {result.output}")
    if result.report is not None:
        print(f"validated: {result.report}")
    return 0


@_report_os_errors
def _convert_lora(args: argparse.Namespace) -> int:
    from .conversion import convert_lora_adapter

    print(convert_lora_adapter(args.adapter, args.output, args.to))
    return 0


@_report_os_errors
def _merge_lora(args: argparse.Namespace) -> int:
    from .conversion import merge_lora

    print(merge_lora(args.base, args.adapter, args.output, max_shard_size=args.max_shard_size))
    return 0


__all__ = ["add_convert_commands"]
