"""Emu3's VQ vision tokenizer (BAAI `Emu3VisionVQModel`) with BAAI's exact parameter layout.

The model maps pixels to discrete visual tokens and back:

- `encode`:  (B, 3, H, W) -> (B, h, w) codes, or (B, T, 3, H, W) -> (B, T/tf, h, w) codes
- `decode`:  (B, h, w) -> (B, 3, H, W) pixels, or (B, t, h, w) -> (B, t*tf, 3, H, W) pixels

with `h = H / sf` (`sf = spatial_scale_factor = 2 ** (len(ch_mult) - 1)`) and `tf = temporal_downsample_factor`.

Architecture (MoVQ with a causal temporal stage): a 2-D convolutional encoder runs on every frame, then strided
causal 3-D convolutions and temporal residual blocks compress time; the decoder mirrors it and conditions every
norm on the quantised latent (SpatialNorm). Parameter names equal BAAI's, so BAAI checkpoints load strictly.

This module imports only torch, transformers and its sibling config, so it can be exported as Hub remote code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_emu3visionvq import GROUPNORM_GROUPS, Emu3VisionVQConfig
from .loading import ClearLoadErrors, WholeFolderSaves

# Rows of the (positions x codebook) distance matrix computed at once: bounds the quantiser's memory
# (2**26 float32 entries = 256 MiB) for long videos and large codebooks.
_QUANTIZE_CHUNK_ELEMENTS = 2**26


# ==== Building blocks ============================================================================================


class Emu3VisionVQGroupNorm(nn.GroupNorm):
    """GroupNorm(32, eps=1e-6) that accepts (and ignores) the decoder's conditioning, so blocks can share code."""

    def __init__(self, channels: int):
        super().__init__(num_groups=GROUPNORM_GROUPS, num_channels=channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x)


class Emu3VisionVQSpatialNorm(nn.Module):
    """MoVQ's spatially conditioned norm: `GroupNorm(x) * conv_y(zq') + conv_b(zq')`, zq' = zq resized to x (nearest).

    The 1x1 convs commute with nearest upsampling, so they run at the latent resolution and only their outputs are
    upsampled: the same numbers as BAAI's order, at a fraction of the cost at high resolution.
    """

    def __init__(self, channels: int, zq_channels: int):
        super().__init__()
        self.norm_layer = nn.GroupNorm(num_groups=GROUPNORM_GROUPS, num_channels=channels, eps=1e-6, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W); zq: (N, Cz, h, w) with H, W integer multiples of h, w
        scale = F.interpolate(self.conv_y(zq), size=x.shape[-2:], mode="nearest")  # (N, C, H, W)
        shift = F.interpolate(self.conv_b(zq), size=x.shape[-2:], mode="nearest")  # (N, C, H, W)
        return self.norm_layer(x) * scale + shift


def _make_norm(channels: int, zq_channels: int | None) -> nn.Module:
    """Encoder norms are plain GroupNorms; decoder norms (zq_channels given) are SpatialNorms."""
    if zq_channels is None:
        return Emu3VisionVQGroupNorm(channels)
    return Emu3VisionVQSpatialNorm(channels, zq_channels)


