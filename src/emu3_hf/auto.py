"""Registration with transformers' Auto classes: plain ``register`` calls, made once by ``import emu3_hf``.

BAAI's folders say ``model_type: "Emu3"`` / ``"Emu3VisionVQ"`` and name ``Emu3Tokenizer`` and
``Emu3VisionVQImageProcessor``; registering our classes under exactly those keys makes every Auto class resolve
them locally, without ``trust_remote_code``. transformers' own ``"emu3"`` model type is left untouched.

Why at package import, and what it costs: an Auto class can only be given a class, so registering needs our config,
model, tokenizer, image-processor and processor classes, hence ``torch`` and ``transformers.modeling_utils``, and
transformers offers no lazy registration. Registering later (on first use of a subpackage) would leave
``import emu3_hf; AutoModelForCausalLM.from_pretrained(baai_dir)`` to fail, and waiting for transformers to import its
Auto modules would take an import hook. So ``import emu3_hf`` registers everything at once; it costs what loading any
Emu3 model costs anyway (torch and transformers' model base, a few seconds; BENCHMARKS.md), while diffusers, peft,
datasets and our pipelines, training, conversion and hub code load only on first use.
"""

from __future__ import annotations


def register_auto_classes() -> None:
    """Register the Emu3 classes with ``AutoConfig``, ``AutoModel``, ``AutoModelForCausalLM``, ``AutoTokenizer``,
    ``AutoImageProcessor`` and ``AutoProcessor``. ``import emu3_hf`` has already called it; calling it again is
    harmless (every registration is idempotent).

    Example:
        ```python
        >>> import emu3_hf
        >>> from transformers import CONFIG_MAPPING
        >>> CONFIG_MAPPING["Emu3"].__name__
        'Emu3LMConfig'
        ```
    """
    from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor,
                              AutoTokenizer)  # fmt: skip

    from .modeling.configuration_emu3 import Emu3LMConfig
    from .modeling.configuration_emu3visionvq import Emu3VisionVQConfig
    from .modeling.modeling_emu3 import Emu3LMForCausalLM, Emu3LMModel
    from .modeling.modeling_emu3visionvq import Emu3VisionVQModel
    from .processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
    from .processing.processing_emu3 import Emu3MultimodalProcessor
    from .processing.tokenization_emu3 import Emu3Tokenizer

    AutoConfig.register(Emu3LMConfig.model_type, Emu3LMConfig, exist_ok=True)
    AutoConfig.register(Emu3VisionVQConfig.model_type, Emu3VisionVQConfig, exist_ok=True)
    AutoModel.register(Emu3LMConfig, Emu3LMModel, exist_ok=True)
    AutoModelForCausalLM.register(Emu3LMConfig, Emu3LMForCausalLM, exist_ok=True)
    AutoModel.register(Emu3VisionVQConfig, Emu3VisionVQModel, exist_ok=True)
    AutoTokenizer.register(Emu3LMConfig, fast_tokenizer_class=Emu3Tokenizer, exist_ok=True)
    AutoImageProcessor.register(Emu3VisionVQConfig, slow_image_processor_class=Emu3VisionVQImageProcessor,
                                exist_ok=True)  # fmt: skip
    AutoProcessor.register(Emu3LMConfig, Emu3MultimodalProcessor, exist_ok=True)


__all__ = ["register_auto_classes"]
