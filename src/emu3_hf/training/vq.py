"""Training of the VQ vision tokenizer (:class:`~emu3_hf.Emu3VisionVQModel`) on images and clips: :func:`train_vq`.

One step encodes a batch of images and a batch of clips (either may be absent), quantises every latent vector to
its nearest codebook entry and decodes through a straight-through estimator (the decoder sees the codebook vector,
the encoder receives the decoder's gradient), exactly the computation of ``encode`` + ``decode`` at inference.
An image is what the model makes of it at inference: its 2-D features repeated over ``temporal_downsample_factor``
frames for the temporal encoder, and only the first decoded frame compared with it.

Loss (every term a mean, images and clips weighted by their share of decoded pixels or of latent vectors):

    l1_weight * |x - x'| + mse_weight * (x - x')^2                       (pixels in [-1, 1])
    + codebook_weight * ||sg[z] - e||^2 + commitment_weight * ||z - sg[e]||^2   (VQ-VAE's codebook + commitment)
    + locality_weight * ||z(x pasted) - sg[z(x)]||^2 / sg[||z(x)||^2]      (images only, far from the paste)

Locality (off by default): a code should describe its own patch, not the whole picture. GroupNorm statistics and
attention let every latent vector see the whole image, so one changed corner can change every code, and a language
model over those codes cannot compose what it has seen into new pictures. With ``locality_weight > 0`` each image
also gets a pasted copy: a random cell-aligned box (1 to half the latent grid per side) is replaced by the same box
of another image of the batch; the latent vectors of the copy at cells more than ``locality_margin`` cells away from
the box are pulled to those of the original (relative squared error, the original detached).

An extra term (``train_vq(..., objective=...)``, a :class:`VQObjective`) can join every step, with tensors of its
own that train and checkpoint with the model: the tiny world's stage 1d teaches the decoder its canonical grids so.

Dead codes: a codebook entry that no latent vector chose during the last ``dead_code_steps`` steps (and that was
not re-initialised within them) is re-initialised to a latent vector of the current step drawn at random, and its
AdamW moments are cleared, so the whole codebook stays in use (a fresh model's codebook, BAAI's tiny uniform init,
counts as dead from the start, so the first step seeds it from encoder outputs). ``usage`` in the log is the fraction of
the codebook chosen at least once during the last ``usage_window`` steps.

AdamW (no weight decay on the codebook, norms and biases), linear warm-up then cosine decay, gradient clipping,
checkpoints every ``save_steps`` with exact resume (:mod:`.checkpoint`: safetensors + JSON; the BatchNorm
statistics, codebook usage and the restart generator go into ``extra.safetensors``), and at the end the VQ folder
(``save_pretrained``, written atomically) with ``training_config.json`` (the settings and the per-step log).

Example:
    ```python
    >>> from emu3_hf.tiny_world import iter_image_examples, iter_video_examples
    >>> from emu3_hf.training import VQTrainConfig, tiny_world_vq_config, train_vq
    >>> result = train_vq(
    ...     VQTrainConfig(model=tiny_world_vq_config(), output_dir="tiny-vq", max_steps=2000, save_steps=200,
    ...                   image_batch_size=8, video_batch_size=8),
    ...     images=iter_image_examples("train", epochs=None), videos=iter_video_examples("train", epochs=None))
    >>> result.history[-1]["l1"], result.history[-1]["usage"]
    ```
"""

from __future__ import annotations

import abc
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.configuration_emu3visionvq import Emu3VisionVQConfig
from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel
from ..processing.arguments import check_finite
from ..utils.atomic import staged_folder
from .checkpoint import (
    find_checkpoints,
    load_checkpoint,
    load_extra_tensors,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
)
from .vq_data import ExampleSource, stack_batch

# The fields that fix the VQ's parameters: a checkpoint resumes only into the same architecture.
_ARCHITECTURE = ("codebook_size", "embed_dim", "z_channels", "in_channels", "out_channels",
                 "temporal_downsample_factor", "ch", "ch_mult", "num_res_blocks", "attn_resolutions")  # fmt: skip
_NEVER = -(2**62)  # the step a code that was never used or (re)initialised counts as last used


