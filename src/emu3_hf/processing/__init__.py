"""Tokenizer, image processor and the multimodal processor (prompt layouts and their inverse).

The names load on first access: the image processor and the processor need ``transformers.processing_utils``
(which imports ``transformers.modeling_utils``, seconds to import); the tokenizer does not.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_attributes(
    globals(),
    {
        "DEFAULT_CHAT_TEMPLATE": ".processing_emu3",
        "Emu3MultimodalProcessor": ".processing_emu3",
        "calculate_generate_size": ".processing_emu3",
        "special_ids_from_tokenizer": ".processing_emu3",
        "Emu3Tokenizer": ".tokenization_emu3",
        "build_emu3_tokenizer": ".tokenization_emu3",
        "Emu3VisionVQImageProcessor": ".image_processing_emu3visionvq",
        "SpecialIds": ".layout",
        "split_segments": ".layout",
        "vision_block_ids": ".layout",
    },
)
