"""Configuration of the Emu3 language model, compatible with BAAI's ``config.json`` files.

The class reads BAAI's Hub configs (``model_type: "Emu3"``, ``rope_theta`` + ``rope_scaling``) as they are and
keeps every special token id in the config, so the tiny test models and the 8B checkpoints run through the same
code. It is deliberately *not* named ``Emu3Config``: that name belongs to transformers' native port, and the
Auto classes look configs up by class name.

This module imports only torch/transformers/huggingface_hub so it can be exported as Hub remote code.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

_ROPE_SCALING_TYPES = ("linear", "dynamic")


def _validate_baai_rope_scaling(rope_scaling: dict | None) -> None:
    """BAAI accepts exactly ``{"type": "linear"|"dynamic", "factor": float > 1}``; anything else is an error."""
    if rope_scaling is None:
        return
    if not isinstance(rope_scaling, dict) or set(rope_scaling) != {"type", "factor"}:
        raise ValueError(
            f"`rope_scaling` must be a dict with exactly the keys 'type' and 'factor' (BAAI's format), got "
            f"{rope_scaling!r}. Use e.g. {{'type': 'linear', 'factor': 2.0}}, or pass `rope_parameters` in "
            "transformers' format instead."
        )
    if rope_scaling["type"] not in _ROPE_SCALING_TYPES:
        raise ValueError(f"`rope_scaling['type']` must be one of {_ROPE_SCALING_TYPES}, got {rope_scaling['type']!r}.")
    factor = rope_scaling["factor"]
    if not isinstance(factor, float) or factor <= 1.0:
        raise ValueError(f"`rope_scaling['factor']` must be a float > 1, got {factor!r} (write 2.0, not 2).")


@strict(accept_kwargs=True)
class Emu3LMConfig(PreTrainedConfig):
    r"""Configuration of an Emu3 decoder (BAAI ``Emu3-Gen`` / ``Emu3-Chat`` / ``Emu3-Stage1``).

    Defaults describe the released 8B models. The visual vocabulary is a contiguous block of ``codebook_size``
    ids right after ``eoi_token_id`` unless ``visual_token_offset`` / ``codebook_size`` say otherwise.

    Example:
        ```python
        >>> from emu3_hf import Emu3LMConfig
        >>> config = Emu3LMConfig(vocab_size=2067, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        ...                       num_attention_heads=4, num_key_value_heads=2, pad_token_id=1600,
        ...                       bos_token_id=1806, eos_token_id=1807, img_token_id=1808, boi_token_id=1809,
        ...                       eoi_token_id=1810, eol_token_id=1803, eof_token_id=1804)
        >>> config.visual_token_offset, config.codebook_size
        (1811, 256)
        ```
    """

    model_type = "Emu3"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    vocab_size: int = 184622
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 9216
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int | None = 151643
    bos_token_id: int | None = 151849
    eos_token_id: int | list[int] | None = 151850
    img_token_id: int = 151851
    boi_token_id: int = 151852
    eoi_token_id: int = 151853
    eol_token_id: int = 151846
    eof_token_id: int = 151847
    # Optional explicit visual block; by default it follows eoi_token_id and fills the rest of the vocabulary.
    visual_token_offset: int | None = None
    codebook_size: int | None = None
    image_area: int = 518400
    pretraining_tp: int | None = 1
    tie_word_embeddings: bool = False
    rope_parameters: RopeParameters | dict | None = None
    attention_dropout: int | float | None = 0.1
    attention_bias: bool = False
    mlp_bias: bool = False

    def __post_init__(self, **kwargs):
        # BAAI writes `rope_scaling` in its own strict format; validate it before transformers standardises it
        # into `rope_parameters` (where "type" becomes "rope_type" and `rope_theta` moves inside).
        rope_scaling = kwargs.get("rope_scaling")
        if rope_scaling is not None and "rope_type" not in rope_scaling:
            _validate_baai_rope_scaling(rope_scaling)
        # transformers fills in the RoPE dict it is given: work on copies, never on the caller's dicts.
        if isinstance(rope_scaling, dict):
            kwargs["rope_scaling"] = dict(rope_scaling)
        if isinstance(self.rope_parameters, dict):
            self.rope_parameters = dict(self.rope_parameters)
        kwargs.setdefault("rope_theta", 1000000.0)
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.visual_token_offset is None:
            self.visual_token_offset = self.eoi_token_id + 1
        if self.codebook_size is None:
            self.codebook_size = self.vocab_size - self.visual_token_offset
        if self.codebook_size <= 0 or self.visual_token_offset + self.codebook_size > self.vocab_size:
            raise ValueError(
                f"The visual token block [{self.visual_token_offset}, {self.visual_token_offset + self.codebook_size})"
                f" does not fit in vocab_size {self.vocab_size}. Set `visual_token_offset` and `codebook_size` "
                "to the ids of your vocabulary's visual tokens."
            )
        super().__post_init__(**kwargs)
        # transformers keeps BAAI's legacy "type" key next to the "rope_type" it derives from it: one RoPE setting
        # stored twice. Keep the canonical form only, so every layout writes (and reads back) the same parameters.
        params = self.rope_parameters
        if isinstance(params, dict) and "type" in params and params.get("rope_type") == params["type"]:
            self.rope_parameters = {name: value for name, value in params.items() if name != "type"}

    def validate_architecture(self):
        """Checks run by ``@strict`` validation: the attention head layout."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})."
            )

    # BAAI's field names, kept readable and writable: they live inside transformers' `rope_parameters`.
    @property
    def rope_theta(self) -> float:
        return (self.rope_parameters or {}).get("rope_theta", 1000000.0)

    @rope_theta.setter
    def rope_theta(self, value: float) -> None:
        self.rope_parameters = {**(self.rope_parameters or {"rope_type": "default"}), "rope_theta": value}

    @property
    def rope_scaling(self) -> dict | None:
        params = self.rope_parameters or {}
        if params.get("rope_type", "default") == "default":
            return None
        return {"type": params["rope_type"], "factor": params["factor"]}

    @rope_scaling.setter
    def rope_scaling(self, value: dict | None) -> None:
        if value is not None and "rope_type" not in value:
            _validate_baai_rope_scaling(value)
            value = {"rope_type": value["type"], "factor": value["factor"]}
        self.rope_parameters = {"rope_type": "default", **(value or {}), "rope_theta": self.rope_theta}

    @property
    def visual_token_ids(self) -> range:
        """The contiguous range of visual-token ids (code ``c`` is id ``visual_token_offset + c``)."""
        return range(self.visual_token_offset, self.visual_token_offset + self.codebook_size)


__all__ = ["Emu3LMConfig"]
