"""Model and config classes: the Emu3 LM and the Emu3 VQ vision tokenizer (torch + transformers only)."""

from .configuration_emu3 import Emu3LMConfig
from .configuration_emu3visionvq import Emu3VisionVQConfig
from .modeling_emu3 import Emu3LMForCausalLM, Emu3LMModel, Emu3LMPreTrainedModel
from .modeling_emu3visionvq import Emu3VisionVQModel, Emu3VisionVQPreTrainedModel

__all__ = [
    "Emu3LMConfig",
    "Emu3LMForCausalLM",
    "Emu3LMModel",
    "Emu3LMPreTrainedModel",
    "Emu3VisionVQConfig",
    "Emu3VisionVQModel",
    "Emu3VisionVQPreTrainedModel",
]
