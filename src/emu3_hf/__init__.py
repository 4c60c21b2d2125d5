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

register_auto_classes()

__version__ = "0.1.0"

__all__ = [
    "Emu3LMConfig",
    "Emu3LMForCausalLM",
    "Emu3LMModel",
    "Emu3LMPreTrainedModel",
    "Emu3VisionVQConfig",
    "Emu3VisionVQModel",
    "register_auto_classes",
]
