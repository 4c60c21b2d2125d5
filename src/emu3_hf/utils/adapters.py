"""Checks on PEFT LoRA adapters before they touch a model (shared by the pipelines' ``load_lora_weights`` and by
:func:`~emu3_hf.conversion.merge_lora`).

Example:
    ```python
    >>> from safetensors.torch import load_file
    >>> from emu3_hf.utils.adapters import check_adapter_fits
    >>> check_adapter_fits(lm, load_file("my-lora/adapter_model.safetensors"), "my-lora")
    ```
"""

from __future__ import annotations

import torch

PEFT_PREFIX = "base_model.model."
"""The prefix PEFT saves every adapter key under (the adapter name stripped)."""


def check_adapter_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse, in one short message, an adapter whose LoRA matrices do not fit ``model`` (an LM with emu3 names).

    Every ``lora_A`` / ``lora_B`` weight must belong to a ``Linear`` of the model with matching sizes; the first one
    that does not is named with both shapes, before anything is injected or merged. ``model`` may already hold PEFT
    layers (their base layer is checked).

    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for key, tensor in state.items():
        name = key.removeprefix(PEFT_PREFIX)
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        path = name.split(".lora_")[0]
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"The adapter at {where} was made for another model: it adapts {path!r}, which this LM "
                             "does not have (an adapter for transformers' native layout converts with "
                             "`emu3 convert-lora --to emu3`).") from None
        module = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(f"The adapter at {where} does not fit this LM: it adapts {path!r}, which is a "
                             f"{type(module).__name__}, not a Linear. It was trained for another base model.")
        lora_a = ".lora_A." in name
        expected = (tensor.shape[0], module.in_features) if lora_a else (module.out_features, tensor.shape[1])
        if tuple(tensor.shape) != expected:
            raise ValueError(f"The adapter at {where} does not fit this LM: {path} is Linear(in={module.in_features}, "
                             f"out={module.out_features}) but the adapter's lora_{'A' if lora_a else 'B'} there has "
                             f"shape {tuple(tensor.shape)} (expected {expected}). It was trained for another base "
                             "model.")


__all__ = ["PEFT_PREFIX", "check_adapter_fits"]
