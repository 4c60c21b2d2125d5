"""Checkpoint I/O rules shared by the LM and the VQ: safetensors only, weights that cover the config exactly, one
clear error, and saves that replace a folder as a whole.

- Pickled weights (``pytorch_model.bin``, ``*.pt``, ``adapter_model.bin``, ...) are never loaded: unpickling can run
  arbitrary code. :func:`refuse_pickled_weights` says how to convert them, before anything is read.
- transformers loads a checkpoint whose tensors do not match the config with a warning: tensors the model lacks are
  dropped, tensors the checkpoint lacks are initialised at random (one layer more in the config than in the file). A
  load that is not exact raises one ``ValueError`` naming the folder and the first mismatches instead; tied weights
  and non-persistent buffers are not expected in the file and do not count.
- A truncated or corrupted safetensors file surfaces as the Rust reader's ``SafetensorError``; it becomes an
  ``OSError`` naming the folder and the fix.
- ``save_pretrained`` goes through :func:`emu3_hf.utils.atomic.staged_folder`: the previous weights of the folder
  never survive a save (transformers leaves ``model.safetensors`` beside the new shards when a model is re-saved
  sharded, and the stale single file wins on load).

This module imports only transformers' dependencies (and emu3-hf inside a ``try``) so it can be exported with the
modeling files as remote code; there, saves are transformers' own.

Example:
    ```python
    >>> Emu3LMForCausalLM.from_pretrained("folder-with-one-layer-more-in-its-config")
    ValueError: The weights in 'folder-...' do not cover its config.json exactly: missing model.layers.2.mlp...
    ```
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from safetensors import SafetensorError
from transformers import PreTrainedModel

try:  # with emu3-hf installed, saves replace the folder's content as a whole (absent in exported remote code)
    from emu3_hf.utils.atomic import staged_folder
except ImportError:
    staged_folder = None

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CONVERT_HINT = (
    "emu3-hf reads safetensors only: pickled weights are never loaded (unpickling can run arbitrary code). Convert "
    "the weights once, where you trust the file, e.g. `python -c \"import torch, safetensors.torch as st; "
    "st.save_file(torch.load('pytorch_model.bin', weights_only=True), 'model.safetensors')\"` (adapter_model.bin -> "
    "adapter_model.safetensors likewise), or with safetensors' convert script (github.com/huggingface/safetensors, "
    "bindings/python/convert.py)."
)
_SHOWN = 5  # mismatches named in an error


def _where(path, subfolder: str | None) -> str:
    return f"{str(path)!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")


def refuse_pickled_weights(folder: str | os.PathLike, where: str | None = None) -> None:
    """Raise ``ValueError`` when a local folder holds model or adapter weights only in a pickle format.

    Model weights count as safetensors when any ``*.safetensors`` (or its index) other than an adapter's is present;
    an adapter (``adapter_model.bin``) needs ``adapter_model.safetensors``. A path that is not a local folder (a Hub
    repo id) passes: loading it asks for safetensors files only.

    Example:
        ```python
        >>> refuse_pickled_weights("folder-with-only-pytorch_model.bin")
        ValueError: 'folder-with-only-pytorch_model.bin' holds its weights as pickle files (pytorch_model.bin) ...
        ```
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    model_safe = any(n.endswith((".safetensors", ".safetensors.index.json")) and not n.startswith("adapter_model")
                     for n in names)  # fmt: skip
    model_pickles = [n for n in names if not n.startswith("adapter_model")
                     and (n.endswith(PICKLE_SUFFIXES) or n.endswith(".bin.index.json"))]  # fmt: skip
    pickled = [] if model_safe else model_pickles
    if "adapter_model.bin" in names and "adapter_model.safetensors" not in names:
        pickled.append("adapter_model.bin")
    if pickled:
        raise ValueError(
            f"{where or repr(str(folder))} holds its weights as pickle files ({', '.join(pickled[:3])}) and no "
            f"safetensors file for them. {CONVERT_HINT}"
        )


