"""emu3-hf: BAAI's Emu3 for the Hugging Face ecosystem.

Importing the package registers its classes with transformers' Auto classes (plain ``register`` calls, see
:mod:`emu3_hf.auto`), so BAAI's Hub folders load with ``AutoModelForCausalLM.from_pretrained(...)`` and friends,
without ``trust_remote_code``, whether transformers was imported before or after. That needs torch and transformers'
model base; everything else (the pipelines and diffusers, training, conversion, peft, datasets) loads on first access
of its name (PEP 562).
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from .auto import register_auto_classes

if TYPE_CHECKING:
    from .modeling.configuration_emu3 import Emu3LMConfig
    from .modeling.configuration_emu3visionvq import Emu3VisionVQConfig
    from .modeling.modeling_emu3 import Emu3LMForCausalLM, Emu3LMModel, Emu3LMPreTrainedModel
    from .modeling.modeling_emu3visionvq import Emu3VisionVQModel
    from .pipelines import Emu3ChatPipeline, Emu3Pipeline, Emu3VideoPipeline
    from .processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
    from .processing.processing_emu3 import Emu3MultimodalProcessor, calculate_generate_size
    from .processing.processing_emu3 import Emu3MultimodalProcessor as Emu3Processor
    from .processing.tokenization_emu3 import Emu3Tokenizer, build_emu3_tokenizer

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

__getattr__, __dir__ = lazy_attributes(
    globals(),
    {
        "Emu3LMConfig": ".modeling.configuration_emu3",
        "Emu3VisionVQConfig": ".modeling.configuration_emu3visionvq",
        "Emu3LMForCausalLM": ".modeling.modeling_emu3",
        "Emu3LMModel": ".modeling.modeling_emu3",
        "Emu3LMPreTrainedModel": ".modeling.modeling_emu3",
        "Emu3VisionVQModel": ".modeling.modeling_emu3visionvq",
        "Emu3MultimodalProcessor": ".processing.processing_emu3",
        # BAAI's README imports `Emu3Processor`; the class itself has another name so it never shadows transformers'.
        "Emu3Processor": ".processing.processing_emu3:Emu3MultimodalProcessor",
        "calculate_generate_size": ".processing.processing_emu3",
        "Emu3Tokenizer": ".processing.tokenization_emu3",
        "build_emu3_tokenizer": ".processing.tokenization_emu3",
        "Emu3VisionVQImageProcessor": ".processing.image_processing_emu3visionvq",
        # The pipelines need diffusers, which model-only users never import.
        "Emu3ChatPipeline": ".pipelines",
        "Emu3Pipeline": ".pipelines",
        "Emu3VideoPipeline": ".pipelines",
    },
)

register_auto_classes()
