"""Lossless conversion between BAAI's layout (our in-memory format) and transformers' native Emu3 layout.

Native is ``Emu3ForConditionalGeneration`` (model_type ``"emu3"``): the LM lives under ``model.text_model``, the VQ
under ``model.vqmodel`` with renamed blocks and its 1x1 attention convs stored as Linear weights, and the special
tokens in ``config.vocabulary_map``. See tests/fixtures/baai-tiny/KEYMAP.md for the table this code implements.

Example:
    ```python
    >>> from emu3_hf.conversion import convert_baai_to_native, convert_native_to_baai
    >>> native = convert_baai_to_native(lm, vq)          # transformers.Emu3ForConditionalGeneration
    >>> lm2, vq2 = convert_native_to_baai(native)         # bit-identical weights to lm, vq
    ```
"""

from __future__ import annotations

import functools
import re

import torch

from ..modeling import Emu3LMConfig, Emu3LMForCausalLM, Emu3VisionVQConfig, Emu3VisionVQModel

_ATTN_PROJ = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "proj_out": "out_proj"}
_ATTN_PROJ_BACK = {v: k for k, v in _ATTN_PROJ.items()}
# Entries of a config.json that describe the file, not the model (each side writes its own).
_METADATA = frozenset({"model_type", "transformers_version", "architectures", "auto_map", "_name_or_path", "dtype",
                       "torch_dtype"})  # fmt: skip
# LM config fields with no native counterpart; kept as extra top-level entries of the native config.
_LM_EXTRA_FIELDS = ("image_area", "eol_token_id", "eof_token_id")
# LM fields native code derives or cannot vary: the image ids and the visual block live in `vocabulary_map` and the
# VQ's codebook; head_dim and the biases are checked (and refused when native cannot hold them) before conversion.
_LM_DERIVED_FIELDS = ("img_token_id", "boi_token_id", "eoi_token_id", "visual_token_offset", "codebook_size",
                      "head_dim", "attention_bias", "mlp_bias")  # fmt: skip
# Our VQ config field -> transformers' Emu3VQVAEConfig field (same meaning, other name).
_VQ_RENAMES = {
    "codebook_size": "codebook_size", "embed_dim": "embed_dim", "z_channels": "latent_channels",
    "double_z": "double_latent", "in_channels": "in_channels", "out_channels": "out_channels",
    "temporal_downsample_factor": "temporal_downsample_factor", "ch": "base_channels", "ch_mult": "channel_multiplier",
    "num_res_blocks": "num_res_blocks", "attn_resolutions": "attn_resolutions",
}  # fmt: skip
# Native VQ fields that follow from the others (one attention head as wide as the last level, no attention dropout).
_NATIVE_VQ_DERIVED = ("hidden_size", "num_attention_heads", "attention_dropout")


@functools.lru_cache(maxsize=None)
def _defaults(config_class: type) -> dict:
    """The to_dict() of ``config_class``'s default instance (what a field is when a config.json does not name it)."""
    return config_class().to_dict()


# Structural renames of the VQ, BAAI template -> native template, tried in order (the first match wins in both
# directions). {side}: encoder|decoder, {L}: level, {j}: block, {proj}: an attention projection (named per layout).
_VQ_RULES = (
    ("{side}.mid.attn_1.norm.", "{side}.middle_block.attn_norm."),
    ("{side}.mid.attn_1.{proj}.", "{side}.middle_block.attn_1.{proj}."),
    ("{side}.mid.", "{side}.middle_block."),
    ("encoder.down.{L}.attn.{j}.norm.", "encoder.down_block.down.{L}.attn_norms.{j}."),
    ("decoder.up.{L}.attn.{j}.norm.", "decoder.up_block.up.{L}.attn_norms.{j}."),
    ("encoder.down.{L}.attn.{j}.{proj}.", "encoder.down_block.down.{L}.attn.{j}.{proj}."),
    ("decoder.up.{L}.attn.{j}.{proj}.", "decoder.up_block.up.{L}.attn.{j}.{proj}."),
    ("encoder.down.", "encoder.down_block.down."),
    ("decoder.up.", "decoder.up_block.up."),
)