def coverage_errors(info: dict, allow_mismatched_sizes: bool = False) -> list[str]:
    """The mismatches of a transformers loading report (``output_loading_info=True``), first ones first.

    ``missing``: a tensor the config's model has and the checkpoint lacks (it would be randomly initialised);
    ``unexpected``: a checkpoint tensor the model has no place for (it would be dropped); ``reshaped``: a tensor of
    another shape than the config implies.
    """
    lines = [f"missing {key}" for key in sorted(info.get("missing_keys") or ())]
    lines += [f"unexpected {key}" for key in sorted(info.get("unexpected_keys") or ())]
    if not allow_mismatched_sizes:
        for item in sorted(info.get("mismatched_keys") or (), key=str):
            key, *shapes = item if isinstance(item, (tuple, list)) else (item,)
            detail = f" (checkpoint {tuple(shapes[0])}, config {tuple(shapes[1])})" if len(shapes) == 2 else ""
            lines.append(f"reshaped {key}{detail}")
    return lines


class ClearLoadErrors:
    """Mixin for ``PreTrainedModel`` subclasses: ``from_pretrained`` that reads safetensors only, loads exactly the
    config's tensors, and raises errors that name the checkpoint.

    A base model (``Emu3LMModel``) read from a checkpoint of a model with a head ignores the head's tensors
    (``lm_head.weight``), as transformers does. ``ignore_mismatched_sizes=True`` keeps transformers' meaning (tensors
    of another shape are initialised anew, on purpose); missing and unexpected tensors are refused regardless.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        subfolder = kwargs.get("subfolder") or ""
        where = _where(pretrained_model_name_or_path, subfolder)
        if kwargs.get("use_safetensors") is False:
            raise ValueError(f"use_safetensors=False was passed to load {where}. {CONVERT_HINT}")
        if pretrained_model_name_or_path is not None and kwargs.get("state_dict") is None:
            refuse_pickled_weights(Path(pretrained_model_name_or_path) / subfolder, where)
            kwargs["use_safetensors"] = True
        want_info = kwargs.pop("output_loading_info", False)
        allow_reshape = bool(kwargs.get("ignore_mismatched_sizes", False))
        kwargs["ignore_mismatched_sizes"] = True  # report shape mismatches here, with the others, by name
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                  **kwargs)  # fmt: skip
        except SafetensorError as err:
            raise OSError(
                f"Could not read the weights in {where}: the safetensors file is truncated or corrupted ({err}). "
                "Download or copy the checkpoint again."
            ) from err
        except OSError as err:
            if "cannot be loaded with `safetensors`" not in str(err):
                raise
            raise OSError(f"{where} has no safetensors weights (model.safetensors or its index). {CONVERT_HINT}"
                          ) from err  # fmt: skip
        if not hasattr(model, model.base_model_prefix):  # a base model read from a checkpoint with a head
            ours = {name for name, _ in model.named_children()} | {model.base_model_prefix}
            kept = [key for key in info.get("unexpected_keys") or () if key.split(".")[0] in ours]
            info = {**info, "unexpected_keys": kept}
        problems = coverage_errors(info, allow_mismatched_sizes=allow_reshape)
        if problems:
            more = f", and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
            raise ValueError(
                f"The weights in {where} do not cover its config.json exactly: {'; '.join(problems[:_SHOWN])}{more}. "
                "The config belongs to another model size (layers, vocabulary or codebook): use the config saved "
                "with these weights."
            )
        return (model, info) if want_info else model


class WholeFolderSaves:
    """Mixin for ``PreTrainedModel`` subclasses: ``save_pretrained`` writes a staging folder next to the target and
    swaps it in (:func:`emu3_hf.utils.atomic.staged_folder`), so no weight file of a previous save survives and an
    interrupted save leaves the previous folder as it was. Other processes (``is_main_process=False``) and pushes
    (``push_to_hub=True``) save as transformers does."""

    @functools.wraps(PreTrainedModel.save_pretrained)  # its signature too: diffusers passes options it names
    def save_pretrained(self, save_directory, *args, **kwargs):
        if staged_folder is None or kwargs.get("push_to_hub") or kwargs.get("is_main_process", True) is False:
            return super().save_pretrained(save_directory, *args, **kwargs)
        with staged_folder(save_directory) as staging:
            return super().save_pretrained(staging, *args, **kwargs)


__all__ = ["CONVERT_HINT", "ClearLoadErrors", "WholeFolderSaves", "coverage_errors", "refuse_pickled_weights"]
