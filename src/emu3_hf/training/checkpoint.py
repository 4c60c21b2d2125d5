"""Training checkpoints with exact resume, in safetensors and JSON (nothing pickled on disk, nothing unpickled).

A checkpoint folder ``checkpoint-<step>/`` holds:

- ``trainable.safetensors``: the trainable parameters (the LoRA matrices, or every weight in full fine-tuning);
- ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's per-parameter tensors (keyed by parameter name)
  and its parameter groups;
- ``trainer_state.json``: the step, the data position (epoch, batch), the scheduler, the loss history and the
  random states of every process (torch, CUDA, Python, NumPy);
- ``rng.safetensors``: the torch / CUDA generator states of every process;
- ``extra.safetensors`` (optional): tensors a trainer keeps besides parameters and optimizer state (the VQ
  trainer's BatchNorm statistics and codebook usage), read back with :func:`load_extra_tensors`.

State dicts go through ``torch.distributed.checkpoint.state_dict`` (full, on CPU), which reads plain modules, DDP
and FSDP2 (``fully_shard``) alike, so the same folder resumes a run with any of them. Process 0 writes, into a
staged folder that appears in one rename: a run killed while saving leaves the previous checkpoints intact.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..modeling.loading import refuse_pickled_weights
from ..utils.atomic import staged_folder

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
_SEPARATOR = "::"  # optimizer tensor keys: "<parameter name>::<state name>"


def _options(**kwargs) -> StateDictOptions:
    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (gathered, CPU) values of the trainable parameters; empty on processes other than 0 under FSDP2."""
    names = {_strip(k) for k in trainable_names(model)}
    state = get_model_state_dict(model, options=_options())
    return {_strip(k): v.detach().contiguous() for k, v in state.items() if _strip(k) in names}


def _strip(name: str) -> str:
    return name.removeprefix("module.")


def rng_state() -> dict[str, Any]:
    """This process's random states: torch tensors separately from the JSON-able Python / NumPy ones."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    version, internal, gauss_next = random.getstate()
    return {
        "tensors": tensors,
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["tensors"]["torch"])
    cuda = [state["tensors"][k] for k in sorted(state["tensors"]) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))


def save_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    is_main_process: bool = True,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint (every process calls this: gathering the full state dicts is collective).

    ``extra_tensors`` are written to ``extra.safetensors`` in the same staged folder (see :func:`load_extra_tensors`).
    """
    weights = trainable_state_dict(model)
    optim = get_optimizer_state_dict(model, optimizer, options=_options())
    if not is_main_process:
        return
    tensors, per_param = {}, {}
    for name, values in optim["state"].items():
        per_param[name] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}{_SEPARATOR}{key}"] = value.detach().cpu().contiguous()
            else:
                per_param[name][key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in optim["param_groups"]]
    rng_tensors = {f"{rank}/{k}": v for rank, s in enumerate(rng_states) for k, v in s["tensors"].items()}
    rng_json = [{"python": s["python"], "numpy": s["numpy"]} for s in rng_states]
    trainer_state = {**state, "scheduler": scheduler.state_dict(), "rng": rng_json}
    with staged_folder(folder) as staging:
        save_file(weights, str(staging / "trainable.safetensors"))
        save_file(tensors, str(staging / "optimizer.safetensors"))
        (staging / "optimizer.json").write_text(json.dumps({"param_groups": groups, "state": per_param}, indent=1))
        save_file(rng_tensors, str(staging / "rng.safetensors"))
        if extra_tensors is not None:
            extra = {k: v.detach().cpu().contiguous() for k, v in extra_tensors.items()}
            save_file(extra, str(staging / "extra.safetensors"))
        (staging / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))


CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.safetensors", "optimizer.json", "rng.safetensors",
                    "trainer_state.json")  # fmt: skip


def check_checkpoint_folder(folder: str | Path) -> None:
    """Raise ``ValueError`` unless ``folder`` holds every file of a checkpoint (checked before a model loads)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"resume_from_checkpoint: {folder} is not a folder; pass a checkpoint-<step> folder or "
                         "'latest'.")  # fmt: skip
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a complete training checkpoint: it lacks {missing}.")


def load_checkpoint(
    folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into the same setup; returns its trainer state."""
    folder = Path(folder)
    refuse_pickled_weights(folder, f"training checkpoint {str(folder)!r}")  # e.g. accelerate's optimizer.bin
    check_checkpoint_folder(folder)
    weights = load_file(str(folder / "trainable.safetensors"))
    expected = {_strip(k) for k in trainable_names(model)}
    got = {_strip(k) for k in weights}
    if got != expected:
        extra, absent = sorted(got - expected)[:3], sorted(expected - got)[:3]
        raise ValueError(
            f"{folder} was saved for other trainable parameters (unexpected {extra}, missing {absent}): resume with "
            "the same model and the same LoRA / full fine-tuning settings."
        )
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    meta = json.loads((folder / "optimizer.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    per_param: dict[str, dict] = {name: dict(values) for name, values in meta["state"].items()}
    for key, value in tensors.items():
        name, entry = key.rsplit(_SEPARATOR, 1)
        per_param.setdefault(name, {})[entry] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in meta["param_groups"]]
    set_optimizer_state_dict(model, optimizer, {"state": per_param, "param_groups": groups},
                             options=StateDictOptions(full_state_dict=True))  # fmt: skip
    state = json.loads((folder / "trainer_state.json").read_text())
    scheduler.load_state_dict(state.pop("scheduler"))
    rngs = state.pop("rng")
    if rank >= len(rngs):
        raise ValueError(f"{folder} was saved by {len(rngs)} process(es); resume it with as many (this is rank {rank}).")
    rng_tensors = load_file(str(folder / "rng.safetensors"))
    own = {k.split("/", 1)[1]: v for k, v in rng_tensors.items() if k.startswith(f"{rank}/")}
    set_rng_state({"tensors": own, **rngs[rank]})
    return state


def load_extra_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """The ``extra_tensors`` that :func:`save_checkpoint` wrote into ``folder``."""
    path = Path(folder) / "extra.safetensors"
    if not path.is_file():
        raise ValueError(f"{folder} holds no extra.safetensors: it was not written by this trainer; resume from one "
                         "of its own checkpoints.")  # fmt: skip
    return load_file(str(path))


def find_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and
             (p / "trainer_state.json").is_file()]  # fmt: skip
    return [p for _, p in sorted(found)]


def resume_point(output_dir: str | Path) -> str | None:
    """"latest" when ``output_dir`` holds a checkpoint of an earlier run (both stages resume that way), else None."""
    return "latest" if Path(output_dir).is_dir() and find_checkpoints(output_dir) else None


def prune_checkpoints(output_dir: str | Path, keep: int | None) -> None:
    """Delete all but the ``keep`` newest checkpoints (None keeps all)."""
    if keep is None:
        return
    for old in find_checkpoints(output_dir)[: -keep or None]:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "resume_point","CHECKPOINT_FILES", "check_checkpoint_folder", "find_checkpoints", "load_checkpoint", "load_extra_tensors", "prune_checkpoints", "rng_state",
           "save_checkpoint", "set_rng_state", "trainable_state_dict"]  # fmt: skip
