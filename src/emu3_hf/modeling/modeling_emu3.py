"""The Emu3 language model: a Llama-style decoder over text and visual tokens, with BAAI's weight names.

Reads top-down: attention -> decoder layer -> base model -> causal-LM head. RMSNorm, the SwiGLU MLP and the rotary
embedding are transformers' own Llama modules (their call signatures have not changed across the supported
releases; tests pin their math against independent formulas). The attention block is written here against
transformers' public attention interface (``ALL_ATTENTION_FUNCTIONS``, ``Cache.update``), so every registered
backend (eager, sdpa, flash_attention_2, flex_attention, ...) works, and no upstream forward signature is inherited:
transformers 5.24 renamed the cache argument of its modules and may do so again. What is Emu3-specific: BAAI's
residual/embedding dropout (train mode only), BAAI's ``hidden_states`` tuple, and the special ids in the config.

The KV cache is ``cache`` in every forward (transformers >= 5.24 spelling); ``past_key_values`` is accepted too,
because older releases' ``generate`` passes that name; on releases that renamed it, the old name warns as it does on
transformers' own models (their ``deprecate_kwarg``). See :mod:`.transformers_compat`.

This module imports only torch/transformers so it can be exported as Hub remote code.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding

from .configuration_emu3 import Emu3LMConfig
from .loading import ClearLoadErrors, WholeFolderSaves
from .transformers_compat import (
    OUTPUT_CACHE_FIELD,
    causal_mask,
    deprecated_cache_keyword,
    keep_last_positions,
    resolve_cache_argument,
    with_cache_field,
)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE (BAAI's and Llama's): q, k (B, heads, L, hd); cos, sin (B, L, hd)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,  # (B, H, L, hd)
    key: torch.Tensor,  # (B, Hkv, S, hd)
    value: torch.Tensor,  # (B, Hkv, S, hd)
    attention_mask: torch.Tensor | None,  # (B, 1, L, S) additive
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention with the attention interface's signature; returns (B, L, H, hd) and the weights."""
    groups = module.num_key_value_groups
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)  # GQA -> (B, H, S, hd)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, L, S)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def grouped_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,  # (B, H, L, hd)
    key: torch.Tensor,  # (B, Hkv, S, hd)
    value: torch.Tensor,  # (B, Hkv, S, hd)
    attention_mask: torch.Tensor,  # (B or 1, 1, L or 1, >= S) boolean (True = attend) or additive
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA with a mask over grouped KV heads, without copying the keys and values once per query head.

    The ``G = H / Hkv`` query heads that share a KV head are folded into the query length: (B, Hkv, G*L, hd) against
    (B, Hkv, S, hd), the mask repeated G times along L. Exact: every query row still meets the same keys and the same
    mask row. transformers' sdpa backend instead repeats K and V G times whenever a mask is given (CUDA's fused kernels
    take no GQA with a mask) or, since 5.25, packs single queries only outside ``torch.compile``; under a compiled
    decode step over a static cache that is a copy of the whole cache in every layer at every step, more bytes than
    the weights themselves at 720x720 with CFG. Returns (B, L, H, hd) and no weights, like the interface's backends.
    """
    batch, heads, length, head_dim = query.shape
    groups = heads // key.shape[1]
    folded = query.reshape(batch, key.shape[1], groups * length, head_dim)  # head h = kv * G + g
    mask = attention_mask[..., : key.shape[-2]]
    if mask.shape[-2] > 1:  # one mask row per query position: repeat it for each of the G heads folded in
        mask = mask.unsqueeze(2).expand(*mask.shape[:2], groups, *mask.shape[2:]).reshape(
            mask.shape[0], mask.shape[1], groups * mask.shape[2], mask.shape[3]
        )
    out = nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
    )  # (B, Hkv, G*L, hd)
    return out.reshape(batch, heads, length, head_dim).transpose(1, 2), None


def _uses_grouped_sdpa(module: nn.Module, attention_mask, kwargs: dict) -> bool:
    """Take over the sdpa backend's masked grouped-KV case (see :func:`grouped_sdpa_attention`); every other case
    (no mask: fused kernels with ``enable_gqa``; extra options such as attention outputs) stays transformers'."""
    return (
        module.num_key_value_groups > 1
        and isinstance(attention_mask, torch.Tensor)
        and attention_mask.dim() == 4
        and attention_mask.shape[1] == 1
        and not kwargs.get("output_attentions", False)
    )


