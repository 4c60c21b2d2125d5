"""The settings of one training run (:class:`TrainConfig`), checked before anything heavy happens."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Sequence

from ..hub.download import check_model_source
from .checkpoint import check_checkpoint_folder, find_checkpoints
from ..processing.arguments import check_finite
from .sequences import LOSS_CHOICES

# Every linear layer of the Emu3 LM's decoder (attention and MLP); the VQ's projections are never adapted.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Every nn.Linear of Emu3LMForCausalLM, by its last name: plain target names are checked against these before the
# model loads (PEFT also takes dotted paths and regular expressions; it checks those itself on the loaded model).
LM_LINEAR_LAYERS = (*DEFAULT_LORA_TARGETS, "lm_head")
# The float settings of TrainConfig: each must be a finite number (None allowed where the field says so).
FLOAT_FIELDS = ("eval_fraction", "null_prompt_prob", "lora_alpha", "lora_dropout", "learning_rate", "weight_decay",
                "max_grad_norm", "num_epochs")  # fmt: skip


@dataclass
class TrainConfig:
    """LoRA or full fine-tuning of an Emu3 pipeline's LM on image/video/text data.

    Model and data:
        model: a pipeline folder or Hub repo (``model_index.json``: LM + VQ + tokenizer + image processor), or
            BAAI's LM folder together with ``vq`` (the VisionTokenizer folder) and optionally ``tokenizer``.
        data: a folder with ``metadata.jsonl`` (file_name + text, or question + answer), a ``save_to_disk``
            folder, or a ``datasets.Dataset`` (see :mod:`emu3_hf.training.data`).
        eval_data: a held-out set in the same forms; or ``eval_fraction`` of ``data`` held out (seeded).
        cache_dir: where the VQ codes are cached (default ``<output_dir>/vq-cache``).
        loss_on: "vision" (visual tokens only, BAAI's T2I SFT), "text" (answers, for understanding), "all", or
            "auto" (per example: answers of understanding examples, visual tokens of generation examples).
        null_prompt_prob: share of generation examples trained with an empty prompt (CFG's unconditional branch).

    Method:
        lora: LoRA through PEFT on the LM's linear layers (``lora_targets``); False = full fine-tuning.
        lora_rank, lora_alpha, lora_dropout, lora_targets, use_rslora, use_dora: PEFT ``LoraConfig`` fields.
        qlora: load the LM in 4-bit (bitsandbytes NF4, CUDA) under the LoRA adapter.

    Optimisation: AdamW (``learning_rate``, ``weight_decay``), a cosine schedule after ``warmup_steps`` of linear
    warm-up, ``max_grad_norm`` clipping, ``gradient_accumulation_steps``; ``max_steps`` optimizer steps (or
    ``num_epochs`` passes when ``max_steps`` is None); ``per_device_batch_size`` examples per process and micro-step.
    ``mixed_precision``: "no", "bf16" or "fp16" (accelerate's autocast); ``gradient_checkpointing``.

    Distribution: ``sharding="fsdp2"`` shards the model with torch's ``fully_shard`` (per decoder layer, then the
    whole model) over the processes that ``accelerate launch`` / ``torchrun`` started; None = DDP through
    accelerate when several processes run (or whatever accelerate's config prepares: DeepSpeed, FSDP on GPUs).

    Output: checkpoints every ``save_steps`` (0 = only at the end) under ``output_dir/checkpoint-<step>``, the
    newest ``save_total_limit`` kept; ``resume_from_checkpoint``: a checkpoint folder, or "latest". At the end the
    adapter (``adapter_config.json`` + ``adapter_model.safetensors``) or the whole pipeline folder, and a README.md
    model card (``hub_model_id`` names the repo in it). Logs every ``logging_steps`` to ``report_to``:
    "tensorboard" (``output_dir/emu3-train/``; needs the tensorboard package), "none", or "auto" (the default:
    TensorBoard when it is installed, else nothing; :meth:`tracker` says which); evaluation every ``eval_steps``
    (0 = at the end only).

    Everything is checked by :meth:`check` before a model loads, and :func:`~emu3_hf.training.train` reads the whole
    data (every row, file and caption) before a model loads too: a refused run leaves ``output_dir`` as it was.
    Empty captions are refused (unconditional rows come from ``null_prompt_prob``, see
    :func:`~emu3_hf.training.data.check_blank_texts`).
    """

    model: str
    data: Any
    output_dir: str
    vq: str | None = None
    tokenizer: str | None = None
    eval_data: Any = None
    eval_fraction: float = 0.0
    cache_dir: str | None = None
    loss_on: Literal["vision", "text", "all", "auto"] = "vision"
    null_prompt_prob: float = 0.05
    lora: bool = True
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.05
    lora_targets: Sequence[str] = DEFAULT_LORA_TARGETS
    use_rslora: bool = False
    use_dora: bool = False
    qlora: bool = False
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    max_steps: int | None = None
    num_epochs: float = 1.0
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    sharding: Literal["fsdp2"] | None = None
    padding_side: Literal["left", "right"] = "right"
    group_by_length: bool = True
    save_steps: int = 0
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    eval_steps: int = 0
    logging_steps: int = 10
    report_to: Literal["auto", "tensorboard", "none"] = "auto"
    seed: int = 0
    vq_batch_size: int = 16
    hub_model_id: str | None = None
    show_progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raise on any setting that cannot work, naming it and the fix (called before loading anything)."""
        for name in FLOAT_FIELDS:  # first: NaN fails every range check below with a confusing message, inf passes some
            if getattr(self, name) is not None or name != "max_grad_norm":
                check_finite(name, getattr(self, name))
        positive = ("learning_rate", "per_device_batch_size", "gradient_accumulation_steps", "lora_rank",
                    "logging_steps", "vq_batch_size")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        for name in ("warmup_steps", "save_steps", "eval_steps", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None to train num_epochs), got {self.max_steps}.")
        if self.max_steps is None and not self.num_epochs > 0:
            raise ValueError(f"num_epochs must be > 0, got {self.num_epochs}.")
        if not 0 <= self.null_prompt_prob < 1:
            raise ValueError(f"null_prompt_prob must be in [0, 1), got {self.null_prompt_prob}.")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}.")
        if self.eval_fraction and self.eval_data is not None:
            raise ValueError("Pass eval_data or eval_fraction, not both.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.loss_on not in LOSS_CHOICES:
            raise ValueError(f"loss_on must be one of {LOSS_CHOICES}, got {self.loss_on!r}.")
        choices = {"mixed_precision": ("no", "bf16", "fp16"), "sharding": (None, "fsdp2"),
                   "padding_side": ("left", "right"), "report_to": ("auto", "tensorboard", "none")}  # fmt: skip
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 or None (keep all), got {self.save_total_limit}.")
        if not self.lora and (self.qlora or self.use_dora or self.use_rslora):
            raise ValueError("qlora / use_dora / use_rslora are LoRA options: set lora=True (or drop them).")
        if self.lora and (not self.lora_targets or isinstance(self.lora_targets, str)):
            raise ValueError(f"lora_targets must be a list of module names, got {self.lora_targets!r}.")
        if self.lora:
            unknown = [t for t in self.lora_targets if t.isidentifier() and t not in LM_LINEAR_LAYERS]
            if unknown:
                raise ValueError(
                    f"lora_targets {unknown} name no linear layer of the Emu3 LM; its linear layers are "
                    f"{list(LM_LINEAR_LAYERS)} (the VQ is never adapted)."
                )
        if self.qlora:
            self._check_qlora()
        if self.report_to == "tensorboard" and not _tensorboard_installed():
            raise ValueError("report_to='tensorboard' needs the tensorboard package: pip install tensorboard (or "
                             "report_to='none').")  # fmt: skip
        for name in ("model", "vq", "tokenizer"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                check_model_source(name, value)
        self._check_output()
        if isinstance(self.model, (str, os.PathLike)) and Path(self.model).exists():
            folder = Path(self.model)
            if not (folder / "model_index.json").is_file() and self.vq is None:
                raise ValueError(
                    f"{folder} is not a pipeline folder (no model_index.json). Pass a pipeline folder, or BAAI's LM "
                    "folder with vq=<VisionTokenizer folder> (--vq)."
                )
        for name in ("data", "eval_data"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)) and not Path(value).exists():
                raise FileNotFoundError(f"{name}: {value} does not exist.")
        if self.resume_from_checkpoint == "latest" and not find_checkpoints(self.output_dir):
            raise ValueError(f"resume_from_checkpoint='latest' (--resume latest) but {self.output_dir} holds no "
                             "checkpoint-<step> folder: drop it to start a new run, or pass a checkpoint folder.")
        elif self.resume_from_checkpoint not in (None, "latest"):
            check_checkpoint_folder(self.resume_from_checkpoint)

    def _check_output(self) -> None:
        """``output_dir`` and ``cache_dir`` are (or can become) folders: not files, under a writable folder."""
        for name in ("output_dir", "cache_dir"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            if path.exists() and not path.is_dir():
                raise ValueError(f"{name}: {value} is a file, not a folder; pass a folder (new or existing).")
            existing = next(p for p in (path, *path.absolute().parents) if p.exists())
            if not existing.is_dir():
                raise ValueError(f"{name}: {value} lies under the file {existing}; pass a folder path.")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"{name}: {value} cannot be written ({existing} is not writable).")

    def tracker(self) -> str | None:
        """Where the run logs: "tensorboard" or None (``report_to="auto"``: TensorBoard when installed)."""
        if self.report_to == "auto":
            return "tensorboard" if _tensorboard_installed() else None
        return None if self.report_to == "none" else self.report_to

    def _check_qlora(self) -> None:
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            raise ValueError("qlora needs a CUDA GPU (bitsandbytes' 4-bit kernels); use lora=True without qlora here.")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError("qlora needs bitsandbytes: pip install 'emu3-hf[qlora]'.")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able settings (datasets passed as objects are described, not serialised)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("data", "eval_data") and value is not None and not isinstance(value, (str, os.PathLike)):
                value = f"<{type(value).__name__} of {len(value)} rows>"
            out[f.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        return out


def _tensorboard_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


__all__ = ["DEFAULT_LORA_TARGETS", "FLOAT_FIELDS", "LM_LINEAR_LAYERS", "TrainConfig"]
