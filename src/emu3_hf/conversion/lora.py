"""LoRA adapters (PEFT format) for Emu3: renamed between our LM and transformers' native model, and merged.

Two namings exist for the same LM modules. ``"emu3"``: our ``Emu3LMForCausalLM``, whose names are exactly BAAI's
remote code's (``model.layers.N.self_attn.q_proj``, ``lm_head``). ``"native"``: transformers'
``Emu3ForConditionalGeneration`` (``model.text_model.layers.N.self_attn.q_proj``, ``lm_head``). The weights are the
same tensors; only the names move, through the LM key table of :mod:`.native` (which raises on any name it does
not know). The adapter config keeps every field; module paths inside it (``target_modules``, ``modules_to_save``,
``rank_pattern``/``alpha_pattern`` keys, ``target_parameters``, ``trainable_token_indices``) are renamed the same
way, and suffixes such as ``"q_proj"`` stay as they are.

The native model's VQ has attention projections named ``q_proj``/``k_proj``/``v_proj`` too: an adapter whose
targets would also match those gets ``exclude_modules`` for the VQ on the way to native (removed again on the way
back), so PEFT never adapts the VQ by accident. After renaming, PEFT's own matching rules are run on both sides to
check that every adapted module is still selected, with the same rank and alpha.

Example:
    ```python
    >>> from emu3_hf.conversion import convert_lora_adapter, merge_lora
    >>> convert_lora_adapter("my-emu3-lora", "my-emu3-lora-native", to="native")
    >>> merge_lora("emu3-pipeline", "my-emu3-lora", "emu3-pipeline-merged")  # base + adapter, fused
    ```
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..modeling.loading import refuse_pickled_weights
from ..utils.adapters import PEFT_PREFIX, check_adapter_fits
from ..utils.atomic import staged_folder
from .folders import DEFAULT_MAX_SHARD_SIZE, check_output, check_shard_size
from .layouts import model_type_of, detect_layout
from .native import lm_key_to_baai, lm_key_to_native

NAMINGS = ("emu3", "native")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
NATIVE_VQ_EXCLUDE = r"model\.vqmodel\..*"
_BASE_CLASSES = {
    "emu3": {"base_model_class": "Emu3LMForCausalLM", "parent_library": "emu3_hf.modeling.modeling_emu3"},
    "native": {
        "base_model_class": "Emu3ForConditionalGeneration",
        "parent_library": "transformers.models.emu3.modeling_emu3",
    },
}
_TO_NAME = {"native": lm_key_to_native, "emu3": lm_key_to_baai}


def _check_naming(to: str) -> str:
    to = "emu3" if to == "baai" else to  # BAAI's remote-code names are ours
    if to not in NAMINGS:
        raise ValueError(f"to must be 'emu3' (our and BAAI's module names) or 'native', got {to!r}.")
    return to


def adapter_naming(keys: Iterable[str]) -> str | None:
    """``"emu3"`` or ``"native"`` from an adapter's weight keys; ``None`` when both fit (only ``lm_head``)."""
    native = ours = False
    for key in keys:
        if not key.startswith(PEFT_PREFIX):
            raise ValueError(f"{key!r} is not a PEFT adapter key (those start with {PEFT_PREFIX!r}).")
        name = key.removeprefix(PEFT_PREFIX)
        native |= name.startswith(("model.text_model.", "model.vqmodel."))
        ours |= name.startswith("model.") and not name.startswith(("model.text_model.", "model.vqmodel."))
    if native and ours:
        raise ValueError("The adapter mixes native (model.text_model.*) and emu3 (model.layers.*) module names.")
    return "native" if native else "emu3" if ours else None


def adapted_modules(keys: Iterable[str]) -> list[str]:
    """Names of the modules an adapter's LoRA weights belong to (``...q_proj`` of ``...q_proj.lora_A.weight``)."""
    found = (re.match(r"(.+?)\.lora_\w+", key.removeprefix(PEFT_PREFIX)) for key in keys)
    return sorted({match.group(1) for match in found if match})


def convert_lora_state_dict(state: dict[str, torch.Tensor], to: str) -> dict[str, torch.Tensor]:
    """Rename an adapter's weights to ``to``'s module names (same tensors); raises on a name the table lacks.

    Example:
        >>> convert_lora_state_dict({"base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": a}, "native")
        {'base_model.model.model.text_model.layers.0.mlp.up_proj.lora_A.weight': a}
    """
    rename = _TO_NAME[_check_naming(to)]
    adapter_naming(state)  # prefix and mixed-naming checks
    return {PEFT_PREFIX + rename(key.removeprefix(PEFT_PREFIX)): value for key, value in state.items()}


