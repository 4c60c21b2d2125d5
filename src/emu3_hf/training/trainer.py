"""One training entry for LoRA and full fine-tuning: :func:`train` in Python, ``emu3 train`` on the command line.

The loop is plain PyTorch on accelerate's primitives (process group, device, DDP / DeepSpeed wrapping through
``Accelerator.prepare``, autocast, loss scaling), so the same call runs in one process and under
``accelerate launch`` (configs in ``examples/accelerate/``). With ``sharding="fsdp2"`` the model is sharded by
torch's own ``fully_shard`` instead (accelerate's FSDP plugin needs GPUs; on CPUs it silently runs DDP).

Batches are global: each optimizer step takes ``per_device_batch_size x processes x gradient_accumulation_steps``
examples in an order fixed by the seed (:class:`~emu3_hf.training.sequences.LengthGroupedBatches`), split into
micro-steps and then between processes, so a run on N processes equals a single-process run with the same global
batch, and a resumed run continues with exactly the batches, dropout draws and prompt drops it would have seen.

Example:
    ```python
    >>> from emu3_hf.training import TrainConfig, train
    >>> result = train(TrainConfig(model="path/to/pipeline", data="my-images/", output_dir="cats-lora",
    ...                            max_steps=500, learning_rate=1e-4, lora_rank=16))
    >>> pipe.load_lora_weights(result.output_dir)
    ```
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..modeling.transformers_compat import enable_activation_checkpointing
from .checkpoint import find_checkpoints, load_checkpoint, prune_checkpoints, rng_state, save_checkpoint
from .config import TrainConfig
from .data import tokenize_dataset
from .losses import recent_loss
from .sequences import (
    Emu3DataCollator,
    LengthGroupedBatches,
    example_ids,
    example_loss_on,
    labels_for,
    null_prompt_dropped,
)


@dataclass
class TrainResult:
    """What a run produced: ``output_dir`` (adapter or pipeline folder), the optimizer ``global_step``, the mean
    training loss of every optimizer step (``losses``), the evaluation losses by step (``eval_losses``) and the
    gradient norm (before clipping) of each step this process ran (``grad_norms``; a resumed run starts empty),
    the tokens the steps of this call trained on (all processes) with the seconds they took (``train_tokens``,
    ``train_seconds``: the training loop alone, without loading, the final evaluation or the export).
    :meth:`report` is the closing summary ``emu3 train`` prints."""

    output_dir: Path
    global_step: int
    losses: list[float] = field(default_factory=list)
    eval_losses: dict[int, float] = field(default_factory=dict)
    grad_norms: list[float] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0

    def report(self) -> str:
        """One line: the steps, the training loss averaged over the last steps (one step's loss is noise, see
        :mod:`~emu3_hf.training.losses`), the last held-out loss when there is one, and where the result is."""
        recent = recent_loss(self.losses)
        line = f"{self.global_step} steps; training loss {recent.mean:.4f} (mean of the last {recent.steps} steps)"
        if self.eval_losses:
            step = max(self.eval_losses)
            line += f"; held-out loss {self.eval_losses[step]:.4f} (step {step})"
        return f"{line}; saved in {self.output_dir}"


class SequenceData:
    """Cached VQ codes -> training sequences (ids + labels) through the processor's layouts."""

    def __init__(self, cached: Any, processor: Any, config: TrainConfig):
        self.cached, self.processor, self.config = cached, processor, config
        self.rows = list(cached)
        self.lengths = [len(example_ids(processor, row)[0]) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def features(self, index: int, epoch: int, training: bool = True) -> dict[str, list[int]]:
        row = self.rows[index]
        drop = training and row.get("answer") is None and null_prompt_dropped(
            self.config.seed, epoch, index, self.config.null_prompt_prob
        )
        ids, start = example_ids(self.processor, row, drop_prompt=drop)
        loss_on = example_loss_on(self.config.loss_on, row)
        return {"input_ids": ids, "labels": labels_for(ids, start, self.processor.special, loss_on)}


def _load_pipeline(config: TrainConfig):
    from ..pipelines import Emu3Pipeline

    if config.vq is not None:
        return Emu3Pipeline.from_baai(config.model, config.vq, tokenizer_path=config.tokenizer)
    return Emu3Pipeline.from_pretrained(config.model)


def _qlora_lm(config: TrainConfig, lm: torch.nn.Module):
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip
    source = lm.name_or_path
    lm = type(lm).from_pretrained(source, quantization_config=quant, torch_dtype=torch.bfloat16)
    return prepare_model_for_kbit_training(lm, use_gradient_checkpointing=config.gradient_checkpointing)


def prepare_model(lm: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """The LM ready to train: a PEFT LoRA model on the given targets (the base frozen) or the LM itself."""
    if config.gradient_checkpointing:
        enable_activation_checkpointing(lm, {"use_reentrant": False})
    if not config.lora:
        lm.requires_grad_(True)
        return lm
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), use_rslora=config.use_rslora,
                      use_dora=config.use_dora, bias="none")  # fmt: skip
    return get_peft_model(lm, lora)


