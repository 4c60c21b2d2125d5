"""The one Emu3 generation engine: vision-token grammar, classifier-free guidance, sampling, KV caches.

Example:
    ```python
    >>> from emu3_hf.generation import generate_image_tokens
    >>> out = generate_image_tokens(model, prompt_ids, negative_input_ids=negative_ids, height=32, width=32)
    >>> out.codes.shape  # (B, 32, 32), decode with the VQ
    ```
"""

from .engine import (
    ImageTokensOutput,
    RowProgress,
    RowUpdate,
    build_guidance_batch,
    decode_step,
    generate_image_tokens,
    prefill,
    visual_logits,
)
from .grammar import SAMPLE, SpecialIds, VisionGrammar, sequence_length, token_ids_from_config
from .sampling import PositionNoise, SamplingConfig, filter_top_k, filter_top_p, guided_scores, pick_tokens

__all__ = [
    "SAMPLE",
    "ImageTokensOutput",
    "PositionNoise",
    "RowProgress",
    "RowUpdate",
    "SamplingConfig",
    "VisionGrammar",
    "SpecialIds",
    "build_guidance_batch",
    "decode_step",
    "filter_top_k",
    "filter_top_p",
    "generate_image_tokens",
    "guided_scores",
    "pick_tokens",
    "prefill",
    "sequence_length",
    "token_ids_from_config",
    "visual_logits",
]
