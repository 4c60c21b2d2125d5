"""The work behind ``emu3 train`` (its parser lives in :mod:`emu3_cli`): the same :func:`emu3_hf.training.train`
that Python users call, with the parsed options as :class:`~emu3_hf.training.TrainConfig` fields."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from ``emu3 train``'s options (every option is named like its field)."""
    from .training import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if values.get("max_grad_norm") == 0:
        values["max_grad_norm"] = None
    return TrainConfig(**values)


def _train(args: argparse.Namespace) -> int:
    from .training import train

    result = train(config_from_args(args))
    if int(os.environ.get("RANK", "0")):  # under a multi-process launch, process 0 reports
        return 0
    what = "adapter" if args.lora else "pipeline"
    print(f"{result.global_step} steps; final training loss {result.losses[-1]:.4f}; {what} in {result.output_dir}")
    if result.eval_losses:
        print(f"held-out loss {result.eval_losses[max(result.eval_losses)]:.4f}")
    return 0


COMMANDS = {"train": _train}

__all__ = ["COMMANDS", "config_from_args"]