class Emu3VisionVQResnetBlock(nn.Module):
    """Pre-activation 2-D residual block: (norm, swish, conv3x3) x 2, with a 1x1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, zq_channels: int | None = None):
        super().__init__()
        self.norm1 = _make_norm(in_channels, zq_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = _make_norm(out_channels, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, C_in, H, W) -> (N, C_out, H, W)
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h, zq))))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class Emu3VisionVQAttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions of a frame, 1x1-conv projections, residual add."""

    def __init__(self, channels: int, zq_channels: int | None = None):
        super().__init__()
        self.norm = _make_norm(channels, zq_channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        n, c, height, width = x.shape
        h = self.norm(x, zq)
        # (N, C, H, W) -> (N, H*W, C); SDPA's default scale 1/sqrt(C) is the one BAAI uses.
        q, k, v = (proj(h).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (N, H*W, C)
        out = out.transpose(1, 2).reshape(n, c, height, width)
        return x + self.proj_out(out)


class Emu3VisionVQDownsample(nn.Module):
    """Halve H and W: zero-pad right/bottom by one, then a 3x3 stride-2 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Emu3VisionVQUpsample(nn.Module):
    """Double H and W: nearest upsampling, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Emu3VisionVQCausalConv3d(nn.Module):
    """Conv3d over (N, C, T, H, W) that only looks back in time: 2 frames of zero padding in front, none behind.

    BAAI pads time by (2, 0) whatever the kernel; H and W are padded by k - s, the odd pixel going left/top.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int] = (3, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
    ):
        super().__init__()
        pad_h, pad_w = (k - s for k, s in zip(kernel_size[1:], stride[1:]))
        # F.pad order: (W_left, W_right, H_top, H_bottom, T_front, T_back)
        self.padding = ((pad_w + 1) // 2, pad_w // 2, (pad_h + 1) // 2, pad_h // 2, 2, 0)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class Emu3VisionVQTemporalDownsample(nn.Module):
    """Halve T with a causal (4, 3, 3) conv of stride (2, 1, 1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Emu3VisionVQCausalConv3d(channels, channels, kernel_size=(4, 3, 3), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Emu3VisionVQTemporalUpsample(nn.Module):
    """Double T: repeat every frame twice (nearest), then a causal 3x3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Emu3VisionVQCausalConv3d(channels, channels, kernel_size=(3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=2))  # (N, C, 2T, H, W)


class Emu3VisionVQResnetTemporalBlock(nn.Module):
    """Residual block over (N, C, T, H, W): (BatchNorm3d, swish, causal 3x3x3 conv) x 2."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.norm1 = nn.BatchNorm3d(channels)
        self.conv1 = Emu3VisionVQCausalConv3d(channels, channels, kernel_size=(3, 3, 3))
        self.norm2 = nn.BatchNorm3d(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Emu3VisionVQCausalConv3d(channels, channels, kernel_size=(3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return x + h


class Emu3VisionVQMidBlock(nn.Module):
    """Residual block, attention, residual block at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, zq_channels: int | None = None):
        super().__init__()
        self.block_1 = Emu3VisionVQResnetBlock(channels, channels, dropout, zq_channels)
        self.attn_1 = Emu3VisionVQAttnBlock(channels, zq_channels)
        self.block_2 = Emu3VisionVQResnetBlock(channels, channels, dropout, zq_channels)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x, zq), zq), zq)


class Emu3VisionVQLevel(nn.Module):
    """One resolution level: residual blocks, each followed by an attention block at attention levels, then an
    optional resampler (`downsample` in the encoder, `upsample` in the decoder; none at the last level)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int,
        with_attention: bool,
        dropout: float,
        zq_channels: int | None = None,
        resample: str | None = None,
    ):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_blocks
        self.block = nn.ModuleList(
            Emu3VisionVQResnetBlock(widths[j], out_channels, dropout, zq_channels) for j in range(num_blocks)
        )
        self.attn = nn.ModuleList(
            Emu3VisionVQAttnBlock(out_channels, zq_channels) for _ in range(num_blocks if with_attention else 0)
        )
        if resample == "down":
            self.downsample = Emu3VisionVQDownsample(out_channels)
        elif resample == "up":
            self.upsample = Emu3VisionVQUpsample(out_channels)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x, zq)
            if len(self.attn) > 0:
                x = self.attn[j](x, zq)
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


# ==== Encoder, decoder, quantiser ================================================================================


class Emu3VisionVQEncoder(nn.Module):
    """Pixels -> latent. `spatial` runs per frame, `temporal` compresses time by `temporal_downsample_factor`."""

    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        levels = len(widths)
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, kernel_size=3, padding=1)
        self.down = nn.ModuleList(
            Emu3VisionVQLevel(
                in_channels=config.ch if i == 0 else widths[i - 1],
                out_channels=widths[i],
                num_blocks=config.num_res_blocks,
                with_attention=i in config.attn_resolutions,
                dropout=config.dropout,
                resample="down" if i < levels - 1 else None,
            )
            for i in range(levels)
        )
        self.mid = Emu3VisionVQMidBlock(widths[-1], config.dropout)
        self.norm_out = nn.GroupNorm(num_groups=GROUPNORM_GROUPS, num_channels=widths[-1], eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(widths[-1], config.z_channels, kernel_size=3, padding=1)
        num_time_steps = int(math.log2(config.temporal_downsample_factor))
        self.time_conv = nn.ModuleList(
            Emu3VisionVQTemporalDownsample(config.z_channels) for _ in range(num_time_steps)
        )
        self.time_res_stack = nn.Sequential(
            *(Emu3VisionVQResnetTemporalBlock(config.z_channels, config.dropout) for _ in range(config.num_res_blocks))
        )

    def spatial(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames -> (N, z_channels, H/sf, W/sf)."""
        h = self.conv_in(frames)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        """(B, z_channels, T, h, w) -> (B, z_channels, T/tf, h, w), causal in time."""
        for conv in self.time_conv:
            h = F.silu(conv(h))
        return self.time_res_stack(h)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, z_channels, T/tf, h, w)."""
        b, t = video.shape[:2]
        h = self.spatial(video.flatten(0, 1))  # (B*T, Cz, h, w)
        h = h.unflatten(0, (b, t)).transpose(1, 2)  # (B, Cz, T, h, w)
        return self.temporal(h)


class Emu3VisionVQDecoder(nn.Module):
    """Latent -> pixels. Time is expanded first (for the latent AND the conditioning), then frames decode in 2-D."""

    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        levels = len(widths)
        zq_channels = config.embed_dim
        self.time_res_stack = nn.Sequential(
            *(Emu3VisionVQResnetTemporalBlock(config.z_channels, config.dropout) for _ in range(config.num_res_blocks))
        )
        num_time_steps = int(math.log2(config.temporal_downsample_factor))
        self.time_conv = nn.ModuleList(Emu3VisionVQTemporalUpsample(config.z_channels) for _ in range(num_time_steps))
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], kernel_size=3, padding=1)
        self.mid = Emu3VisionVQMidBlock(widths[-1], config.dropout, zq_channels)
        # up[i] is level i (as in BAAI's checkpoints); it runs from the last level to the first and reads the width
        # of the level below it, i.e. widths[i + 1] (widths[-1] for the last level).
        self.up = nn.ModuleList(
            Emu3VisionVQLevel(
                in_channels=widths[min(i + 1, levels - 1)],
                out_channels=widths[i],
                num_blocks=config.num_res_blocks + 1,
                with_attention=i in config.attn_resolutions,
                dropout=config.dropout,
                zq_channels=zq_channels,
                resample="up" if i > 0 else None,
            )
            for i in range(levels)
        )
        self.norm_out = Emu3VisionVQSpatialNorm(widths[0], zq_channels)
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, kernel_size=3, padding=1)

    def temporal(self, z: torch.Tensor, zq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expand time of the latent z and the conditioning zq, both (B, C, t, h, w) -> (B, C, t*tf, h, w).

        As in BAAI's model, both go through the same temporal blocks stacked along the batch dimension, so the
        conditioning of every SpatialNorm is itself processed in time. (In training mode the BatchNorms therefore
        see statistics over both halves, as in BAAI's model.)
        """
        h = self.time_res_stack(torch.cat([z, zq], dim=0))  # (2B, C, t, h, w)
        for conv in self.time_conv:
            h = F.silu(conv(h))
        return h.chunk(2, dim=0)

    def spatial(self, h: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        """Decode frames: h (N, z_channels, h, w), zq (N, embed_dim, h, w) -> (N, out_channels, H, W)."""
        h = self.mid(self.conv_in(h), zq)
        for level in reversed(self.up):
            h = level(h, zq)
        return self.conv_out(F.silu(self.norm_out(h, zq)))

    def forward(self, z: torch.Tensor, zq: torch.Tensor, first_frame_only: bool = False) -> torch.Tensor:
        """z, zq: (B, C, t, h, w) -> (B, t*tf, out_channels, H, W), or (B, 1, ...) with `first_frame_only`.

        Every temporal op is causal and the 2-D part is per frame, so decoding only the first frame is exact.
        """
        h, zq = self.temporal(z, zq)  # (B, C, T, h, w) each
        if first_frame_only:
            h, zq = h[:, :, :1], zq[:, :, :1]
        b, t = h.shape[0], h.shape[2]
        frames = self.spatial(h.transpose(1, 2).flatten(0, 1), zq.transpose(1, 2).flatten(0, 1))  # (B*T, 3, H, W)
        return frames.unflatten(0, (b, t))


class Emu3VisionVQVectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantiser (squared L2, no normalisation), computed in float32; never a row of the
    config's ``reserved_codes`` (read at each call)."""

    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.codebook_size, config.embed_dim)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, T, C, h, w) -> codes (B, T, h, w) int64."""
        b, t, c, h, w = latent.shape
        z = latent.permute(0, 1, 3, 4, 2).reshape(-1, c).float()  # (N, C)
        codebook = self.embedding.weight.float()  # (K, C)
        codebook_sq = codebook.square().sum(dim=1)  # (K,)
        if self.config.reserved_codes:  # an infinite norm: never the nearest
            reserved = torch.as_tensor(self.config.reserved_codes, device=codebook_sq.device)
            codebook_sq = codebook_sq.index_fill(0, reserved, float("inf"))
        rows = max(1, _QUANTIZE_CHUNK_ELEMENTS // codebook.shape[0])
        codes = []
        for z_chunk in z.split(rows):
            # |z|^2 + |e|^2 - 2 z.e, in BAAI's order of terms, so near-ties resolve the same way.
            dist = z_chunk.square().sum(dim=1, keepdim=True) + torch.addmm(codebook_sq, z_chunk, codebook.t(), alpha=-2)
            codes.append(dist.argmin(dim=1))  # (n,)
        return torch.cat(codes).view(b, t, h, w)


# ==== Pretrained model ===========================================================================================


@dataclass
class Emu3VisionVQOutput(ModelOutput):
    """Output of [`Emu3VisionVQModel.forward`] (a reconstruction pass).

    Args:
        codes (`torch.LongTensor` of shape `(B, h, w)` or `(B, T/tf, h, w)`): visual token ids.
        latents (`torch.FloatTensor` of shape `(B, T/tf, C, h, w)`): pre-quantisation latent.
        reconstruction (`torch.FloatTensor`, same shape as the input): decoded pixels, not clipped.
    """

    codes: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None


class Emu3VisionVQPreTrainedModel(ClearLoadErrors, WholeFolderSaves, PreTrainedModel):
    """Weight init and loading glue shared by the Emu3 VQ models."""

    config_class = Emu3VisionVQConfig
    base_model_prefix = "emuvideovq"
    main_input_name = "pixel_values"
    input_modalities = ["image", "video"]
    _no_split_modules = [
        "Emu3VisionVQResnetBlock",
        "Emu3VisionVQAttnBlock",
        "Emu3VisionVQResnetTemporalBlock",
    ]

    def _init_weights(self, module: nn.Module) -> None:
        # `init.*` skips tensors already loaded from a checkpoint (their `_is_hf_initialized` flag is set).
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            # BAAI: kaiming normal (fan_out) for conv weights; biases keep torch's default uniform(+-1/sqrt(fan_in)).
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            # BAAI's codebook init: uniform(-1/K, 1/K).
            bound = 1.0 / module.num_embeddings
            init.uniform_(module.weight, -bound, bound)
        elif isinstance(module, (nn.GroupNorm, nn.BatchNorm3d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm3d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class Emu3VisionVQModel(Emu3VisionVQPreTrainedModel):
    """Emu3's VQ vision tokenizer: images and videos <-> grids of visual token ids.

    Example:

    ```python
    >>> import torch
    >>> from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
    >>> vq = Emu3VisionVQModel.from_pretrained("tests/fixtures/baai-tiny/vq").eval()
    >>> pixels = torch.rand(1, 3, 16, 24) * 2 - 1  # normalised to [-1, 1] like the image processor's output
    >>> codes = vq.encode(pixels)  # (1, 8, 12) int64 in [0, vq.codebook_size)
    >>> vq.decode(codes).shape
    torch.Size([1, 3, 16, 24])
    ```
    """

    def __init__(self, config: Emu3VisionVQConfig):
        super().__init__(config)
        self.encoder = Emu3VisionVQEncoder(config)
        self.decoder = Emu3VisionVQDecoder(config)
        self.quantize = Emu3VisionVQVectorQuantizer(config)
        self.quant_conv = Emu3VisionVQCausalConv3d(config.z_channels, config.embed_dim)
        self.post_quant_conv = Emu3VisionVQCausalConv3d(config.embed_dim, config.z_channels)
        self.post_init()

    @property
    def spatial_scale_factor(self) -> int:
        """Pixels per visual token along H and W."""
        return self.config.spatial_scale_factor

    @property
    def temporal_downsample_factor(self) -> int:
        """Frames per latent frame."""
        return self.config.temporal_downsample_factor

    @property
    def codebook_size(self) -> int:
        """Number of visual tokens; codes lie in [0, codebook_size)."""
        return self.config.codebook_size

    # -- input checks --------------------------------------------------------------------------------------------

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        shape = tuple(pixel_values.shape)
        if pixel_values.ndim not in (4, 5):
            raise ValueError(
                f"pixel_values must be an image batch (B, C, H, W) or a video batch (B, T, C, H, W), got shape "
                f"{shape}. Add the batch dimension with pixel_values[None] for a single image or clip."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be a floating-point tensor normalised like the image processor's output "
                f"(about [-1, 1]), got dtype {pixel_values.dtype}. Run the Emu3 image processor, or use "
                "pixel_values.float() / 127.5 - 1 on uint8 pixels."
            )
        channels, height, width = shape[-3:]
        if channels != self.config.in_channels:
            raise ValueError(
                f"pixel_values has {channels} channels at dim {pixel_values.ndim - 3} (shape {shape}); the VQ expects "
                f"{self.config.in_channels}, laid out (B, C, H, W) or (B, T, C, H, W). Convert images to RGB and put "
                "channels before H and W (e.g. x.permute(0, 3, 1, 2) for channels-last input)."
            )
        sf = self.spatial_scale_factor
        if height % sf or width % sf:
            raise ValueError(
                f"pixel_values height and width must be multiples of spatial_scale_factor={sf}, got H={height}, "
                f"W={width}. Resize with the Emu3 image processor (it picks multiples of {sf}) or pad/crop to "
                f"{height // sf * sf or sf}x{width // sf * sf or sf}."
            )
        tf = self.temporal_downsample_factor
        if pixel_values.ndim == 5 and shape[1] % tf:
            raise ValueError(
                f"video pixel_values must have a number of frames T divisible by temporal_downsample_factor={tf}, got "
                f"T={shape[1]} (shape {shape}). Trim or pad the clip to {shape[1] // tf * tf or tf} frames (e.g. "
                "repeat the last frame)."
            )

    def _check_codes(self, codes: torch.Tensor) -> None:
        shape = tuple(codes.shape)
        if codes.ndim not in (3, 4):
            raise ValueError(
                f"codes must be an image grid (B, h, w) or a video grid (B, t, h, w), got shape {shape}. Add the batch "
                "dimension with codes[None] for a single grid."
            )
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise ValueError(
                f"codes must be an integer tensor of visual token ids, got dtype {codes.dtype}. Cast with codes.long() "
                "(and subtract the id of the first visual token if these are LM token ids)."
            )
        if codes.numel() > 0:
            low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= self.codebook_size:
                raise ValueError(
                    f"codes must lie in [0, codebook_size={self.codebook_size}), got values in [{low}, {high}]. If "
                    "these are LM token ids, subtract the id of the first visual token first."
                )

    # -- encode ----------------------------------------------------------------------------------------------------

    def encode_to_latent(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent (the output of `quant_conv`).

        Args:
            pixel_values: images (B, C, H, W) or videos (B, T, C, H, W), normalised as by the image processor.

        Returns:
            `(B, T/tf, embed_dim, H/sf, W/sf)`; an image gives one latent frame (T/tf = 1).
        """
        self._check_pixel_values(pixel_values)
        pixel_values = pixel_values.to(self.dtype)
        if pixel_values.ndim == 4:
            # An image is a clip of `tf` identical frames (BAAI): the 2-D encoder runs once and its output is repeated.
            h = self.encoder.spatial(pixel_values)  # (B, Cz, h, w)
            h = self.encoder.temporal(h.unsqueeze(2).expand(-1, -1, self.temporal_downsample_factor, -1, -1))
        else:
            h = self.encoder(pixel_values)  # (B, Cz, T/tf, h, w)
        return self.quant_conv(h).transpose(1, 2)  # (B, T/tf, C, h, w)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Encode pixels into visual token ids (codes are not differentiable, so this runs without autograd).

        Args:
            pixel_values: images (B, C, H, W) or videos (B, T, C, H, W) with T a multiple of
                `temporal_downsample_factor`; H and W multiples of `spatial_scale_factor`.

        Returns:
            int64 codes `(B, H/sf, W/sf)` for images, `(B, T/tf, H/sf, W/sf)` for videos. Frames of a video are mixed
            causally across the whole clip; to encode chunks independently (BAAI's README recipe), view the frames as
            `(-1, tf, C, H, W)` first.
        """
        codes = self.quantize(self.encode_to_latent(pixel_values))  # (B, T', h, w)
        return codes[:, 0] if pixel_values.ndim == 4 else codes

    # -- decode ----------------------------------------------------------------------------------------------------

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode visual token ids into pixels (raw decoder output, not clipped; about [-1, 1]).

        Args:
            codes: integer ids in `[0, codebook_size)`, `(B, h, w)` for images or `(B, t, h, w)` for videos.

        Returns:
            `(B, C, h*sf, w*sf)` for a 3-D grid (the first of the `tf` decoded frames, as in BAAI's model), or
            `(B, t*tf, C, h*sf, w*sf)` for a 4-D grid.
        """
        self._check_codes(codes)
        is_image = codes.ndim == 3
        grid = codes.unsqueeze(1) if is_image else codes  # (B, t, h, w)
        quant = self.quantize.embedding(grid.long()).permute(0, 4, 1, 2, 3)  # (B, C, t, h, w)
        z = self.post_quant_conv(quant)  # (B, Cz, t, h, w)
        video = self.decoder(z, quant, first_frame_only=is_image)  # (B, T, 3, H, W)
        return video[:, 0] if is_image else video

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None) -> Emu3VisionVQOutput | tuple:
        """Reconstruct pixels through the codebook: encode, quantise, decode.

        Returns an [`Emu3VisionVQOutput`] with `codes`, `latents` and `reconstruction` (same shape as the input).
        """
        latents = self.encode_to_latent(pixel_values)  # (B, T', C, h, w)
        codes = self.quantize(latents)  # (B, T', h, w)
        if pixel_values.ndim == 4:
            codes = codes[:, 0]
        output = Emu3VisionVQOutput(codes=codes, latents=latents, reconstruction=self.decode(codes))
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = ["Emu3VisionVQModel", "Emu3VisionVQPreTrainedModel", "Emu3VisionVQOutput"]