def _rename_entry(entry: str, to: str) -> str:
    # A full module path ("model.layers.0.self_attn.q_proj") is renamed by the table; a suffix ("q_proj",
    # "layers.0.self_attn.q_proj") selects the same modules under both namings and stays.
    return _TO_NAME[to](entry) if entry.startswith("model.") else entry


@functools.lru_cache(maxsize=1)
def _native_vq_module_names() -> tuple[str, ...]:
    """Module names of a (tiny, meta-device) native VQ: what a native-named adapter must never select."""
    from transformers import Emu3VQVAE, Emu3VQVAEConfig

    config = Emu3VQVAEConfig(codebook_size=8, base_channels=32, channel_multiplier=[1, 1], num_res_blocks=1,
                             attn_resolutions=[0, 1], hidden_size=32)  # fmt: skip
    with torch.device("meta"):
        vq = Emu3VQVAE(config)
    return tuple("model.vqmodel." + name for name, _ in vq.named_modules() if name)


def _peft_config(config: dict):
    from peft import PeftConfig

    return PeftConfig.from_peft_type(**{k: v for k, v in config.items() if k != "peft_version"})


def _selects(config, name: str) -> bool:
    from peft.tuners.tuners_utils import check_target_module_exists

    return bool(check_target_module_exists(config, name))  # an excluded module is falsy too


def _pattern_value(pattern: dict, name: str, default):
    from peft.utils.other import get_pattern_key

    return pattern.get(get_pattern_key(list(pattern), name), default) if pattern else default


def _add_vq_exclusion(config: dict) -> None:
    peft_config = _peft_config(config)
    if config.get("target_modules") is None:
        return
    if not isinstance(config["target_modules"], str) and not any(
        _selects(peft_config, name) for name in _native_vq_module_names()
    ):
        return  # these targets name no VQ module: nothing to exclude
    exclude = config.get("exclude_modules")
    if exclude is None:
        config["exclude_modules"] = NATIVE_VQ_EXCLUDE
    elif isinstance(exclude, str):
        config["exclude_modules"] = f"(?:{exclude})|{NATIVE_VQ_EXCLUDE}"
    else:
        raise ValueError(
            f"target_modules {config['target_modules']!r} also select the native model's VQ attention, which must be "
            f"excluded, but exclude_modules is a list ({exclude!r}) and a list cannot name every VQ module. Give "
            "exclude_modules as a regular expression (or full module names in target_modules) and convert again."
        )


def _drop_vq_exclusion(exclude):
    if exclude == NATIVE_VQ_EXCLUDE:
        return None
    wrapped = f")|{NATIVE_VQ_EXCLUDE}"
    if isinstance(exclude, str) and exclude.startswith("(?:") and exclude.endswith(wrapped):
        return exclude[3 : -len(wrapped)]
    if isinstance(exclude, list):  # names of native VQ modules mean nothing to an LM-only model
        return [e for e in exclude if not e.startswith("model.vqmodel.")]
    return exclude


def _verify(source: dict, target: dict, modules: list[str], to: str) -> None:
    """Run PEFT's matching on both configs: the same modules, ranks and alphas, and (native) no VQ module."""
    before, after = _peft_config(source), _peft_config(target)
    for name in modules:
        new = _TO_NAME[to](name)
        checks = (
            ("selected", _selects(before, name), _selects(after, new)),
            ("rank", _pattern_value(before.rank_pattern, name, before.r),
             _pattern_value(after.rank_pattern, new, after.r)),
            ("alpha", _pattern_value(before.alpha_pattern, name, before.lora_alpha),
             _pattern_value(after.alpha_pattern, new, after.lora_alpha)),
        )  # fmt: skip
        for what, old_value, new_value in checks:
            if old_value != new_value:
                raise ValueError(
                    f"After renaming, module {name!r} -> {new!r} has {what} {new_value!r} instead of {old_value!r}: a "
                    "target_modules / rank_pattern / alpha_pattern entry is a pattern the renaming cannot carry. Write "
                    "full module names or plain suffixes (e.g. 'q_proj') there and convert again."
                )
    if to == "native":
        leaked = [name for name in _native_vq_module_names() if _selects(after, name)]
        if leaked:
            raise ValueError(f"The converted config would also adapt native VQ modules ({leaked[:3]}); refusing.")


