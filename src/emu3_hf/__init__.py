"""emu3-hf: BAAI's Emu3 for the Hugging Face ecosystem.

Importing the package registers its classes with transformers' Auto classes, so BAAI's Hub folders load with
``AutoModelForCausalLM.from_pretrained(...)`` and friends, without ``trust_remote_code``.
"""

from .auto import register_auto_classes
from .modeling import (
    Emu3LMConfig,
    Emu3LMForCausalLM,
    Emu3LMModel,
    Emu3LMPreTrainedModel,
    Emu3VisionVQConfig,
    Emu3VisionVQModel,
)
from .processing import (
    Emu3MultimodalProcessor,
    Emu3Tokenizer,
    Emu3VisionVQImageProcessor,
    build_emu3_tokenizer,
    calculate_generate_size,
)

# BAAI's README imports `Emu3Processor`; the class itself has another name so it never shadows transformers'.
Emu3Processor = Emu3MultimodalProcessor

register_auto_classes()

# The pipelines need diffusers, which model-only users never import: load them on first access (PEP 562).
_LAZY = {"Emu3ChatPipeline", "Emu3Pipeline", "Emu3VideoPipeline"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'emu3_hf' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "Emu3LMConfig",
    "Emu3LMForCausalLM",
    "Emu3LMModel",
    "Emu3LMPreTrainedModel",
    "Emu3VisionVQConfig",
    "Emu3VisionVQModel",
    "Emu3ChatPipeline",
    "Emu3MultimodalProcessor",
    "Emu3Pipeline",
    "Emu3VideoPipeline",
    "Emu3Processor",
    "Emu3Tokenizer",
    "Emu3VisionVQImageProcessor",
    "build_emu3_tokenizer",
    "calculate_generate_size",
    "register_auto_classes",
]