@functools.lru_cache(maxsize=None)
def _template_regex(template: str, proj_names: tuple[str, ...]) -> re.Pattern:
    groups = {"side": "encoder|decoder", "L": r"\d+", "j": r"\d+", "proj": "|".join(proj_names)}
    parts = re.split(r"\{(\w+)\}", template)  # literal, name, literal, name, ..., literal
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{groups[p]})" for i, p in enumerate(parts))
    return re.compile("^" + regex)


def _rename_vq_key(key: str, to_native: bool) -> str:
    proj = _ATTN_PROJ if to_native else _ATTN_PROJ_BACK
    for baai, native in _VQ_RULES:
        source, target = (baai, native) if to_native else (native, baai)
        match = _template_regex(source, tuple(proj)).match(key)
        if match:
            values = match.groupdict()
            if "proj" in values:
                values["proj"] = proj[values["proj"]]
            return target.format(**values) + key[match.end() :]
    return key


def vq_key_to_native(key: str) -> str:
    """BAAI VQ key -> native VQ key (without the ``model.vqmodel.`` prefix)."""
    return _rename_vq_key(key, to_native=True)


def vq_key_to_baai(key: str) -> str:
    """Native VQ key (without prefix) -> BAAI VQ key; the inverse of :func:`vq_key_to_native`."""
    return _rename_vq_key(key, to_native=False)


def lm_key_to_native(key: str) -> str:
    """Our LM's parameter or module name (= BAAI's remote code's) -> its name in ``Emu3ForConditionalGeneration``.

    The whole LM table: ``model.X`` -> ``model.text_model.X``; ``lm_head``, ``lm_head.*`` unchanged. Raises
    ``ValueError`` on any other name, so nothing is carried over unmapped.

    Example:
        >>> lm_key_to_native("model.layers.0.self_attn.q_proj.weight")
        'model.text_model.layers.0.self_attn.q_proj.weight'
    """
    if key == "lm_head" or key.startswith("lm_head."):
        return key
    if key.startswith("model."):
        return "model.text_model." + key.removeprefix("model.")
    raise ValueError(f"{key!r} is not a name in the Emu3 LM (expected 'model.*' or 'lm_head*'); nothing maps it.")


def lm_key_to_baai(key: str) -> str:
    """Native text-model name -> our (= BAAI's) LM name; the inverse of :func:`lm_key_to_native`.

    Raises ``ValueError`` for names outside the text model (the VQ's ``model.vqmodel.*`` included).

    Example:
        >>> lm_key_to_baai("model.text_model.norm.weight")
        'model.norm.weight'
    """
    if key == "lm_head" or key.startswith("lm_head."):
        return key
    if key.startswith("model.text_model."):
        return "model." + key.removeprefix("model.text_model.")
    why = "; it belongs to the native VQ, which an LM checkpoint or adapter does not hold." if "vqmodel" in key else "."
    raise ValueError(f"{key!r} is not a name in the native text model ('model.text_model.*' or 'lm_head*'){why}")


def _is_attn_projection_weight(native_key: str) -> bool:
    return bool(re.search(r"\.(q_proj|k_proj|v_proj|out_proj)\.weight$", native_key))