def convert_lora_config(config: dict, to: str, modules: list[str]) -> dict:
    """Rename the module paths in an adapter config (a dict as in ``adapter_config.json``) to ``to``'s naming.

    Args:
        config: the source adapter config.
        to: ``"native"`` or ``"emu3"``.
        modules: the adapted modules (source names), to check the result with PEFT's own matching rules.
    """
    to = _check_naming(to)
    if config.get("peft_type") != "LORA":
        raise ValueError(f"Only LoRA adapters (peft_type 'LORA') are converted; this one is {config.get('peft_type')!r}.")
    new = copy.deepcopy(config)
    for field in ("target_modules", "modules_to_save", "target_parameters"):
        if isinstance(new.get(field), list):
            new[field] = [_rename_entry(e, to) for e in new[field]]
    for field in ("rank_pattern", "alpha_pattern", "trainable_token_indices"):
        if isinstance(new.get(field), dict):
            new[field] = {_rename_entry(k, to): v for k, v in new[field].items()}
    if to == "native":
        if isinstance(new.get("exclude_modules"), list):
            new["exclude_modules"] = [_rename_entry(e, to) for e in new["exclude_modules"]]
        _add_vq_exclusion(new)
    else:
        new["exclude_modules"] = _drop_vq_exclusion(new.get("exclude_modules"))
        if isinstance(new.get("exclude_modules"), list):
            new["exclude_modules"] = [_rename_entry(e, to) for e in new["exclude_modules"]]
    if isinstance(new.get("auto_mapping"), dict):
        new["auto_mapping"] = {**new["auto_mapping"], **_BASE_CLASSES[to]}
    _verify(config, new, modules, to)
    return new


def _read_adapter(folder: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, str] | None]:
    refuse_pickled_weights(folder, f"adapter {str(folder)!r}")
    config_path, weights_path = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not folder.exists():
        raise ValueError(f"adapter {str(folder)!r}: no such folder. Give the folder holding {ADAPTER_CONFIG} and "
                         f"{ADAPTER_WEIGHTS} (PEFT's format).")
    if not config_path.is_file() or not weights_path.is_file():
        pickled = [p.name for p in folder.glob("adapter_model.bin")] if folder.is_dir() else []
        raise ValueError(
            f"adapter {str(folder)!r} must hold {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (PEFT's format)"
            + (f"; it has {pickled[0]}, which is never loaded (pickle): re-save it as safetensors." if pickled else ".")
        )
    with safe_open(str(weights_path), framework="pt") as f:
        metadata = f.metadata()
    return json.loads(config_path.read_text(encoding="utf-8")), load_file(str(weights_path)), metadata


def _write_adapter(folder: Path, config: dict, state: dict, metadata: dict | None, copy_from: Path) -> None:
    for path in copy_from.iterdir():  # README.md and anything else besides the two adapter files
        if path.name not in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) and path.is_file():
            shutil.copy2(path, folder / path.name)
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file(state, str(folder / ADAPTER_WEIGHTS), metadata=metadata)


def convert_lora_adapter(source: str | os.PathLike, output: str | os.PathLike, to: str) -> Path:
    """Write ``source``'s PEFT adapter with ``to``'s module names into the new folder ``output`` (atomically).

    Args:
        source: a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).
        output: a new (or empty) folder.
        to: ``"native"`` (transformers' ``Emu3ForConditionalGeneration``) or ``"emu3"`` (our
            ``Emu3LMForCausalLM`` and BAAI's remote code; ``"baai"`` is accepted as a synonym).

    Example:
        >>> convert_lora_adapter("lora-emu3", "lora-native", to="native")
        PosixPath('lora-native')
    """
    to = _check_naming(to)
    source, output = Path(source), Path(output)
    check_output(output)
    config, state, metadata = _read_adapter(source)
    naming = adapter_naming(state)
    if naming == to:
        raise ValueError(f"adapter {str(source)!r} already uses {to} module names; nothing to convert.")
    new_config = convert_lora_config(config, to, adapted_modules(state))
    new_state = convert_lora_state_dict(state, to)
    with staged_folder(output) as staging:
        _write_adapter(staging, new_config, new_state, metadata, source)
    return output