def tiny_world_vq_config(**overrides: Any) -> Emu3VisionVQConfig:
    """The small VQ for the tiny world (``docs/TINY_WORLD.md``): BAAI's architecture at width 32, 8x spatial and 4x
    temporal compression (a 64 x 64 image is 8 x 8 codes, an 8-frame clip 2 x 8 x 8), attention at the lowest
    level only, a codebook of 1024 four-dimensional entries; about 1.1 M parameters.

    Example:
        ```python
        >>> config = tiny_world_vq_config()
        >>> config.spatial_scale_factor, config.codebook_size
        (8, 1024)
        ```
    """
    settings = dict(codebook_size=1024, embed_dim=4, z_channels=4, ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1,
                    attn_resolutions=[3], temporal_downsample_factor=4, dropout=0.0)  # fmt: skip
    settings.update(overrides)
    return Emu3VisionVQConfig(**settings)


@dataclass
class VQTrainConfig:
    """Settings of one VQ training run (checked by :meth:`check` before anything is loaded).

    model: an :class:`~emu3_hf.Emu3VisionVQConfig` (a fresh model, initialised from ``seed``) or a folder written
        by ``Emu3VisionVQModel.save_pretrained`` (BAAI's VisionTokenizer folder too) to train further.
    output_dir: receives ``checkpoint-<step>`` folders and, at the end, the trained VQ folder.
    image_batch_size, video_batch_size: images and clips per step (0 = none of that kind).
    max_steps: optimizer steps. learning_rate, weight_decay, warmup_steps, max_grad_norm (None = no clipping):
        AdamW with linear warm-up then cosine decay to 0.
    l1_weight, mse_weight, codebook_weight, commitment_weight, locality_weight: the loss terms (see the module
        docstring); locality_margin: cells around the pasted box left out of the locality term.
    dead_code_steps: re-initialise codes unused for this many steps (None = never). usage_window: steps over which
        the logged codebook usage is counted.
    decoder_only: train ``post_quant_conv`` and the decoder only; the encoder (its BatchNorm statistics too),
        ``quant_conv`` and the codebook stay as loaded, so every input keeps exactly its codes (a language model
        trained on them stays valid) and no dead code is restarted. Needs a trained ``model`` folder.
    save_steps: checkpoint every this many steps (0 = none); save_total_limit: newest checkpoints kept (None =
        all); resume_from_checkpoint: a checkpoint folder or "latest" (the newest under ``output_dir``).
    seed: model init, data order, dropout and restart draws. device: "cpu", "cuda", ... (None = CUDA if present).
    """

    model: Any
    output_dir: str | os.PathLike
    image_batch_size: int = 8
    video_batch_size: int = 0
    max_steps: int = 1000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_grad_norm: float | None = 1.0
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    codebook_weight: float = 1.0
    commitment_weight: float = 0.25
    locality_weight: float = 0.0
    locality_margin: int = 1
    dead_code_steps: int | None = 20
    usage_window: int = 50
    decoder_only: bool = False
    save_steps: int = 0
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | os.PathLike | None = None
    seed: int = 0
    device: str | None = None
    show_progress: bool = True

    def check(self) -> None:
        """Raise a ValueError naming any setting that cannot work, and the fix."""
        counts = {"image_batch_size": 0, "video_batch_size": 0, "warmup_steps": 0, "save_steps": 0, "seed": 0,
                  "max_steps": 1, "usage_window": 1, "locality_margin": 0}  # fmt: skip
        for name, low in counts.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"VQTrainConfig.{name} must be an integer >= {low}, got {value!r}.")
        for name in ("dead_code_steps", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
                raise ValueError(f"VQTrainConfig.{name} must be an integer >= 1 or None, got {value!r}.")
        if self.image_batch_size + self.video_batch_size == 0:
            raise ValueError("VQTrainConfig: image_batch_size and video_batch_size are both 0; set at least one > 0.")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"VQTrainConfig.warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}).")
        for name in ("learning_rate", "weight_decay", "l1_weight", "mse_weight", "codebook_weight",
                     "commitment_weight", "locality_weight"):  # fmt: skip
            if check_finite(f"VQTrainConfig.{name}", getattr(self, name)) < 0:
                raise ValueError(f"VQTrainConfig.{name} must be a finite number >= 0, got {getattr(self, name)!r}.")
        if self.locality_weight and not self.image_batch_size:
            raise ValueError("VQTrainConfig.locality_weight applies to images, but image_batch_size=0; set "
                             "image_batch_size > 0 or locality_weight=0.")  # fmt: skip
        if self.learning_rate == 0:
            raise ValueError("VQTrainConfig.learning_rate must be > 0, got 0.")
        if not isinstance(self.decoder_only, bool):
            raise ValueError(f"VQTrainConfig.decoder_only must be True or False, got {self.decoder_only!r}.")
        if self.decoder_only and isinstance(self.model, Emu3VisionVQConfig):
            raise ValueError("VQTrainConfig.decoder_only=True keeps the encoder and codebook as they are, but model is "
                             "a fresh config; pass a trained VQ folder as model.")  # fmt: skip
        if self.decoder_only and self.locality_weight:
            raise ValueError("VQTrainConfig.locality_weight shapes the encoder, which decoder_only=True freezes; set "
                             "locality_weight=0 or decoder_only=False.")  # fmt: skip
        if self.l1_weight + self.mse_weight == 0:
            raise ValueError("VQTrainConfig: l1_weight and mse_weight are both 0; the decoder would learn nothing.")
        if self.max_grad_norm is not None and not (isinstance(self.max_grad_norm, (int, float)) and
                                                   self.max_grad_norm > 0):  # fmt: skip
            raise ValueError(f"VQTrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}.")
        self._check_model()
        if Path(self.output_dir).is_file():
            raise ValueError(f"VQTrainConfig.output_dir {self.output_dir} is a file; name a folder.")
        where = self.resume_from_checkpoint
        if where is not None and where != "latest" and not Path(where).is_dir():
            raise FileNotFoundError(f"VQTrainConfig.resume_from_checkpoint: {where} is not a folder.")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"VQTrainConfig.device {self.device!r} is not a torch device (e.g. 'cpu', 'cuda').")

    def _check_model(self) -> None:
        if isinstance(self.model, Emu3VisionVQConfig):
            return
        if not isinstance(self.model, (str, os.PathLike)):
            raise ValueError(
                f"VQTrainConfig.model must be an Emu3VisionVQConfig (fresh model) or a saved VQ folder, got "
                f"{type(self.model).__name__}. E.g. model=tiny_world_vq_config()."
            )
        if not (Path(self.model) / "config.json").is_file():
            raise FileNotFoundError(
                f"VQTrainConfig.model: {self.model} is not a VQ folder (no config.json); pass a folder written by "
                "Emu3VisionVQModel.save_pretrained, or an Emu3VisionVQConfig to start from scratch."
            )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.model, Emu3VisionVQConfig):
            out["model"] = _architecture(self.model)
        return {k: str(v) if isinstance(v, os.PathLike) else v for k, v in out.items()}


