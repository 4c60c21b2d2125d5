"""The work behind ``emu3 train`` (its parser lives in :mod:`emu3_cli`): the same :func:`emu3_hf.training.train`
that Python users call, with the parsed options as :class:`~emu3_hf.training.TrainConfig` fields."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from ``emu3 train``'s options (every option is named like its field)."""
    from .training import TrainConfig

    from .tiny_world import EMU3_TINY as DEFAULT_MODEL  # the shipped model, every command's default

    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if values.get("model") is None:
        if values.get("vq") is not None or values.get("tokenizer") is not None:
            raise ValueError("--vq / --tokenizer go with BAAI's LM folder as --model: pass --model LM_FOLDER too.")
        values["model"] = str(DEFAULT_MODEL)  # the shipped model, like every other command
    if values.get("max_grad_norm") == 0:
        values["max_grad_norm"] = None
    return TrainConfig(**values)


def _train(args: argparse.Namespace) -> int:
    from .training import train

    config = config_from_args(args)
    config.check()  # before anything is said or loaded
    main_process = not int(os.environ.get("RANK", "0"))  # under a multi-process launch, process 0 speaks
    if main_process:
        print(_logging_line(config), flush=True)
    result = train(config)
    if main_process:
        print(result.report())
    return 0


def _logging_line(config) -> str:
    if config.tracker() == "tensorboard":
        where = os.path.join(config.output_dir, "emu3-train")
        return f"logging to TensorBoard in {where} (tensorboard --logdir {where}; --report-to none: no logs)"
    if config.report_to == "auto":
        return "not logging: TensorBoard is not installed (pip install tensorboard; the losses still go to training_config.json)"
    return "not logging (--report-to none)"


COMMANDS = {"train": _train}

__all__ = ["COMMANDS", "config_from_args"]
