"""Tokenizer, image processor and the multimodal processor (prompt layouts and their inverse)."""

from .image_processing_emu3visionvq import Emu3VisionVQImageProcessor
from .layout import SpecialIds, split_segments, vision_block_ids
from .processing_emu3 import (
    DEFAULT_CHAT_TEMPLATE,
    Emu3MultimodalProcessor,
    calculate_generate_size,
    special_ids_from_tokenizer,
)
from .tokenization_emu3 import Emu3Tokenizer, build_emu3_tokenizer

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "Emu3MultimodalProcessor",
    "Emu3Tokenizer",
    "Emu3VisionVQImageProcessor",
    "SpecialIds",
    "build_emu3_tokenizer",
    "calculate_generate_size",
    "special_ids_from_tokenizer",
    "split_segments",
    "vision_block_ids",
]
