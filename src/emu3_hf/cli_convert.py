"""The work behind ``emu3 convert``, ``emu3 convert-lora`` and ``emu3 merge-lora`` (see :mod:`emu3_hf.conversion`;
the arguments are parsed by :mod:`emu3_cli`).

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

from .conversion.folders import check_shard_size


def _dtype(name: str | None):
    import torch

    return None if name is None else getattr(torch, name)  # the parser allows float32 / bfloat16 / float16 only


def _shard_size(value: str) -> int | str:
    return check_shard_size(int(value) if value.isdigit() else value)  # ValueError -> "emu3: ...", status 2


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
        result = convert_checkpoint(source, args.output, args.to, source_layout=args.source_layout,
                                    dtype=_dtype(args.dtype), max_shard_size=_shard_size(args.max_shard_size), validate=args.validate, atol=args.atol,
                                    rtol=args.rtol)  # fmt: skip
    except ConversionValidationError as err:
        print(f"emu3: validation failed, nothing written: {err}")
        return 1
    print(f"{result.source_layout} -> {result.target_layout}: {result.output}")
    if result.report is not None:
        print(f"validated: {result.report}")
    return 0


def _convert_lora(args: argparse.Namespace) -> int:
    from .conversion import convert_lora_adapter

    print(convert_lora_adapter(args.adapter, args.output, args.to))
    return 0


def _merge_lora(args: argparse.Namespace) -> int:
    from .conversion import merge_lora

    print(merge_lora(args.base, args.adapter, args.output, max_shard_size=_shard_size(args.max_shard_size)))
    return 0


COMMANDS = {"convert": _convert, "convert-lora": _convert_lora, "merge-lora": _merge_lora}

__all__ = ["COMMANDS"]
