"""The LM steps every decoding scheme is built from (gpt-fast style): :func:`prefill`, :func:`decode_window` /
:func:`decode_step` (compilable: :func:`compiled_decode_step`) and :func:`visual_logits`, the LM head over the
codebook's rows only. :mod:`.engine` (sequential decoding) and :mod:`.parallel` (Jacobi windows) both call them.

Example:
    ```python
    >>> from emu3_hf.generation.steps import decode_step, prefill
    >>> hidden = prefill(lm.model, ids, mask, cache, mask_length=ids.shape[1])  # (B2, D)
    ```
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.cache_utils import Cache

from .grammar import SpecialIds

# ---- the building blocks -------------------------------------------------------------------------------------


def prefill(
    decoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Cache, mask_length: int
) -> torch.Tensor:
    """Run the prompts (B2, L) through the decoder, filling ``cache``; returns the last hidden state (B2, D).

    Positions follow the mask (``cumsum - 1``) so left-padded rows start at 0; ``mask_length`` >= L is the key
    length the cache will attend over (static caches: their full size, with the future slots masked).
    """
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)  # (B2, L)
    key_mask = torch.zeros(attention_mask.shape[0], mask_length, dtype=attention_mask.dtype, device=attention_mask.device)
    key_mask[:, : attention_mask.shape[1]] = attention_mask
    out = decoder(
        input_ids=input_ids, attention_mask=key_mask, position_ids=positions, cache=cache, use_cache=True
    )
    return out.last_hidden_state[:, -1]  # (B2, D): left padding puts every row's last token at -1


def decode_window(
    decoder: nn.Module,
    tokens: torch.Tensor,  # (B2, n)
    positions: torch.Tensor,  # (B2, n)
    cache: Cache,
    attention_mask: torch.Tensor | None,  # (B2, 1, n, kv) additive, (B2, kv) 2-D, or None (no padding, dynamic)
) -> torch.Tensor:
    """Feed ``n`` tokens per row through the decoder (appending to ``cache``); returns their hidden states
    (B2, n, D). Pure tensor code with fixed shapes under a static cache, so it can be ``torch.compile``'d."""
    out = decoder(
        input_ids=tokens, attention_mask=attention_mask, position_ids=positions, cache=cache, use_cache=True
    )
    return out.last_hidden_state


def decode_step(
    decoder: nn.Module,
    tokens: torch.Tensor,  # (B2, 1)
    positions: torch.Tensor,  # (B2, 1)
    cache: Cache,
    attention_mask: torch.Tensor | None,  # (B2, 1, 1, kv) additive, (B2, kv) 2-D, or None (no padding, dynamic)
) -> torch.Tensor:
    """Feed one token per row through the decoder (appending to ``cache``); returns the hidden state (B2, D)."""
    return decode_window(decoder, tokens, positions, cache, attention_mask)[:, -1]


_COMPILED_STEPS: dict[tuple, Callable] = {}  # one torch.compile wrapper per (function, mode); graphs per shape


def compiled_decode_step(device: torch.device, function: Callable = decode_step) -> Callable:
    """:func:`decode_step` (or :func:`decode_window`) under ``torch.compile(fullgraph=True)``: CUDA graphs
    (``mode="reduce-overhead"``) on a GPU, plain inductor elsewhere. Needs the static cache (fixed shapes); prefill
    stays eager.

    Each call starts a new CUDA-graph step and clones the output, which the next replay would overwrite.
    """
    key = (function, "reduce-overhead" if device.type == "cuda" else "default")
    if key not in _COMPILED_STEPS:
        compiled = torch.compile(function, mode=key[1], fullgraph=True)

        def step(*args):
            torch.compiler.cudagraph_mark_step_begin()
            return compiled(*args).clone()

        _COMPILED_STEPS[key] = step
    return _COMPILED_STEPS[key]


def visual_logits(hidden: torch.Tensor, head: nn.Linear, ids: SpecialIds) -> torch.Tensor:
    """LM-head logits of the visual tokens only: (B2, D) @ W[offset:offset+K].T -> (B2, K).

    A head split by tensor parallelism (a DTensor weight, transformers' ``tp_plan``) runs whole through its own
    hooks (each process its vocabulary shard, logits gathered) and the visual slice is taken from the result."""
    rows = slice(ids.visual_offset, ids.visual_offset + ids.codebook_size)
    if type(head.weight).__name__ == "DTensor":
        return head(hidden)[..., rows]
    bias = head.bias[rows] if head.bias is not None else None
    return nn.functional.linear(hidden, head.weight[rows], bias)


__all__ = ["compiled_decode_step", "decode_step", "decode_window", "prefill", "visual_logits"]