class Emu3Attention(nn.Module):
    """Multi-head attention with grouped KV heads; keys ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` (BAAI's).

    The backend is ``config._attn_implementation``, looked up in transformers' ``ALL_ATTENTION_FUNCTIONS`` (its
    documented extension point), with :func:`eager_attention` for ``"eager"``.
    """

    is_causal = True  # read by the sdpa / flash backends

    def __init__(self, config: Emu3LMConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.head_dim = config.head_dim
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    @deprecated_cache_keyword
    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, L, D)
        position_embeddings: tuple[torch.Tensor, torch.Tensor],  # cos, sin: (B, L, hd)
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length = hidden_states.shape[:2]
        q = self.q_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
        v = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, Hkv, S, hd): everything cached so far
        backend = self.config._attn_implementation
        if backend == "eager":
            attend: Callable = eager_attention
        elif backend == "sdpa" and _uses_grouped_sdpa(self, attention_mask, kwargs):
            attend = grouped_sdpa_attention
        else:
            attend = ALL_ATTENTION_FUNCTIONS[backend]
        out, weights = attend(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )  # out: (B, L, H, hd)
        return self.o_proj(out.reshape(batch, length, -1)), weights


class Emu3DecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: ``x + drop(attn(norm(x)))`` then ``x + drop(mlp(norm(x)))``; BAAI's dropout p is
    ``config.attention_dropout`` (a no-op in eval mode)."""

    def __init__(self, config: Emu3LMConfig, layer_idx: int):
        super().__init__()
        self.self_attn = Emu3Attention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = nn.Dropout(config.attention_dropout)

    @deprecated_cache_keyword
    def forward(
        self,
        hidden_states: torch.Tensor,  # (B, L, D)
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_out, attn_weights = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attn_out)
        hidden_states = hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))
        return hidden_states, attn_weights


class Emu3LMPreTrainedModel(ClearLoadErrors, WholeFolderSaves, PreTrainedModel):
    config_class = Emu3LMConfig
    config: Emu3LMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Emu3DecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # transformers' default `_init_weights` fits exactly: normal(0, initializer_range) Linear/Embedding weights with
    # the padding row zeroed (BAAI's init), RMSNorm weights of one, and -- importantly -- it recomputes the RoPE
    # `inv_freq` buffers, which are garbage after a meta-device `from_pretrained` otherwise.


class Emu3LMModel(Emu3LMPreTrainedModel):
    """The decoder stack: embeddings -> layers -> final RMSNorm. Keys ``embed_tokens``, ``layers.N.*``, ``norm``."""

    def __init__(self, config: Emu3LMConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.dropout = nn.Dropout(config.attention_dropout)
        self.layers = nn.ModuleList(Emu3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @deprecated_cache_keyword
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, past + L), 1 = attend
        position_ids: torch.LongTensor | None = None,  # (B, L); default arange(past, past + L) like BAAI
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,  # (B, L, D)
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,  # the name transformers < 5.24 uses for `cache`
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        cache = resolve_cache_argument(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False  # the cache would be written twice by the recomputation

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if not use_cache:
            cache = None  # a cache given with use_cache=False is neither read nor written
        elif cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_len = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(past_len, past_len + inputs_embeds.shape[1], device=inputs_embeds.device)
            position_ids = position_ids.unsqueeze(0)

        mask = causal_mask(self.config, inputs_embeds, attention_mask, cache, position_ids)
        hidden_states = self.dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)

        # BAAI's tuple: embedding output, the output of every layer but the last, then the final normed output.
        all_hidden: list[torch.Tensor] = []
        all_attn: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            hidden_states, attn_weights = layer(
                hidden_states,
                attention_mask=mask,
                position_embeddings=position_embeddings,
                cache=cache,
                **kwargs,
            )
            if output_attentions:
                all_attn.append(attn_weights)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)

        out = with_cache_field(
            BaseModelOutputWithPast,
            cache,
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()


class Emu3LMForCausalLM(Emu3LMPreTrainedModel, GenerationMixin):
    """Emu3 with its (untied) LM head, loadable straight from BAAI's ``Emu3-Gen`` / ``Emu3-Chat`` folders.

    Example:
        ```python
        >>> import emu3_hf  # registers the Auto classes
        >>> from transformers import AutoModelForCausalLM
        >>> model = AutoModelForCausalLM.from_pretrained("BAAI/Emu3-Gen")  # no trust_remote_code
        >>> type(model).__name__
        'Emu3LMForCausalLM'
        ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: Emu3LMConfig):
        super().__init__(config)
        self.model = Emu3LMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def generate(self, *args, image_size: torch.Tensor | None = None, **kwargs):
        """transformers' ``generate``; also takes the processor's whole output, so
        ``model.generate(**processor(text=..., image=..., mode="U"))`` works (``image_size``, the token grid
        the processor reports, is already written into the prompt and is not a model input)."""
        return super().generate(*args, **kwargs)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @deprecated_cache_keyword
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,  # (B, L); -100 = ignored
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,  # the name transformers < 5.24 uses for `cache`
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache_argument(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(keep_last_positions(outputs.last_hidden_state, logits_to_keep))  # (B, L', V)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        out = with_cache_field(
            CausalLMOutputWithPast,
            getattr(outputs, OUTPUT_CACHE_FIELD),
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return out if return_dict else out.to_tuple()


__all__ = ["Emu3Attention", "Emu3DecoderLayer", "Emu3LMPreTrainedModel", "Emu3LMModel", "Emu3LMForCausalLM"]
