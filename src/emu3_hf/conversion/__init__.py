"""Conversion between Emu3's layouts: BAAI's folders, emu3-hf pipeline folders and transformers' native port.

- In memory (:mod:`.native`): :func:`convert_baai_to_native` / :func:`convert_native_to_baai` and the key tables
  (:func:`lm_key_to_native`, :func:`vq_key_to_native` and their inverses).
- Folders (:mod:`.layouts`, :mod:`.folders`, :mod:`.validate`): :func:`convert_checkpoint` between every pair of
  layouts, written atomically, with an optional numerical validation (:func:`compare_checkpoints`).
- LoRA adapters (:mod:`.lora`): :func:`convert_lora_adapter` between our (= BAAI's) module names and the native
  model's; :func:`merge_lora` fuses an adapter into a copy of its base checkpoint.

The ``emu3 convert``, ``emu3 convert-lora`` and ``emu3 merge-lora`` commands wrap these functions.
"""

from .folders import DEFAULT_MAX_SHARD_SIZE, ConversionResult, convert_checkpoint
from .layouts import (
    LAYOUTS,
    BaaiFolders,
    Emu3Checkpoint,
    detect_layout,
    load_checkpoint,
    save_checkpoint,
)
from .lora import (
    NATIVE_VQ_EXCLUDE,
    adapted_modules,
    adapter_naming,
    check_adapter_fits,
    convert_lora_adapter,
    convert_lora_config,
    convert_lora_state_dict,
    merge_lora,
)
from .native import (
    baai_configs_from_native,
    baai_state_dicts_from_native,
    convert_baai_to_native,
    convert_native_to_baai,
    default_vocabulary_map,
    lm_key_to_baai,
    lm_key_to_native,
    native_config_from_baai,
    native_state_dict_from_baai,
    vq_key_to_baai,
    vq_key_to_native,
)
from .validate import ConversionValidationError, ValidationReport, compare_checkpoints

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "LAYOUTS",
    "NATIVE_VQ_EXCLUDE",
    "BaaiFolders",
    "ConversionResult",
    "ConversionValidationError",
    "Emu3Checkpoint",
    "ValidationReport",
    "adapted_modules",
    "adapter_naming",
    "check_adapter_fits",
    "baai_configs_from_native",
    "baai_state_dicts_from_native",
    "compare_checkpoints",
    "convert_baai_to_native",
    "convert_checkpoint",
    "convert_lora_adapter",
    "convert_lora_config",
    "convert_lora_state_dict",
    "convert_native_to_baai",
    "default_vocabulary_map",
    "detect_layout",
    "lm_key_to_baai",
    "lm_key_to_native",
    "load_checkpoint",
    "merge_lora",
    "native_config_from_baai",
    "native_state_dict_from_baai",
    "save_checkpoint",
    "vq_key_to_baai",
    "vq_key_to_native",
]
