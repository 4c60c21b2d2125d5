"""Configuration of Emu3's VQ vision tokenizer, compatible with BAAI's ``config.json`` (model_type "Emu3VisionVQ").

This module imports only ``transformers`` and ``huggingface_hub`` so that it can be exported as Hub remote code.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

# Every 2-D norm of the VQ is a GroupNorm (or a SpatialNorm wrapping one) with this many groups.
GROUPNORM_GROUPS = 32


@strict
class Emu3VisionVQConfig(PreTrainedConfig):
    r"""
    Configuration of [`Emu3VisionVQModel`], the video VQ tokenizer of Emu3 (a MoVQ-style encoder/decoder with
    causal 3-D convolutions in time). Field names and defaults are BAAI's, so BAAI's ``config.json`` files load as is.

    Args:
        codebook_size (`int`, *optional*, defaults to 32768):
            Number of codebook entries (visual tokens).
        embed_dim (`int`, *optional*, defaults to 4):
            Width of a codebook vector. Must equal `z_channels` (the decoder stacks the latent and the quantised
            latent along the batch dimension).
        z_channels (`int`, *optional*, defaults to 4):
            Channels of the encoder output and of the decoder input.
        double_z (`bool`, *optional*, defaults to `False`):
            Kept for compatibility with BAAI's field; `True` cannot run and is rejected.
        in_channels (`int`, *optional*, defaults to 3):
            Channels of the input pixels.
        out_channels (`int`, *optional*, defaults to 3):
            Channels of the decoded pixels.
        temporal_downsample_factor (`int`, *optional*, defaults to 4):
            Frames per latent frame; a power of two (one strided causal convolution per factor of two).
        ch (`int`, *optional*, defaults to 256):
            Base channel count of the convolutional trunk.
        ch_mult (`list[int]`, *optional*, defaults to `[1, 2, 2, 4]`):
            Channel multiplier per resolution level; the spatial scale factor is `2 ** (len(ch_mult) - 1)`.
        num_res_blocks (`int`, *optional*, defaults to 2):
            Residual blocks per level in the encoder (the decoder has one more), and temporal residual blocks.
        attn_resolutions (`list[int]`, *optional*, defaults to `[3]`):
            LEVEL INDICES (0 .. len(ch_mult)-1) that get an attention block after every residual block.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout probability inside the residual blocks.
        reserved_codes (`list[int]`, *optional*):
            Codebook rows the quantiser never chooses: codes that only a language model writes and only the decoder
            reads (a decoder taught to draw codes that no picture encodes to). Not a BAAI field; absent, every row can
            be chosen, as in BAAI's model. The BAAI layout and emu3-hf folders keep it; transformers' native layout
            cannot, so conversion to it is refused.

    Example:

    ```python
    >>> from emu3_hf.modeling.configuration_emu3visionvq import Emu3VisionVQConfig
    >>> config = Emu3VisionVQConfig(ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[1])
    >>> config.spatial_scale_factor
    2
    ```
    """

    model_type = "Emu3VisionVQ"

    codebook_size: int = 32768
    embed_dim: int = 4
    z_channels: int = 4
    double_z: bool = False
    in_channels: int = 3
    out_channels: int = 3
    temporal_downsample_factor: int = 4
    ch: int = 256
    ch_mult: list[int] | tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: list[int] | tuple[int, ...] = (3,)
    dropout: float | int = 0.0
    reserved_codes: list[int] | None = None

    def __post_init__(self, **kwargs):
        # JSON gives lists, defaults are tuples (dataclass fields cannot default to a list): store lists everywhere.
        self.ch_mult = list(self.ch_mult)
        self.attn_resolutions = list(self.attn_resolutions)
        # Check here too (not only in `validate_architecture`) so that a bad config raises a plain ValueError.
        self._check_architecture()
        super().__post_init__(**kwargs)

    @property
    def spatial_scale_factor(self) -> int:
        """Pixels per latent position along H and W: `2 ** (len(ch_mult) - 1)`."""
        return 2 ** (len(self.ch_mult) - 1)

    def validate_architecture(self):
        """Part of `@strict`-powered validation (`config.validate()`): checks that the VQ can be built and run."""
        super().validate_architecture()
        self._check_architecture()

    def _check_architecture(self) -> None:
        if self.embed_dim != self.z_channels:
            raise ValueError(
                f"Emu3VisionVQConfig: embed_dim ({self.embed_dim}) must equal z_channels ({self.z_channels}), because "
                "the decoder processes the latent and the quantised latent together. Set both to the same value."
            )
        if self.double_z:
            raise ValueError(
                "Emu3VisionVQConfig: double_z=True is not supported (the quant conv expects z_channels inputs, as in "
                "BAAI's model). Set double_z=False."
            )
        if len(self.ch_mult) == 0:
            raise ValueError("Emu3VisionVQConfig: ch_mult must name at least one level, e.g. [1, 2, 2, 4].")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % GROUPNORM_GROUPS != 0 or m <= 0]
        if self.ch <= 0 or bad:
            raise ValueError(
                f"Emu3VisionVQConfig: every level width ch * ch_mult[i] must be a positive multiple of "
                f"{GROUPNORM_GROUPS} (GroupNorm with {GROUPNORM_GROUPS} groups); got ch={self.ch}, "
                f"ch_mult={self.ch_mult}. Choose ch and ch_mult so that ch * m % {GROUPNORM_GROUPS} == 0."
            )
        tf = self.temporal_downsample_factor
        if tf < 1 or tf & (tf - 1) != 0:
            raise ValueError(
                f"Emu3VisionVQConfig: temporal_downsample_factor must be a power of 2 (1, 2, 4, 8, ...), got {tf}."
            )
        levels = len(self.ch_mult)
        out_of_range = [i for i in self.attn_resolutions if not 0 <= i < levels]
        if out_of_range:
            raise ValueError(
                f"Emu3VisionVQConfig: attn_resolutions holds level indices in [0, {levels}) (len(ch_mult)), not "
                f"pixel resolutions; got {self.attn_resolutions}. Use e.g. [{levels - 1}] for the lowest resolution."
            )
        if self.num_res_blocks < 1:
            raise ValueError(f"Emu3VisionVQConfig: num_res_blocks must be >= 1, got {self.num_res_blocks}.")
        if self.codebook_size < 1:
            raise ValueError(f"Emu3VisionVQConfig: codebook_size must be >= 1, got {self.codebook_size}.")
        reserved = self.reserved_codes or []
        if any(not 0 <= row < self.codebook_size for row in reserved) or len(set(reserved)) >= self.codebook_size:
            raise ValueError(
                f"Emu3VisionVQConfig: reserved_codes must be rows in [0, {self.codebook_size}) that leave the quantiser "
                f"at least one row to choose; got {len(reserved)} rows, {sorted(reserved)[:3]}..{sorted(reserved)[-3:]}."
            )


__all__ = ["Emu3VisionVQConfig"]
