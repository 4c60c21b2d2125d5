"""Conversion between BAAI's layout (emu3-hf's in-memory format) and transformers' native Emu3 layout."""

from .native import (
    convert_baai_to_native,
    convert_native_to_baai,
    default_vocabulary_map,
    native_config_from_baai,
    vq_key_to_baai,
    vq_key_to_native,
)

__all__ = [
    "convert_baai_to_native",
    "convert_native_to_baai",
    "default_vocabulary_map",
    "native_config_from_baai",
    "vq_key_to_baai",
    "vq_key_to_native",
]
