"""BAAI's image-generation recipe expressed with transformers' own ``generate``: the slow reference.

BAAI's README generates images with ``model.generate`` plus two logits processors: transformers'
``UnbatchedClassifierFreeGuidanceLogitsProcessor`` (a second, separate forward pass over the negative prompt with its
own KV cache, combined on log-softmax scores) and a ``PrefixConstrainedLogitsProcessor`` whose per-token Python
callback allows only the tokens the image layout permits. This module rebuilds that recipe on top of transformers
(the rules are restated here from their description, not copied) so that tests and benchmarks can compare the
engine against it, on our model or on transformers' native Emu3.

BAAI's per-token rule lives with the processor (:class:`~emu3_hf.processing.prefix_rules.BaaiPrefixRules`, also
behind ``Emu3MultimodalProcessor.build_prefix_constrained_fn``).

Example:
    ```python
    >>> from emu3_hf.generation.transformers_recipe import generate_with_transformers
    >>> seqs = generate_with_transformers(model, pos_ids, negative_input_ids=neg_ids, height=3, width=4,
    ...                                   do_sample=False)  # (B, L + 18) like BAAI's README output
    ```
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.generation.logits_process import (
    PrefixConstrainedLogitsProcessor,
    UnbatchedClassifierFreeGuidanceLogitsProcessor,
)

from ..processing.arguments import check_finite
from ..processing.prefix_rules import BaaiPrefixRules
from .grammar import SpecialIds, sequence_length, token_ids_from_config


@torch.no_grad()
def generate_with_transformers(
    model,
    input_ids: torch.Tensor,
    *,
    height: int | Sequence[int],
    width: int | Sequence[int],
    attention_mask: torch.Tensor | None = None,
    negative_input_ids: torch.Tensor | None = None,
    negative_attention_mask: torch.Tensor | None = None,
    guidance_scale: float = 3.0,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_k: int | None = 2048,
    top_p: float = 1.0,
    token_ids: SpecialIds | None = None,
) -> torch.Tensor:
    """Run BAAI's recipe with ``model.generate``; returns the sequences (B, L + N) (prompt + new tokens).

    Seed it with ``torch.manual_seed``: transformers' sampling uses the global generator.
    """
    for name, value in (("guidance_scale", guidance_scale), ("temperature", temperature), ("top_p", top_p)):
        check_finite(name, value)
    batch = input_ids.shape[0]
    heights = [height] * batch if isinstance(height, int) else [int(h) for h in height]
    widths = [width] * batch if isinstance(width, int) else [int(w) for w in width]
    ids = token_ids or token_ids_from_config(model.config)
    processors = LogitsProcessorList()
    if guidance_scale != 1.0:
        if negative_input_ids is None:
            raise ValueError("guidance_scale != 1 needs negative_input_ids (BAAI's unconditional prompt).")
        processors.append(
            UnbatchedClassifierFreeGuidanceLogitsProcessor(
                guidance_scale,
                model,
                unconditional_ids=negative_input_ids,
                unconditional_attention_mask=negative_attention_mask,
            )
        )
    processors.append(PrefixConstrainedLogitsProcessor(BaaiPrefixRules(ids, heights, widths), num_beams=1))
    config = GenerationConfig(
        max_new_tokens=max(sequence_length(h, w) for h, w in zip(heights, widths)),
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=(top_k or 0) if do_sample else None,
        top_p=top_p if do_sample else None,
        pad_token_id=ids.pad,
        eos_token_id=ids.eos,
        use_cache=True,
    )
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return model.generate(input_ids, attention_mask=mask, generation_config=config, logits_processor=processors)


__all__ = ["BaaiPrefixRules", "generate_with_transformers"]