@dataclass
class VQTrainResult:
    """``output_dir`` (the saved VQ folder), the final ``global_step``, the per-step log ``history`` (one dict per
    step: loss, l1, mse, vq, locality, usage, batch_usage, restarted, grad_norm, lr, seconds; a resumed run includes the
    steps before the checkpoint) and the trained ``model`` (in eval mode)."""

    output_dir: Path
    global_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    model: Emu3VisionVQModel | None = None


@dataclass
class VQForward:
    """One straight-through pass: ``reconstruction`` (input's shape), ``latents`` and ``quantized`` (the chosen
    codebook vectors), both (B, T', C, h, w), and the ``codes`` (B, T', h, w)."""

    reconstruction: torch.Tensor
    latents: torch.Tensor
    quantized: torch.Tensor
    codes: torch.Tensor


def vq_forward(model: Emu3VisionVQModel, pixel_values: torch.Tensor) -> VQForward:
    """Encode, quantise and decode with a straight-through estimator: the value is ``decode(encode(x))`` of
    inference (up to float rounding), the gradient reaches the encoder through the quantiser.

    ``pixel_values``: images (B, 3, H, W) or clips (B, T, 3, H, W) in [-1, 1]."""
    latents = model.encode_to_latent(pixel_values)  # (B, T', C, h, w)
    codes = model.quantize(latents.detach())  # (B, T', h, w), nearest entries (no gradient through argmin)
    quantized = model.quantize.embedding(codes).permute(0, 1, 4, 2, 3).to(latents.dtype)  # (B, T', C, h, w)
    straight = latents + (quantized - latents).detach()
    is_image = pixel_values.ndim == 4
    video = decode_vectors(model, straight, first_frame_only=is_image)  # (B, T, 3, H, W)
    return VQForward(video[:, 0] if is_image else video, latents, quantized, codes)


