"""LoRA adapters in every Emu3 pipeline, with diffusers' method names and behaviour, through PEFT.

diffusers' own LoRA mixins are written for its UNets and transformers (and transformers' adapter methods on
``PreTrainedModel`` refuse the released PEFT versions in transformers 5.24). The LM here is a plain PyTorch module,
so this mixin works with PEFT's public building blocks directly: ``inject_adapter_in_model`` and
``set_peft_model_state_dict`` to load, and the tuner layers' own ``set_adapter`` / ``set_scale`` / ``merge`` /
``unmerge`` / ``enable_adapters`` / ``get_base_layer`` for everything else. Adapters go into the LM (``pipe.model``)
only, never the VQ, whatever their ``target_modules`` say.

Behaviour (as in diffusers): a newly loaded adapter becomes the active one; ``set_adapters`` activates several with
weights; ``fuse_lora`` folds the active adapters (times ``lora_scale``) into the base weights and ``unfuse_lora``
takes them out again (equal within float rounding); ``unload_lora_weights`` removes every adapter and gives back the
base modules themselves, so an adapter that was never fused leaves the base weights bit for bit as they were.

Example:
    ```python
    >>> pipe.load_lora_weights("me/emu3-pink-lora", adapter_name="pink")
    >>> pipe.load_lora_weights("path/to/style-lora", adapter_name="style")
    >>> pipe.set_adapters(["pink", "style"], adapter_weights=[1.0, 0.5])
    >>> pipe.fuse_lora(lora_scale=0.8); image = pipe("a small pink circle ...").images[0]; pipe.unfuse_lora()
    >>> pipe.unload_lora_weights()
    ```
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import torch
from peft import LoraConfig, PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from ..processing.arguments import as_list, check_finite

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PEFT's saved keys name modules under PeftModel's wrappers


def _adapter_folder(path_or_repo: str | os.PathLike, **hub_kwargs) -> Path:
    """A local adapter folder, or a Hub repo id fetched through huggingface_hub (safetensors only)."""
    folder = Path(path_or_repo)
    if not folder.exists():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(path_or_repo), allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS],
                                        **hub_kwargs))
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        pickled = " (it holds a pickled adapter_model.bin, which is never loaded)" if (folder / "adapter_model.bin").is_file() else ""
        raise ValueError(f"{path_or_repo} is not a PEFT adapter folder: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
                         f"{pickled}.")
    return folder


def _check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Every LoRA matrix must belong to a Linear of the LM with matching sizes: else the adapter is another base's."""
    for key, tensor in state.items():
        name = key.removeprefix(_PREFIX)
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        path = name.split(".lora_")[0]
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"The adapter at {where} adapts {path!r}, which this pipeline's LM does not have: it was "
                             "trained for another base model (or for the native layout: convert it with "
                             "`emu3 convert-lora --to emu3`).") from None
        module = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        expected = (tensor.shape[0], module.in_features) if ".lora_A." in name else (module.out_features, tensor.shape[1])
        if not isinstance(module, torch.nn.Linear) or tuple(tensor.shape) != expected:
            raise ValueError(f"The adapter at {where} does not fit this pipeline's LM: {key} has shape "
                             f"{tuple(tensor.shape)} but {path} is {module}. It was trained for another base model.")


