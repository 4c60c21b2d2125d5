"""Registration with transformers' Auto classes (runs once, on ``import emu3_hf``).

BAAI's folders say ``model_type: "Emu3"`` / ``"Emu3VisionVQ"`` and name ``Emu3Tokenizer`` and
``Emu3VisionVQImageProcessor``; registering our classes under exactly those keys makes every Auto class resolve
them locally, without ``trust_remote_code``. transformers' own ``"emu3"`` model type is left untouched.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from .modeling import Emu3LMConfig, Emu3LMForCausalLM, Emu3LMModel, Emu3VisionVQConfig, Emu3VisionVQModel
from .processing import Emu3MultimodalProcessor, Emu3Tokenizer, Emu3VisionVQImageProcessor

_done = False


def register_auto_classes() -> None:
    """Register the Emu3 classes with the Auto classes; idempotent."""
    global _done
    if _done:
        return
    AutoConfig.register(Emu3LMConfig.model_type, Emu3LMConfig, exist_ok=True)
    AutoModel.register(Emu3LMConfig, Emu3LMModel, exist_ok=True)
    AutoModelForCausalLM.register(Emu3LMConfig, Emu3LMForCausalLM, exist_ok=True)
    AutoConfig.register(Emu3VisionVQConfig.model_type, Emu3VisionVQConfig, exist_ok=True)
    AutoModel.register(Emu3VisionVQConfig, Emu3VisionVQModel, exist_ok=True)
    AutoTokenizer.register(Emu3LMConfig, fast_tokenizer_class=Emu3Tokenizer, exist_ok=True)
    AutoImageProcessor.register(
        Emu3VisionVQConfig, slow_image_processor_class=Emu3VisionVQImageProcessor, exist_ok=True
    )
    AutoProcessor.register(Emu3LMConfig, Emu3MultimodalProcessor, exist_ok=True)
    _done = True