def _base_lm_folder(base: Path) -> Path:
    """The LM folder inside a merge base: the base itself (BAAI LM folder), ``model/`` or ``lm/``."""
    if model_type_of(base) == "Emu3":
        return Path(".")
    layout = detect_layout(base)
    if layout == "pipeline":
        return Path("model")
    if layout == "baai":
        return Path("lm")
    raise ValueError(
        f"merge-lora takes a BAAI LM folder or an emu3-hf pipeline folder as its base; {base} is a {layout} "
        "checkpoint. Convert it first (emu3 convert BASE --to pipeline -o DIR), merge, and convert back."
    )


def _weight_files(folder: Path) -> list[Path]:
    pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    if pickled:
        raise ValueError(f"{folder} holds pickled weights ({pickled[:3]}); merge-lora reads safetensors only.")
    return [p for p in folder.iterdir() if re.fullmatch(r"model(-\d+-of-\d+)?\.safetensors(\.index\.json)?", p.name)]


def merge_lora(
    base: str | os.PathLike,
    adapter: str | os.PathLike,
    output: str | os.PathLike,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Fuse a LoRA adapter into a copy of its base checkpoint: ``output`` has the base's layout and files, with
    the LM's weights replaced by ``W + scale * B @ A`` (PEFT's ``merge_and_unload``, computed in float32 and
    stored in the base's dtype). Nothing is written unless the merge succeeded.

    Args:
        base: a BAAI LM folder, a folder with BAAI's ``lm/`` + ``vq/``, or an emu3-hf pipeline folder.
        adapter: a PEFT adapter folder with emu3 (= BAAI) or native module names.
        output: a new (or empty) folder.
        max_shard_size: largest safetensors shard of the merged LM.

    Example:
        >>> merge_lora("emu3-pipeline", "my-lora", "emu3-pipeline-merged")
        >>> Emu3Pipeline.from_pretrained("emu3-pipeline-merged")   # loads like the base
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from huggingface_hub import save_torch_state_dict

    from ..modeling import Emu3LMForCausalLM

    check_shard_size(max_shard_size)
    base, adapter, output = Path(base), Path(adapter), Path(output)
    where = adapter
    if not base.is_dir():
        raise ValueError(f"base {str(base)!r} is not a folder (a BAAI LM folder or an emu3-hf pipeline folder).")
    check_output(output)
    lm_rel = _base_lm_folder(base)
    old_files = {p.name for p in _weight_files(base / lm_rel)}
    config, state, _ = _read_adapter(adapter)
    modules = adapted_modules(state)
    with tempfile.TemporaryDirectory(prefix="emu3-lora-") as tmp:
        if adapter_naming(state) == "native":
            adapter = convert_lora_adapter(adapter, Path(tmp) / "adapter", to="emu3")
            modules = [lm_key_to_baai(m) for m in modules]
            state = convert_lora_state_dict(state, "emu3")
        model = Emu3LMForCausalLM.from_pretrained(base / lm_rel, dtype="auto")
        stored_dtype, keys = model.dtype, set(model.state_dict())
        check_adapter_fits(model, state, str(where))
        try:
            peft_model = PeftModel.from_pretrained(model.float(), adapter)
        except RuntimeError as err:  # PEFT reports shape mismatches this way
            raise ValueError(f"adapter {str(adapter)!r} does not fit the base in {base}: {err}") from err
        injected = {n for n, m in peft_model.base_model.model.named_modules() if isinstance(m, LoraLayer)}
        if not set(modules) <= injected:
            raise ValueError(
                f"adapter {str(adapter)!r} was made for another model: it adapts "
                f"{sorted(set(modules) - injected)[:3]}, "
                f"which the LM in {base / lm_rel} does not have (or its target_modules do not select them)."
            )
        merged = peft_model.merge_and_unload().to(stored_dtype)
    merged_state = merged.state_dict()
    if set(merged_state) != keys:
        raise RuntimeError(f"Merging changed the LM's parameter names: {sorted(set(merged_state) ^ keys)[:5]}")

    def skip_old_weights(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n in old_files] if Path(folder).resolve() == (base / lm_rel).resolve() else []

    with staged_folder(output) as staging:
        shutil.copytree(base, staging, ignore=skip_old_weights, dirs_exist_ok=True)
        save_torch_state_dict(merged_state, staging / lm_rel, max_shard_size=max_shard_size, metadata={"format": "pt"})
    return output


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "NAMINGS",
    "NATIVE_VQ_EXCLUDE",
    "adapted_modules",
    "adapter_naming",
    "convert_lora_adapter",
    "convert_lora_config",
    "convert_lora_state_dict",
    "merge_lora",
]
