"""The few places where the LM meets a transformers interface whose spelling changed across supported releases.

transformers 5.24 renamed the KV-cache argument of model forwards, of ``create_causal_mask`` and of the model
outputs from ``past_key_values`` to ``cache`` (the old keyword is deprecated until 5.40). ``generate`` passes
whichever name its release uses and reads the cache back from the output field of that release, so the model must
(1) accept both keywords, warning on the old one exactly when the release's own models do, (2) call the masking utility with the keyword the installed release expects, and (3) put
the cache into the output field the installed release defines. Each choice is made once, at import, from the
installed objects' own signatures and fields (no version-string parsing), and tests/test_transformers_compat.py
pins the behaviour on the installed release.

This module imports only torch/transformers so that it can be exported with the modeling files as Hub remote code.

Example:
    ```python
    >>> from emu3_hf.modeling.transformers_compat import OUTPUT_CACHE_FIELD, resolve_cache_argument
    >>> OUTPUT_CACHE_FIELD in ("cache", "past_key_values")
    True
    >>> resolve_cache_argument(None, None) is None
    True
    ```
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
from transformers import cache_utils
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

# The cache keyword of `create_causal_mask` in the installed release ("cache" from 5.24, "past_key_values" before).
MASK_CACHE_KEYWORD = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"

# The cache field of the installed release's model outputs, which `generate` reads between steps.
_FIELDS = {f.name for f in dataclasses.fields(BaseModelOutputWithPast)}
OUTPUT_CACHE_FIELD = "cache" if "cache" in _FIELDS else "past_key_values"
# Whether a StaticCache can be rolled back in place (``StaticLayer.crop``, transformers >= 5.24): Jacobi windows over the
# static cache need it; on older releases they run over the dynamic cache.
STATIC_CACHE_CAN_CROP = "crop" in vars(getattr(cache_utils, "StaticLayer", object))

if OUTPUT_CACHE_FIELD not in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}:
    raise ImportError(
        f"transformers' CausalLMOutputWithPast has no {OUTPUT_CACHE_FIELD!r} field while BaseModelOutputWithPast has: "
        "this transformers release is not supported by emu3-hf; install a release in the range the README states."
    )


def resolve_cache_argument(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache a forward was given under either name (``cache``: transformers >= 5.24; ``past_key_values``: older
    releases, and callers written for them). Both at once is ambiguous and refused."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError(
            "Got both `cache` and `past_key_values`; they name the same KV cache (transformers renamed the argument "
            "in 5.24). Pass only `cache`."
        )
    return cache if cache is not None else past_key_values


def deprecated_cache_keyword(forward):
    """Decorate a forward that takes ``cache`` so ``past_key_values=`` keeps working the way it does on the installed
    release's own models.

    From 5.24 (the release that renamed the argument) this is transformers' own ``deprecate_kwarg`` with the arguments
    its Llama uses: the old name is renamed to ``cache`` with a ``FutureWarning`` until 5.40, and given together with
    ``cache`` it is ignored with a warning. Before 5.24 ``generate`` itself passes ``past_key_values``, so there the
    forward is left as it is and takes the old name silently (see :func:`resolve_cache_argument`).
    """
    if OUTPUT_CACHE_FIELD == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)
    return forward


def causal_mask(
    config,
    inputs_embeds: torch.Tensor,  # (B, L, D)
    attention_mask: torch.Tensor | None,  # (B, past + L) 1 = attend, or a ready 4-D mask
    cache: Cache | None,
    position_ids: torch.Tensor | None,  # (B, L)
):
    """transformers' ``create_causal_mask`` (the mask each attention backend expects), called with the cache keyword
    of the installed release."""
    return create_causal_mask(
        config=config,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **{MASK_CACHE_KEYWORD: cache},
    )


def with_cache_field(output_cls, cache: Cache | None, **fields):
    """Build a model output with ``cache`` in the field the installed release defines for it."""
    return output_cls(**fields, **{OUTPUT_CACHE_FIELD: cache})


def enable_activation_checkpointing(model, checkpoint_kwargs: dict | None = None) -> None:
    """Turn on activation (gradient) checkpointing under the name the installed release prefers: 5.24 renamed
    ``gradient_checkpointing_enable(gradient_checkpointing_kwargs=)`` to
    ``activation_checkpointing_enable(activation_checkpointing_kwargs=)`` and warns on the old name.
    ``checkpoint_kwargs`` go to ``torch.utils.checkpoint`` (e.g. ``{"use_reentrant": False}``); both releases take
    them as the first argument."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(checkpoint_kwargs)


def keep_last_positions(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions the LM head must score: the last ``logits_to_keep`` (0 = all), or the given indices (1-D)."""
    if isinstance(logits_to_keep, int):
        return hidden_states if logits_to_keep == 0 else hidden_states[:, -logits_to_keep:]
    return hidden_states[:, logits_to_keep]


__all__ = [
    "MASK_CACHE_KEYWORD",
    "OUTPUT_CACHE_FIELD",
    "causal_mask",
    "deprecated_cache_keyword",
    "enable_activation_checkpointing",
    "keep_last_positions",
    "resolve_cache_argument",
    "with_cache_field",
]