def decode_vectors(model: Emu3VisionVQModel, vectors: torch.Tensor, first_frame_only: bool = False) -> torch.Tensor:
    """``decode`` from code vectors instead of code ids, differentiable in them: ``vectors`` (B, T', C, h, w) ->
    (B, T, 3, H, W) (one frame per latent frame when ``first_frame_only``, as an image is decoded)."""
    q = vectors.transpose(1, 2)  # (B, C, T', h, w)
    return model.decoder(model.post_quant_conv(q), q, first_frame_only=first_frame_only)


class VQObjective(abc.ABC):
    """An extra training term for :func:`train_vq` (its ``objective=``), such as the tiny world's canonical grids
    (:class:`emu3_hf.tiny_world.canonical.CanonicalGridObjective`). The trainer calls :meth:`setup` once on the
    loaded model, :meth:`loss` every step (the loss is added to the step's and back-propagated with it),
    :meth:`after_step` after each optimizer step and :meth:`finish` before the VQ folder is written.
    :meth:`parameters` train with the model, at ``learning_rate_scale`` times the run's learning rate, without weight
    decay, and are saved with its checkpoints (as ``objective.<i>``; the VQ folder holds only the model)."""

    learning_rate_scale: float = 1.0

    def setup(self, model: Emu3VisionVQModel, device: torch.device) -> None:
        """Prepare for ``model`` (loaded and moved to ``device``) before the optimizer is built."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Tensors the objective trains besides the model's (none by default)."""
        return []

    @abc.abstractmethod
    def loss(self, model: Emu3VisionVQModel, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The term for this step (a scalar with a gradient) and the values to log."""

    def after_step(self, model: Emu3VisionVQModel) -> None:
        """Write what the objective's parameters define into the model: called after each optimizer step and after a
        checkpoint is restored."""

    def finish(self, model: Emu3VisionVQModel) -> None:
        """Called once before the trained model is saved (e.g. to record settings in its config)."""


def _architecture(config: Emu3VisionVQConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in _ARCHITECTURE}


def _load_model(config: VQTrainConfig) -> Emu3VisionVQModel:
    if isinstance(config.model, Emu3VisionVQConfig):
        torch.manual_seed(config.seed)
        return Emu3VisionVQModel(config.model)
    return Emu3VisionVQModel.from_pretrained(config.model).to(torch.float32)


def _check_sources(config: VQTrainConfig, images: Any, videos: Any) -> None:
    for kind, data, size in (("images", images, config.image_batch_size), ("videos", videos, config.video_batch_size)):
        if size and data is None:
            raise ValueError(f"{kind[:-1]}_batch_size={size} but no {kind} were passed: pass {kind}=... or set "
                             f"{kind[:-1]}_batch_size=0.")  # fmt: skip
        if not size and data is not None:
            raise ValueError(f"{kind} were passed but {kind[:-1]}_batch_size=0: set {kind[:-1]}_batch_size > 0 "
                             f"(e.g. 8) or drop {kind}.")  # fmt: skip


class _VQTrainer:
    def __init__(self, config: VQTrainConfig, images: Any, videos: Any, objective: VQObjective | None = None):
        self.config, self.objective = config, objective
        self.output = Path(config.output_dir)
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        random.seed(config.seed)
        np.random.seed(config.seed)
        torch.manual_seed(config.seed)
        self.sources = {kind: ExampleSource(data, kind, config.seed)
                        for kind, data in (("image", images), ("video", videos)) if data is not None}  # fmt: skip
        self.model = _load_model(config).to(self.device)
        self._train_mode()
        self.trained = [p for p in self.model.parameters() if p.requires_grad]  # all, or the decoder side
        codebook = self.model.quantize.embedding.weight
        decay = [p for p in self.trained if p.ndim >= 2 and p is not codebook]  # conv weights
        rest = [p for p in self.trained if not (p.ndim >= 2 and p is not codebook)]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        self.checkpointed: torch.nn.Module = self.model  # what checkpoints hold: the model and the objective's tensors
        if objective is not None:
            objective.setup(self.model, self.device)
            extra = list(objective.parameters())
            self.trained = self.trained + extra
            if extra:
                self.checkpointed = torch.nn.Module()
                self.checkpointed.vq, self.checkpointed.objective = self.model, torch.nn.ParameterList(extra)
                groups.append({"params": extra, "weight_decay": 0.0,
                               "lr": config.learning_rate * objective.learning_rate_scale})  # fmt: skip
        from transformers import get_cosine_schedule_with_warmup

        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, config.max_steps)
        size = self.model.codebook_size
        self.last_used = torch.full((size,), _NEVER, dtype=torch.int64)  # step a code was last chosen
        # Step a code was last (re)initialised. A fresh codebook (BAAI's uniform(+-1/K) init, far from the encoder's
        # outputs) counts as dead from the start: what the first step does not use is seeded from its latents.
        fresh = isinstance(config.model, Emu3VisionVQConfig)
        self.last_reset = torch.full((size,), _NEVER if fresh else 0, dtype=torch.int64)
        self.generator = torch.Generator().manual_seed(config.seed)  # draws of the latents that restart dead codes

    def _train_mode(self) -> None:
        """Training mode on what trains; with ``decoder_only`` the encoder side stays frozen and in eval mode (its
        BatchNorm statistics must not move, or the codes would)."""
        model = self.model.train().requires_grad_(True)
        if self.config.decoder_only:
            for part in (model.encoder, model.quant_conv, model.quantize):
                part.eval().requires_grad_(False)

    # --------------------------------------------------------------------------------------------- one step
    def _batches(self) -> list[torch.Tensor]:
        sizes = {"image": self.config.image_batch_size, "video": self.config.video_batch_size}
        model = self.model
        return [stack_batch(source.take(sizes[kind]), kind, model.spatial_scale_factor,
                            model.temporal_downsample_factor).to(self.device)
                for kind, source in self.sources.items()]  # fmt: skip

    def _latent_vectors(self, pixels: torch.Tensor) -> int:
        """Latent vectors (codes) of a batch: B x T/tf x H/sf x W/sf, an image counting as one latent frame."""
        sf, frames = self.model.spatial_scale_factor, pixels.shape[1] // self.model.temporal_downsample_factor
        height, width = pixels.shape[-2] // sf, pixels.shape[-1] // sf
        return pixels.shape[0] * (frames if pixels.ndim == 5 else 1) * height * width

    def train_step(self, step: int) -> dict[str, float]:
        config, started = self.config, time.perf_counter()
        batches = self._batches()
        pixels_total = sum(b.numel() for b in batches)
        latents_total = sum(self._latent_vectors(b) for b in batches)
        sums = dict.fromkeys(("loss", "l1", "mse", "vq", "locality"), 0.0)
        pool, chosen = [], []
        for pixels in batches:
            out = vq_forward(self.model, pixels)
            error = out.reconstruction - pixels
            l1, mse = error.abs().mean(), error.square().mean()
            distance = F.mse_loss(out.quantized, out.latents.detach())  # pulls the chosen codes to the latents
            commitment = F.mse_loss(out.latents, out.quantized.detach())  # pulls the latents to their codes
            pixel_share = pixels.numel() / pixels_total
            latent_share = out.codes.numel() / latents_total
            loss = (pixel_share * (config.l1_weight * l1 + config.mse_weight * mse)
                    + latent_share * (config.codebook_weight * distance + config.commitment_weight * commitment))
            locality = out.latents.new_zeros(())
            if config.locality_weight and pixels.ndim == 4:
                locality = self._locality(pixels, out.latents)
                loss = loss + latent_share * config.locality_weight * locality
            loss.backward()
            for key, value in (("loss", loss), ("l1", l1 * pixel_share), ("mse", mse * pixel_share),
                               ("vq", distance * latent_share), ("locality", locality * latent_share)):  # fmt: skip
                sums[key] += float(value.detach())
            pool.append(out.latents.detach().permute(0, 1, 3, 4, 2).reshape(-1, out.latents.shape[2]))
            chosen.append(out.codes.flatten())
        extra_logs: dict[str, float] = {}
        if self.objective is not None:
            extra, extra_logs = self.objective.loss(self.model, step)
            extra.backward()
            sums["loss"] += float(extra.detach())
        limit = config.max_grad_norm or math.inf  # inf: measure the norm, clip nothing
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trained, limit))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.objective is not None:
            self.objective.after_step(self.model)
        used = torch.cat(chosen).unique().cpu()
        self.last_used[used] = step
        restarted = self._restart_dead_codes(step, torch.cat(pool))
        recent = (self.last_used > step - config.usage_window).float().mean()
        return {"step": step, **sums, "usage": float(recent), "batch_usage": used.numel() / self.model.codebook_size,
                "restarted": restarted, "grad_norm": grad_norm, "lr": lr, **extra_logs,
                "seconds": time.perf_counter() - started}  # fmt: skip

    def _locality(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The locality term (module docstring) for a batch of images (B, 3, H, W) and their latents (B, 1, C, h, w)."""
        batch, sf, margin = images.shape[0], self.model.spatial_scale_factor, self.config.locality_margin
        height, width = latents.shape[-2:]
        pasted, keep = images.clone(), torch.ones(batch, height, width, dtype=torch.bool)
        draw = lambda low, high: int(torch.randint(low, high + 1, (1,), generator=self.generator))  # noqa: E731
        for i in range(batch):
            box_h, box_w = draw(1, max(1, height // 2)), draw(1, max(1, width // 2))
            top, left = draw(0, height - box_h), draw(0, width - box_w)
            rows, cols = slice(top * sf, (top + box_h) * sf), slice(left * sf, (left + box_w) * sf)
            pasted[i, :, rows, cols] = images[(i + 1) % batch, :, rows, cols]
            keep[i, max(0, top - margin): top + box_h + margin, max(0, left - margin): left + box_w + margin] = False
        if not keep.any():
            return latents.new_zeros(())
        target = latents.detach()[:, 0]  # (B, C, h, w)
        moved = self.model.encode_to_latent(pasted)[:, 0]
        error = (moved - target).square().sum(1)[keep.to(latents.device)]
        return error.mean() / target.square().sum(1).mean().clamp_min(1e-12)

    @torch.no_grad()
    def _restart_dead_codes(self, step: int, latents: torch.Tensor) -> int:
        """Move the codes unused for ``dead_code_steps`` steps onto random latent vectors of this step."""
        if self.config.dead_code_steps is None or self.config.decoder_only:
            return 0
        dead = torch.maximum(self.last_used, self.last_reset) <= step - self.config.dead_code_steps
        count = int(dead.sum())
        if count == 0:
            return 0
        if latents.shape[0] >= count:
            picks = torch.randperm(latents.shape[0], generator=self.generator)[:count]
        else:
            picks = torch.randint(latents.shape[0], (count,), generator=self.generator)
        weight = self.model.quantize.embedding.weight
        rows = dead.nonzero().squeeze(1).to(weight.device)
        weight[rows] = latents[picks.to(latents.device)].to(weight.dtype)
        for moment in self.optimizer.state.get(weight, {}).values():
            if isinstance(moment, torch.Tensor) and moment.shape == weight.shape:
                moment[rows] = 0  # AdamW's running moments of the old vectors would drag the new ones away
        self.last_reset[dead] = step
        return count

    # -------------------------------------------------------------------------------------------- checkpoints
    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        extra = {f"buffer/{name}": value for name, value in self.model.named_buffers()}
        extra.update({"usage/last_used": self.last_used, "usage/last_reset": self.last_reset,
                      "restart_generator": self.generator.get_state()})  # fmt: skip
        return extra

    def save(self, step: int, history: list[dict]) -> None:
        state = {"global_step": step, "sources": {k: s.state() for k, s in self.sources.items()}, "history": history,
                 "config": self.config.to_dict(), "architecture": _architecture(self.model.config),
                 "num_processes": 1}  # fmt: skip
        save_checkpoint(self.output / f"checkpoint-{step}", self.checkpointed, self.optimizer, self.scheduler, state,
                        [rng_state()], extra_tensors=self._extra_tensors())  # fmt: skip
        prune_checkpoints(self.output, self.config.save_total_limit)

    def resume(self) -> tuple[int, list[dict]]:
        where = self.config.resume_from_checkpoint
        if where is None:
            return 0, []
        if where == "latest":
            found = find_checkpoints(self.output)
            if not found:
                raise ValueError(f"resume_from_checkpoint='latest' but {self.output} holds no checkpoint-<step>.")
            where = found[-1]
        state_path = Path(where) / "trainer_state.json"
        if not state_path.is_file():
            raise ValueError(f"{where} is not a training checkpoint (no trainer_state.json).")
        saved = json.loads(state_path.read_text())
        if saved.get("architecture") != _architecture(self.model.config):
            raise ValueError(
                f"{where} was saved for another VQ ({saved.get('architecture')}); resume with the model it was "
                f"trained from, not {_architecture(self.model.config)}."
            )
        if set(saved["sources"]) != set(self.sources):
            raise ValueError(f"{where} was trained on {sorted(saved['sources'])}; pass the same sources again.")
        extra = load_extra_tensors(where)
        state = load_checkpoint(where, self.checkpointed, self.optimizer, self.scheduler, rank=0)
        buffers = dict(self.model.named_buffers())
        for name, value in extra.items():
            if name.startswith("buffer/"):
                buffers[name.removeprefix("buffer/")].copy_(value)
        self.last_used.copy_(extra["usage/last_used"])
        self.last_reset.copy_(extra["usage/last_reset"])
        self.generator.set_state(extra["restart_generator"])
        for kind, source in self.sources.items():
            source.restore(state["sources"][kind])
        if self.objective is not None:
            self.objective.after_step(self.model)
        return int(state["global_step"]), list(state["history"])

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self) -> VQTrainResult:
        from tqdm.auto import tqdm

        config = self.config
        step, history = self.resume()
        bar = tqdm(total=config.max_steps, initial=step, desc="VQ training", unit="step",
                   disable=not config.show_progress)  # fmt: skip
        while step < config.max_steps:
            step += 1
            logs = self.train_step(step)
            history.append(logs)
            bar.update(1)
            bar.set_postfix(l1=f"{logs['l1']:.4f}", usage=f"{logs['usage']:.2f}", lr=f"{logs['lr']:.1e}")
            if config.save_steps and step % config.save_steps == 0 and step < config.max_steps:
                self.save(step, history)
        bar.close()
        self.model.eval()
        if self.objective is not None:
            self.objective.finish(self.model)
        self.export(history)
        return VQTrainResult(self.output, step, history, self.model)

    def export(self, history: list[dict]) -> None:
        record = {"config": self.config.to_dict(), "history": history}
        with staged_folder(self.output) as staging:
            self.model.save_pretrained(str(staging))
            (staging / "training_config.json").write_text(json.dumps(record, indent=1, default=str))


def train_vq(config: VQTrainConfig, images: Any = None, videos: Any = None,
             objective: VQObjective | None = None) -> VQTrainResult:
    """Train the VQ tokenizer as ``config`` says on ``images`` and/or ``videos``; returns a :class:`VQTrainResult`.

    Each source is a folder (``metadata.jsonl`` or ``save_to_disk``), a sequence read in a seeded order every
    epoch, or an iterable such as the tiny world's ``iter_image_examples("train", epochs=None)`` /
    ``iter_video_examples("train", epochs=None)`` (see :mod:`.vq_data`). A resumed run takes the same sources
    again (a stream from its start: the examples the interrupted run consumed are skipped). ``objective``: an extra
    term of every step (:class:`VQObjective`); a resumed run takes the same one again.
    """
    if not isinstance(config, VQTrainConfig):
        raise ValueError(f"config must be a VQTrainConfig, got {type(config).__name__}.")
    if objective is not None and not isinstance(objective, VQObjective):
        raise ValueError(f"objective must be a VQObjective (or None), got {type(objective).__name__}.")
    config.check()
    _check_sources(config, images, videos)
    return _VQTrainer(config, images, videos, objective).run()


__all__ = ["VQForward", "VQObjective", "VQTrainConfig", "VQTrainResult", "decode_vectors", "tiny_world_vq_config",
           "train_vq", "vq_forward"]