def _fsdp2(model: torch.nn.Module, accelerator) -> None:
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    for module in model.modules():
        if type(module).__name__ == "Emu3DecoderLayer":
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _has_accelerator() -> bool:
    """Whether torch sees a GPU-like device; torchrun on a machine without one runs the processes on CPUs (gloo),
    which accelerate only does when told (``cpu=True``), else every process trains alone."""
    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, XPU, MPS, ...
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def _split_eval(cached: Any, config: TrainConfig):
    if not config.eval_fraction:
        return cached, None
    parts = cached.train_test_split(test_size=config.eval_fraction, seed=config.seed)
    return parts["train"], parts["test"]


class _Trainer:
    def __init__(self, config: TrainConfig, examples: Any, held_out_examples: Any = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config
        self.output = Path(config.output_dir)
        report = config.tracker()
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=report,
                                       project_dir=str(self.output), cpu=world > 1 and not _has_accelerator())
        if self.accelerator.num_processes != world:  # N copies of one run writing one folder: refuse
            raise RuntimeError(
                f"Launched as {world} processes but accelerate sees {self.accelerator.num_processes}: launch with "
                "`accelerate launch` (a multi-GPU config; without GPUs it runs on CPUs) or `torchrun`."
            )
        if self.accelerator.distributed_type.name == "DEEPSPEED" and config.gradient_accumulation_steps > 1:
            raise ValueError(  # DeepSpeed steps on its own accumulation boundary, which this loop does not set yet
                "gradient_accumulation_steps > 1 is not supported under DeepSpeed yet: use a larger per-device batch "
                "size, or DDP / FSDP2."
            )
        set_seed(config.seed, device_specific=True)  # each process its own dropout draws
        self.pipe = _load_pipeline(config)
        self.processor = self.pipe.make_processor()
        self.processor.vq_model.to(self.accelerator.device)
        cache = Path(config.cache_dir or self.output / "vq-cache")
        with self.accelerator.main_process_first():
            show = config.show_progress and self.accelerator.is_main_process
            cached = tokenize_dataset(examples, self.processor, cache / "train", batch_size=config.vq_batch_size,
                                      show_progress=show)  # fmt: skip
            held_out = None
            if held_out_examples is not None:
                held_out = tokenize_dataset(held_out_examples, self.processor, cache / "eval",
                                            batch_size=config.vq_batch_size, show_progress=show)  # fmt: skip
        cached, split = _split_eval(cached, config)
        held_out = held_out if held_out is not None else split
        self.train_data = SequenceData(cached, self.processor, config)
        self.eval_data = SequenceData(held_out, self.processor, config) if held_out is not None else None
        self.pipe.vq_model.to("cpu")  # the VQ is not trained; free the device for the LM
        self.collator = Emu3DataCollator(self.processor.special.pad, config.padding_side)

        world, accum = self.accelerator.num_processes, config.gradient_accumulation_steps
        self.micro = config.per_device_batch_size * world
        self.batches = LengthGroupedBatches(self.train_data.lengths, self.micro * accum, seed=config.seed,
                                            shuffle=True, group_batches=50 if config.group_by_length else 0)
        per_epoch = len(self.batches)
        self.total_steps = config.max_steps or max(1, math.ceil(config.num_epochs * per_epoch))
        self._build_model()

    def _build_model(self) -> None:
        config, accelerator = self.config, self.accelerator
        lm = self.pipe.model
        if config.qlora:
            lm = _qlora_lm(config, lm)
        lm.train()
        # PEFT draws the adapter's initial A matrices from the global RNG, which is seeded per process (dropout).
        # DDP would broadcast rank 0's draw, but fully_shard keeps each rank's own shard of it: draw them from the
        # run's seed alone, so every process count (and FSDP2) starts from the adapter one process starts from.
        with torch.random.fork_rng(devices=[]):  # PEFT initialises on the CPU; the GPU generators stay untouched
            torch.random.default_generator.manual_seed(config.seed)
            model = prepare_model(lm, config)
        self.model = model  # the unwrapped module (PEFT model or LM)
        if config.sharding == "fsdp2" and accelerator.num_processes > 1:
            _fsdp2(model, accelerator)
        else:
            model.to(accelerator.device)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("Nothing to train: every parameter is frozen.")
        from transformers import get_cosine_schedule_with_warmup

        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, config.warmup_steps, self.total_steps)
        if config.sharding == "fsdp2" and accelerator.num_processes > 1:
            self.wrapped, self.step_optimizer = model, self.optimizer
        else:
            self.wrapped, self.step_optimizer = accelerator.prepare(model, self.optimizer)

    # ------------------------------------------------------------------------------------------- one step
    def _batch(self, indices: list[int], epoch: int, training: bool = True) -> dict[str, torch.Tensor]:
        data = self.train_data if training else self.eval_data
        batch = self.collator([data.features(i, epoch, training) for i in indices])
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def _forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self.accelerator.autocast():
            return self.wrapped(**batch, use_cache=False).loss

    def _sync(self, enabled: bool):
        if self.wrapped is self.model and hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2
            self.model.set_requires_gradient_sync(enabled)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if enabled else self.accelerator.no_sync(self.wrapped)

    def train_step(self, batch_indices: list[int], epoch: int) -> tuple[float, int, float]:
        """One optimizer step on a global batch; returns the mean loss over processes, the tokens seen and the
        gradient norm before clipping."""
        accelerator, accum = self.accelerator, self.config.gradient_accumulation_steps
        total, tokens = torch.zeros((), device=accelerator.device), 0
        for micro in range(accum):
            part = batch_indices[micro * self.micro : (micro + 1) * self.micro]
            mine = LengthGroupedBatches.shard(part, accelerator.process_index, accelerator.num_processes)
            batch = self._batch(mine, epoch)
            tokens += int(batch["attention_mask"].sum())
            with self._sync(micro == accum - 1):
                loss = self._forward(batch) / accum
                accelerator.backward(loss)
            total += loss.detach()
        params = [p for p in self.model.parameters() if p.requires_grad]
        limit = self.config.max_grad_norm or math.inf  # inf: measure the norm, clip nothing
        if self.wrapped is self.model and accelerator.num_processes > 1:  # FSDP2: DTensor gradients
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
            norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        else:
            norm = accelerator.clip_grad_norm_(params, limit)
        self.step_optimizer.step()
        self.scheduler.step()
        self.step_optimizer.zero_grad(set_to_none=True)
        mean = accelerator.reduce(total, reduction="mean") if accelerator.num_processes > 1 else total
        count = torch.tensor(tokens, device=accelerator.device)
        count = accelerator.reduce(count, reduction="sum") if accelerator.num_processes > 1 else count
        return float(mean), int(count), math.nan if norm is None else float(norm)  # DeepSpeed: None

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss per target token over the held-out set (every process takes a share)."""
        if self.eval_data is None:
            return None
        accelerator = self.accelerator
        self.wrapped.eval()
        rank, world = accelerator.process_index, accelerator.num_processes
        size = self.config.per_device_batch_size
        indices = list(range(len(self.eval_data)))
        sums = torch.zeros(2, device=accelerator.device, dtype=torch.float64)
        mine = indices[rank::world]
        steps = math.ceil(len(indices) / world / size)  # every process runs as many forwards (FSDP2 collectives)
        for i in range(steps):
            chunk = mine[i * size : (i + 1) * size] or indices[:1]
            batch = self._batch(chunk, 0, training=False)
            n = (batch["labels"][:, 1:] != -100).sum() if mine[i * size : (i + 1) * size] else torch.zeros(())
            loss = self._forward(batch)
            sums += torch.stack([loss.double() * n, n.double().to(sums.device)])
        if world > 1:
            sums = accelerator.reduce(sums, reduction="sum")
        self.wrapped.train()
        return float(sums[0] / sums[1].clamp_min(1))

    # --------------------------------------------------------------------------------------- checkpoints
    def save(self, step: int, position: dict, losses: list[float], eval_losses: dict) -> None:
        from accelerate.utils import gather_object

        rngs = gather_object([rng_state()]) if self.accelerator.num_processes > 1 else [rng_state()]
        state = {"global_step": step, **position, "losses": losses, "eval_losses": eval_losses,
                 "config": self.config.to_dict(), "num_processes": self.accelerator.num_processes}  # fmt: skip
        save_checkpoint(self.output / f"checkpoint-{step}", self.model, self.optimizer, self.scheduler, state, rngs,
                        is_main_process=self.accelerator.is_main_process)  # fmt: skip
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            prune_checkpoints(self.output, self.config.save_total_limit)

    def resume(self) -> dict:
        where = self.config.resume_from_checkpoint
        if where is None:
            return {"global_step": 0, "epoch": 0, "batch": 0, "losses": [], "eval_losses": {}}
        if where == "latest":  # TrainConfig.check made sure there is one
            where = find_checkpoints(self.output)[-1]
        state = load_checkpoint(where, self.model, self.optimizer, self.scheduler, self.accelerator.process_index)
        if state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(f"{where} was saved by {state['num_processes']} processes; resume with as many.")
        return state

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        state = self.resume()
        step, epoch, position = state["global_step"], state["epoch"], state["batch"]
        losses, eval_losses = list(state["losses"]), {int(k): v for k, v in state["eval_losses"].items()}
        if config.tracker() is not None:
            accelerator.init_trackers("emu3-train", config={k: str(v) for k, v in config.to_dict().items()})
        bar = tqdm(total=self.total_steps, initial=step, desc="training", unit="step",
                   disable=not (config.show_progress and accelerator.is_main_process))  # fmt: skip
        started, tokens, grad_norms = time.perf_counter(), 0, []
        while step < self.total_steps:
            order = self.batches.epoch(epoch)
            while position < len(order) and step < self.total_steps:
                loss, seen, grad_norm = self.train_step(order[position], epoch)
                position, step, tokens = position + 1, step + 1, tokens + seen
                losses.append(loss)
                grad_norms.append(grad_norm)
                lr = self.scheduler.get_last_lr()[0]
                speed = tokens / max(time.perf_counter() - started, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{speed:.0f}")
                if step % config.logging_steps == 0 or step == self.total_steps:
                    logs = {"train/loss": loss, "train/lr": lr, "train/grad_norm": grad_norm}
                    accelerator.log({**logs, "train/tokens_per_s": speed}, step=step)
                if config.eval_steps and step % config.eval_steps == 0 and step < self.total_steps:
                    eval_losses[step] = self.evaluate()
                    accelerator.log({"eval/loss": eval_losses[step]}, step=step)
                if config.save_steps and step % config.save_steps == 0 and step < self.total_steps:
                    at = {"epoch": epoch, "batch": position} if position < len(order) else {"epoch": epoch + 1, "batch": 0}
                    self.save(step, at, losses, eval_losses)
            if position >= len(order):
                epoch, position = epoch + 1, 0
        bar.close()
        seconds = time.perf_counter() - started
        final = self.evaluate()
        if final is not None:
            eval_losses[step] = final
            accelerator.log({"eval/loss": final}, step=step)
        self.export(losses, eval_losses)
        accelerator.end_training()
        return TrainResult(self.output, step, losses, eval_losses, grad_norms, tokens, seconds)

    # --------------------------------------------------------------------------------------------- export
    def export(self, losses: list[float], eval_losses: dict) -> None:
        from .export import export_trained

        export_trained(self, losses, eval_losses)


def train(config: TrainConfig | None = None, **kwargs: Any) -> TrainResult:
    """Train (LoRA or full) as :class:`TrainConfig` says; returns a :class:`TrainResult`.

    ``train(TrainConfig(...))`` or ``train(model=..., data=..., output_dir=..., ...)``. Every setting is checked before
    a model is loaded. Run it in one process, or under ``accelerate launch`` / ``torchrun`` for several.
    """
    if config is None:
        config = TrainConfig(**kwargs)
    elif kwargs:
        raise TypeError("Pass a TrainConfig or keyword arguments, not both.")
    config.check()
    from .data import load_examples

    # read and check the data (metadata lines, files, columns) before any model loads
    examples = load_examples(config.data)
    held_out = load_examples(config.eval_data) if config.eval_data is not None else None
    return _Trainer(config, examples, held_out).run()


__all__ = ["SequenceData", "TrainResult", "prepare_model", "train"]