def default_vocabulary_map(config: Emu3LMConfig, image_placeholder: str = "<|extra_0|>") -> dict[str, int]:
    """The special part of the vocabulary in native form, from the ids in an Emu3 LM config.

    BAAI's layout: the 208 Qwen specials start at ``pad_token_id`` (``<|endoftext|>``, ``<|im_start|>``,
    ``<|im_end|>``, ``<|extra_0..204|>``), then the three image tokens, then the visual tokens. Native code also
    wants an ``<image>`` placeholder for understanding inputs; BAAI's vocabulary has none, so it reuses
    ``image_placeholder``'s id.
    """
    base = config.pad_token_id
    vocab = {"<|endoftext|>": base, "<|im_start|>": base + 1, "<|im_end|>": base + 2}
    vocab.update({f"<|extra_{i}|>": base + 3 + i for i in range(205)})
    vocab.update({"<|image token|>": config.img_token_id, "<|image start|>": config.boi_token_id})
    vocab["<|image end|>"] = config.eoi_token_id
    vocab.update({f"<|visual token {c:06d}|>": config.visual_token_offset + c for c in range(config.codebook_size)})
    if image_placeholder not in vocab:
        raise ValueError(f"image_placeholder {image_placeholder!r} is not a special token of this vocabulary.")
    vocab["<image>"] = vocab[image_placeholder]
    return vocab


_MISSING = object()


def _native_text_fields() -> dict[str, str]:
    from transformers import Emu3TextConfig

    return {name: name for name in _defaults(Emu3TextConfig) if name not in _METADATA}


def _own_fields(config, config_class: type, native_names: dict[str, str], skip: tuple[str, ...]) -> dict:
    """``config``'s entries for the native sub-config: the fields native knows (renamed), and every other entry
    whose value differs from ``config_class``'s default (an unknown key BAAI's code accepted, a dropout), which
    native keeps as an extra entry and :func:`convert_native_to_baai` hands back."""
    defaults = _defaults(config_class)
    out = {}
    for name, value in config.to_dict().items():
        if name in _METADATA or name in skip:
            continue
        if name in native_names:
            out[native_names[name]] = value
        elif value != defaults.get(name, _MISSING):
            out[name] = value
    return out


def native_config_from_baai(lm_config: Emu3LMConfig, vq_config: Emu3VisionVQConfig, vocabulary_map=None):
    """A transformers ``Emu3Config`` equivalent to a BAAI LM + VQ config pair (raises when none exists)."""
    from transformers import Emu3Config

    widths = [vq_config.ch * vq_config.ch_mult[level] for level in vq_config.attn_resolutions]
    hidden = vq_config.ch * vq_config.ch_mult[-1]
    if any(w != hidden for w in widths):
        raise ValueError(
            f"transformers' native VQ gives every attention block width {hidden}, but this VQ has attention at "
            f"levels {vq_config.attn_resolutions} of widths {widths}; it cannot be represented natively. Keep the "
            "BAAI layout (emu3-hf loads it directly)."
        )
    if lm_config.attention_bias or lm_config.mlp_bias:
        raise ValueError(
            "transformers' native Emu3 text model has no attention or MLP biases, but this LM config sets "
            f"attention_bias={lm_config.attention_bias}, mlp_bias={lm_config.mlp_bias}; it cannot be represented "
            "natively. Keep the BAAI layout or an emu3-hf pipeline folder."
        )
    if lm_config.head_dim != lm_config.hidden_size // lm_config.num_attention_heads:
        raise ValueError(
            f"transformers' native Emu3 uses head_dim = hidden_size / num_attention_heads, but this LM has head_dim "
            f"{lm_config.head_dim} (hidden_size {lm_config.hidden_size}, {lm_config.num_attention_heads} heads); it "
            "cannot be represented natively. Keep the BAAI layout or an emu3-hf pipeline folder."
        )
    if lm_config.codebook_size != vq_config.codebook_size:
        raise ValueError(
            f"The native layout takes the LM's visual block from the VQ's codebook ({vq_config.codebook_size} codes), "
            f"but this LM config says codebook_size {lm_config.codebook_size}; it cannot be represented natively. "
            "Keep the BAAI layout or an emu3-hf pipeline folder."
        )
    if vq_config.reserved_codes:
        raise ValueError(
            f"This VQ config reserves {len(vq_config.reserved_codes)} codebook rows (reserved_codes, an emu3-hf field "
            "for codes only a language model writes) that transformers' native VQ would still quantise to; the native layout cannot "
            "hold them and they are not dropped silently. Keep the BAAI layout or an emu3-hf pipeline folder."
        )
    vq = {**_own_fields(vq_config, Emu3VisionVQConfig, _VQ_RENAMES, skip=()),
          "hidden_size": hidden, "num_attention_heads": 1, "attention_dropout": 0.0}  # fmt: skip
    text = _own_fields(lm_config, Emu3LMConfig, _native_text_fields(), skip=(*_LM_EXTRA_FIELDS, *_LM_DERIVED_FIELDS))
    vocabulary_map = vocabulary_map or default_vocabulary_map(lm_config)
    # Fields native code has no place for ride along as extra top-level config entries (transformers keeps and
    # saves unknown entries), so that native -> BAAI gives the same config back.
    extras = {name: getattr(lm_config, name) for name in _LM_EXTRA_FIELDS}
    return Emu3Config(
        text_config=text, vq_config=vq, vocabulary_map=vocabulary_map,
        image_token_id=vocabulary_map["<image>"], tie_word_embeddings=lm_config.tie_word_embeddings, **extras,
    )  # fmt: skip


