"""Model and config classes: the Emu3 LM and the Emu3 VQ vision tokenizer (torch + transformers only).

The names load on first access: the configs need only ``transformers.configuration_utils``, the models
``transformers.modeling_utils`` (seconds to import), so reading a config does not pay for the models.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_attributes(
    globals(),
    {
        "Emu3LMConfig": ".configuration_emu3",
        "Emu3VisionVQConfig": ".configuration_emu3visionvq",
        "Emu3LMForCausalLM": ".modeling_emu3",
        "Emu3LMModel": ".modeling_emu3",
        "Emu3LMPreTrainedModel": ".modeling_emu3",
        "Emu3VisionVQModel": ".modeling_emu3visionvq",
        "Emu3VisionVQPreTrainedModel": ".modeling_emu3visionvq",
    },
)
