"""Registration with transformers' Auto classes (runs once, on ``import emu3_hf``).

BAAI's folders say ``model_type: "Emu3"`` / ``"Emu3VisionVQ"`` and name ``Emu3Tokenizer`` and
``Emu3VisionVQImageProcessor``; registering our classes under exactly those keys makes every Auto class resolve
them locally, without ``trust_remote_code``. transformers' own ``"emu3"`` model type is left untouched.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .modeling import Emu3LMConfig, Emu3LMForCausalLM, Emu3LMModel, Emu3VisionVQConfig, Emu3VisionVQModel

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
    _done = True