def _materialize_rope_buffers(model: torch.nn.Module) -> None:
    """Models built on the meta device keep meta RoPE buffers (non-persistent, not in any state dict):
    recompute them on the CPU from each rotary module's own config, the way its constructor does."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for module in model.modules():
        if "RotaryEmbedding" in type(module).__name__ and hasattr(module, "original_inv_freq"):
            if module.rope_type == "default":
                init_fn = module.compute_default_rope_parameters
            else:
                init_fn = ROPE_INIT_FUNCTIONS[module.rope_type]
            inv_freq, module.attention_scaling = init_fn(module.config, device=torch.device("cpu"))
            module.inv_freq = inv_freq
            module.original_inv_freq = inv_freq.clone()
    leftover = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"Conversion left tensors on the meta device: {leftover[:5]}")


def native_state_dict_from_baai(lm_state: dict, vq_state: dict) -> dict[str, torch.Tensor]:
    """Our LM + VQ state dicts -> one native in-memory state dict (same tensors; attention convs viewed as Linear)."""
    state = {lm_key_to_native(key): value for key, value in lm_state.items()}
    for key, value in vq_state.items():
        new = vq_key_to_native(key)
        if _is_attn_projection_weight(new):
            value = value[:, :, 0, 0]  # 1x1 conv (C, C, 1, 1) -> Linear (C, C); same matrix, no transpose
        state["model.vqmodel." + new] = value
    return state


def baai_state_dicts_from_native(state: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A native in-memory state dict -> our (LM, VQ) state dicts; raises on a key of neither part."""
    lm_state, vq_state = {}, {}
    for key, value in state.items():
        if key.startswith("model.vqmodel."):
            new = vq_key_to_baai(key.removeprefix("model.vqmodel."))
            if _is_attn_projection_weight(key):
                value = value[:, :, None, None]  # Linear (C, C) -> 1x1 conv (C, C, 1, 1)
            vq_state[new] = value
        else:
            lm_state[lm_key_to_baai(key)] = value
    return lm_state, vq_state


@torch.no_grad()
def convert_baai_to_native(lm: Emu3LMForCausalLM, vq: Emu3VisionVQModel, vocabulary_map: dict | None = None):
    """Build transformers' ``Emu3ForConditionalGeneration`` holding exactly the weights of ``lm`` and ``vq``."""
    from transformers import Emu3ForConditionalGeneration

    config = native_config_from_baai(lm.config, vq.config, vocabulary_map)
    with torch.device("meta"):
        native = Emu3ForConditionalGeneration(config)
    state = native_state_dict_from_baai(lm.state_dict(), vq.state_dict())
    expected = set(native.state_dict())
    if set(state) != expected:
        raise RuntimeError(
            f"Key mapping mismatch: missing {sorted(expected - set(state))[:5]}, extra {sorted(set(state) - expected)[:5]}"
        )
    native.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    native.tie_weights()  # assign=True gives lm_head its own tensor: tie it again when the config ties it
    _materialize_rope_buffers(native)
    return native.to(lm.dtype).eval()


