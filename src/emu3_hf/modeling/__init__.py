"""Model and config classes: the Emu3 LM and the Emu3 VQ vision tokenizer (torch + transformers only)."""

from .configuration_emu3 import Emu3LMConfig
from .modeling_emu3 import Emu3LMForCausalLM, Emu3LMModel, Emu3LMPreTrainedModel

__all__ = ["Emu3LMConfig", "Emu3LMForCausalLM", "Emu3LMModel", "Emu3LMPreTrainedModel"]