class Emu3LoraLoaderMixin:
    """diffusers' LoRA methods for a pipeline whose LM is ``self.model``."""

    _lora_fused: tuple[list[str], float] | None = None

    # ---- state ---------------------------------------------------------------------------------------------------
    def _lora_layers(self) -> list[tuple[str, BaseTunerLayer]]:
        return [(name, m) for name, m in self.model.named_modules() if isinstance(m, BaseTunerLayer)]

    def get_list_adapters(self) -> dict[str, list[str]]:
        """The loaded adapters per component, diffusers' format: ``{"model": [names]}`` (empty dict if none)."""
        names = sorted({n for _, layer in self._lora_layers() for n in layer.lora_A})
        return {"model": names} if names else {}

    def get_active_adapters(self) -> list[str]:
        """The adapters the LM currently applies (empty when none is loaded or LoRA is disabled)."""
        layers = [layer for _, layer in self._lora_layers()]
        if not layers or layers[0].disable_adapters:
            return []
        return list(dict.fromkeys(n for layer in layers for n in layer.active_adapters))  # union, in layer order

    # ---- loading -------------------------------------------------------------------------------------------------
    def load_lora_weights(self, pretrained_model_name_or_path: str | os.PathLike, adapter_name: str | None = None,
                          **hub_kwargs) -> None:
        """Load a PEFT LoRA adapter (a folder or Hub repo id: ``adapter_config.json`` + ``adapter_model.safetensors``)
        into the LM under ``adapter_name`` (default ``default_<n>``) and make it the active adapter."""
        folder = _adapter_folder(pretrained_model_name_or_path, **hub_kwargs)
        config = PeftConfig.from_pretrained(folder)
        if not isinstance(config, LoraConfig):
            raise ValueError(f"{pretrained_model_name_or_path} holds a {type(config).__name__}; only LoRA adapters load.")
        loaded = self.get_list_adapters().get("model", [])
        name = adapter_name or f"default_{len(loaded)}"
        if name in loaded:
            raise ValueError(f"An adapter named {name!r} is already loaded; pick another adapter_name or "
                             "delete_adapters it first.")
        if self._lora_fused is not None:
            raise ValueError("Adapters are fused into the weights: call unfuse_lora() before loading another one.")
        state = load_file(str(folder / ADAPTER_WEIGHTS))
        _check_fits(self.model, state, str(pretrained_model_name_or_path))
        training = self.model.training
        with warnings.catch_warnings():  # several adapters side by side is what set_adapters is for
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            inject_adapter_in_model(config, self.model, adapter_name=name)
        self.model.train(training)  # new modules (LoRA dropout) start in training mode: give them the LM's mode
        # PEFT saves keys under PeftModel's wrappers; the LM here is not wrapped, so its names start at "model."
        state = {key.removeprefix(_PREFIX): tensor for key, tensor in state.items()}
        result = set_peft_model_state_dict(self.model, state, adapter_name=name)
        missing = [k for k in getattr(result, "missing_keys", []) if f".{name}." in k and "lora_" in k]
        if missing:
            raise ValueError(f"The adapter at {pretrained_model_name_or_path} lacks weights for {missing[:3]}...")
        self.model.to(self.model.device)
        self.set_adapters([name])

    # ---- activation and weights ----------------------------------------------------------------------------------
    def set_adapters(self, adapter_names: str | Sequence[str], adapter_weights: float | Sequence[float] | None = None):
        """Activate ``adapter_names`` together, each scaled by its weight (default 1.0)."""
        names = as_list(adapter_names)
        given = [1.0] * len(names) if adapter_weights is None else as_list(adapter_weights)
        weights = [check_finite(f"adapter_weights[{i}]", w) for i, w in enumerate(given)]
        if len(weights) == 1 and len(names) > 1:
            weights = weights * len(names)
        if len(weights) != len(names):
            raise ValueError(f"Got {len(weights)} adapter_weights for {len(names)} adapters; give one or one each.")
        loaded = self.get_list_adapters().get("model", [])
        unknown = [n for n in names if n not in loaded]
        if unknown:
            raise ValueError(f"No adapter named {unknown} is loaded; loaded: {loaded}.")
        for _, layer in self._lora_layers():
            layer.set_adapter([n for n in names if n in layer.lora_A])
            for n, w in zip(names, weights):
                if n in layer.lora_A:
                    layer.set_scale(n, w)
            layer.requires_grad_(False)  # set_adapter marks active adapters trainable; inference does not train

    def disable_lora(self) -> None:
        """Run the LM without its adapters (they stay loaded)."""
        for _, layer in self._lora_layers():
            layer.enable_adapters(False)

    def enable_lora(self) -> None:
        """Apply the active adapters again after :meth:`disable_lora`."""
        for _, layer in self._lora_layers():
            layer.enable_adapters(True)

    # ---- fusing --------------------------------------------------------------------------------------------------
    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: Sequence[str] | None = None) -> None:
        """Fold the active adapters (or ``adapter_names``), times ``lora_scale``, into the LM's base weights: the
        forward then costs what the base model's does."""
        if self._lora_fused is not None:
            raise ValueError("Adapters are already fused: call unfuse_lora() first.")
        names = list(adapter_names) if adapter_names is not None else self.get_active_adapters()
        if not names:
            raise ValueError("No active adapter to fuse: load_lora_weights / set_adapters first.")
        for _, layer in self._lora_layers():
            if lora_scale != 1.0:
                layer.scale_layer(lora_scale)
            layer.merge(adapter_names=[n for n in names if n in layer.lora_A])
        self._lora_fused = (names, lora_scale)

    def unfuse_lora(self) -> None:
        """Take the fused adapters out of the base weights again (equal to before within float rounding)."""
        if self._lora_fused is None:
            return
        _, lora_scale = self._lora_fused
        for _, layer in self._lora_layers():
            layer.unmerge()
            if lora_scale != 1.0:
                layer.unscale_layer(lora_scale)
        self._lora_fused = None

    # ---- removing ------------------------------------------------------------------------------------------------
    def delete_adapters(self, adapter_names: str | Sequence[str]) -> None:
        """Remove some adapters; removing the last one unloads LoRA entirely."""
        names = as_list(adapter_names)
        loaded = self.get_list_adapters().get("model", [])
        if any(n not in loaded for n in names):
            raise ValueError(f"Cannot delete {names}: loaded adapters are {loaded}.")
        if set(names) == set(loaded):
            self.unload_lora_weights()
            return
        self.unfuse_lora()
        for _, layer in self._lora_layers():
            for n in names:
                if n in layer.lora_A:
                    layer.delete_adapter(n)

    def unload_lora_weights(self) -> None:
        """Remove every adapter and put the LM's own Linear modules back (unfusing first if needed)."""
        self.unfuse_lora()
        for name, layer in self._lora_layers():
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, layer.get_base_layer())
        for attribute in ("peft_config", "_hf_peft_config_loaded"):
            if attribute in vars(self.model):
                delattr(self.model, attribute)


__all__ = ["Emu3LoraLoaderMixin"]