def _baai_vq_fields(vqc) -> dict:
    """A native VQ config's entries under our (BAAI's) names; raises when its attention is not BAAI's (one head as
    wide as the last level, no dropout), which the BAAI layout cannot express."""
    hidden = vqc.base_channels * vqc.channel_multiplier[-1]
    derived = {"hidden_size": hidden, "num_attention_heads": 1, "attention_dropout": 0.0}
    found = {name: getattr(vqc, name) for name in _NATIVE_VQ_DERIVED}
    if found != derived:
        raise ValueError(
            f"This native VQ config has attention {found}; BAAI's VQ (and emu3-hf's) has {derived}, so the BAAI layout "
            "cannot represent it. Keep the native layout."
        )
    back = {native: ours for ours, native in _VQ_RENAMES.items()}
    return {back.get(name, name): value for name, value in vqc.to_dict().items()
            if name not in _METADATA and name not in _NATIVE_VQ_DERIVED}  # fmt: skip


def baai_configs_from_native(cfg) -> tuple[Emu3LMConfig, Emu3VisionVQConfig]:
    """A transformers ``Emu3Config`` -> the equivalent (LM, VQ) config pair in our (= BAAI's) classes; the inverse of
    :func:`native_config_from_baai`. Raises when the native config says what BAAI's layout cannot (VQ attention).

    Example:
        >>> from transformers import Emu3Config
        >>> lm_config, vq_config = baai_configs_from_native(Emu3Config.from_pretrained("emu3-native"))
    """
    text, vqc, vocab = cfg.text_config, cfg.vq_config, cfg.vocabulary_map
    # eol/eof follow BAAI's convention (<|extra_200|>, <|extra_201|>) unless the config carries them (see
    # native_config_from_baai); image_area likewise falls back to the LM config's default.
    extras = {"eol_token_id": vocab["<|extra_200|>"], "eof_token_id": vocab["<|extra_201|>"]}
    extras.update({name: getattr(cfg, name) for name in _LM_EXTRA_FIELDS if getattr(cfg, name, None) is not None})
    own_text = {name: value for name, value in text.to_dict().items() if name not in _METADATA}
    lm_config = Emu3LMConfig(
        **own_text, img_token_id=vocab["<|image token|>"], boi_token_id=vocab["<|image start|>"],
        eoi_token_id=vocab["<|image end|>"], visual_token_offset=vocab["<|visual token 000000|>"],
        codebook_size=vqc.codebook_size, **extras,
    )  # fmt: skip
    return lm_config, Emu3VisionVQConfig(**_baai_vq_fields(vqc))


@torch.no_grad()
def convert_native_to_baai(native) -> tuple[Emu3LMForCausalLM, Emu3VisionVQModel]:
    """Split a native ``Emu3ForConditionalGeneration`` back into our (BAAI-layout) LM and VQ, losslessly."""
    lm_config, vq_config = baai_configs_from_native(native.config)
    lm_state, vq_state = baai_state_dicts_from_native(native.state_dict())
    models = []
    for cls, config, state in ((Emu3LMForCausalLM, lm_config, lm_state), (Emu3VisionVQModel, vq_config, vq_state)):
        with torch.device("meta"):
            model = cls(config)
        model.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True, assign=True)
        model.tie_weights()
        _materialize_rope_buffers(model)
        models.append(model.to(native.dtype).eval())
    return models[0], models[1]


__all__ = [
    "baai_configs_from_native",
    "baai_state_dicts_from_native",
    "convert_baai_to_native",
    "convert_native_to_baai",
    "default_vocabulary_map",
    "lm_key_to_baai",
    "lm_key_to_native",
    "native_config_from_baai",
    "native_state_dict_from_baai",
    "vq_key_to_baai",
    "vq_key_to_native",
]
