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
base modules themselves, with whatever is fused still in their weights: an adapter that was never fused leaves the
base weights bit for bit as they were, and diffusers' recipe "load, fuse, unload, save" saves the fused model.
Weights and scales must be finite numbers: NaN or infinity is refused before any weight is touched.

Example:
    ```python
    >>> pipe.load_lora_weights("me/emu3-pink-lora", adapter_name="pink")
    >>> pipe.load_lora_weights("path/to/style-lora", adapter_name="style")
    >>> pipe.set_adapters(["pink", "style"], adapter_weights=[1.0, 0.5])
    >>> pipe.fuse_lora(lora_scale=0.8); image = pipe("a small pink circle ...").images[0]; pipe.unfuse_lora()
    >>> pipe.fuse_lora(); pipe.unload_lora_weights(); pipe.save_pretrained("emu3-pink-fused")  # the fused model
    ```
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from peft import LoraConfig, PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from ..modeling.loading import refuse_pickled_weights
from ..utils.adapters import check_adapter_fits
from ..processing.arguments import as_list, check_finite

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PEFT's saved keys name modules under PeftModel's wrappers


def _adapter_folder(path_or_repo: str | os.PathLike, **hub_kwargs) -> Path:
    """A local adapter folder, or a Hub repo id fetched through huggingface_hub (safetensors only)."""
    folder = Path(path_or_repo)
    if not folder.exists():
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(str(path_or_repo))
        except HFValidationError:  # not a repo id either: say what is missing, not how repo ids are spelled
            raise ValueError(f"pretrained_model_name_or_path {str(path_or_repo)!r}: no such folder (and not a Hub "
                             "repo id such as 'user/name'). Give the folder holding adapter_config.json and "
                             "adapter_model.safetensors.") from None
        folder = Path(snapshot_download(str(path_or_repo), allow_patterns=[ADAPTER_CONFIG, ADAPTER_WEIGHTS],
                                        **hub_kwargs))
    refuse_pickled_weights(folder, f"adapter {str(path_or_repo)!r}")
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        pickled = " (it holds a pickled adapter_model.bin, which is never loaded)" if (folder / "adapter_model.bin").is_file() else ""
        raise ValueError(f"{path_or_repo} is not a PEFT adapter folder: it needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
                         f"{pickled}.")
    return folder


class Emu3LoraLoaderMixin:
    """diffusers' LoRA methods for a pipeline whose LM is ``self.model``."""

    # (fused adapter names, lora_scale, each layer's scaling before fusing), or None when nothing is fused
    _lora_fused: tuple[list[str], float, dict[str, dict[str, float]]] | None = None

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
        check_adapter_fits(self.model, state, str(pretrained_model_name_or_path))
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
        """Activate ``adapter_names`` together, each scaled by its weight (default 1.0; ``None`` also means 1.0, as in
        diffusers). Weights must be finite."""
        names = as_list(adapter_names)
        weights = [1.0] * len(names) if adapter_weights is None else as_list(adapter_weights)
        weights = [1.0 if w is None else check_finite(f"adapter_weights[{i}]", w) for i, w in enumerate(weights)]  # None: 1
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
    @property
    def fused_loras(self) -> set[str]:
        """Names of the adapters fused into the LM's weights (diffusers' property)."""
        return set(self._lora_fused[0]) if self._lora_fused is not None else set()

    @property
    def num_fused_loras(self) -> int:
        """How many adapters are fused into the LM's weights (diffusers' property)."""
        return len(self.fused_loras)

    def fuse_lora(self, lora_scale: float = 1.0, adapter_names: Sequence[str] | None = None,
                  safe_fusing: bool = False) -> None:
        """Fold the active adapters (or ``adapter_names``), times ``lora_scale``, into the LM's base weights: the
        forward then costs what the base model's does. As in diffusers, the fused weights are
        ``W + lora_scale * weight * alpha / r * B @ A`` per adapter (``weight`` from :meth:`set_adapters`);
        ``safe_fusing=True`` checks each fused weight for NaN first (PEFT's ``safe_merge``)."""
        lora_scale = check_finite("lora_scale", lora_scale)
        if self._lora_fused is not None:
            raise ValueError("Adapters are already fused: call unfuse_lora() first.")
        names = as_list(adapter_names) if adapter_names is not None else self.get_active_adapters()
        if not names:
            raise ValueError("No active adapter to fuse: load_lora_weights / set_adapters first.")
        loaded = self.get_list_adapters().get("model", [])
        unknown = [n for n in names if n not in loaded]
        if unknown:
            raise ValueError(f"adapter_names {unknown} are not loaded; loaded: {loaded}.")
        layers = self._lora_layers()
        scalings = {name: dict(layer.scaling) for name, layer in layers}
        for _, layer in layers:
            layer.scale_layer(lora_scale)  # the active adapters' scales, as diffusers does
            layer.merge(safe_merge=safe_fusing, adapter_names=[n for n in names if n in layer.lora_A])
        self._lora_fused = (names, lora_scale, scalings)

    def unfuse_lora(self) -> None:
        """Take the fused adapters out of the base weights again (equal to before within float rounding) and give the
        adapters back the scales they had before :meth:`fuse_lora`."""
        if self._lora_fused is None:
            return
        _, _, scalings = self._lora_fused
        for name, layer in self._lora_layers():
            layer.unmerge()
            layer.scaling.update(scalings.get(name, {}))
        self._lora_fused = None

    # ---- removing ------------------------------------------------------------------------------------------------
    def delete_adapters(self, adapter_names: str | Sequence[str]) -> None:
        """Remove some adapters (unfusing first); removing the last one unloads LoRA entirely."""
        names = as_list(adapter_names)
        loaded = self.get_list_adapters().get("model", [])
        if any(n not in loaded for n in names):
            raise ValueError(f"Cannot delete {names}: loaded adapters are {loaded}.")
        self.unfuse_lora()  # deleting takes an adapter's effect away, fused or not
        if set(names) == set(loaded):
            self.unload_lora_weights()
            return
        for _, layer in self._lora_layers():
            for n in names:
                if n in layer.lora_A:
                    layer.delete_adapter(n)

    def unload_lora_weights(self) -> None:
        """Remove every adapter and put the LM's own Linear modules back. Fused adapters stay in their weights (as in
        diffusers, whose "load, fuse, unload, save" recipe saves the fused model): call :meth:`unfuse_lora` first to
        get the base weights back."""
        self._lora_fused = None  # what is fused is now part of the base weights
        for name, layer in self._lora_layers():
            parent, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, child, layer.get_base_layer())
        for attribute in ("peft_config", "_hf_peft_config_loaded"):
            if attribute in vars(self.model):
                delattr(self.model, attribute)


__all__ = ["Emu3LoraLoaderMixin"]
