"""What a finished run leaves in its output folder, written atomically by process 0.

- LoRA: ``adapter_config.json`` + ``adapter_model.safetensors`` (PEFT's own files: rank, alpha, targets, so
  ``PeftModel.from_pretrained`` and every pipeline's ``load_lora_weights`` read them) and a PEFT model card;
- full fine-tuning: the whole pipeline folder (``model_index.json`` + components; the trained LM in place of the
  base) and a diffusers model card;
- both: ``training_config.json`` (the settings and the loss history).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from ..utils.atomic import staged_folder
from .checkpoint import trainable_state_dict
from .losses import recent_loss

LORA_TASK = "text-to-image"


def _card_repo_id(trainer: Any) -> str:
    """The repo id the card names: ``hub_model_id``, else a local placeholder from the folder name."""
    if trainer.config.hub_model_id:
        return trainer.config.hub_model_id
    name = re.sub(r"[^\w.-]+", "-", Path(trainer.config.output_dir).resolve().name).strip("-.") or "emu3-finetune"
    return f"local/{name}"


def _base_repo(trainer: Any) -> str | None:
    model = trainer.config.model
    return None if os.path.exists(model) or trainer.config.vq is not None else str(model)


_LOSS_WORDS = {"vision": "visual tokens", "text": "answer tokens", "all": "every token",
               "auto": "answer tokens of understanding examples and visual tokens of generation examples"}  # fmt: skip


def _location(value: str) -> str:
    """A local folder as an absolute path (the card's snippet runs from anywhere), a repo id as it is."""
    return str(Path(value).resolve()) if os.path.exists(value) else str(value)


def _pipeline_base(config: Any) -> str | tuple[str, ...]:
    """What the run loaded as its pipeline: a pipeline folder / repo id, or BAAI's LM + VQ (+ tokenizer)."""
    if config.vq is None:
        return _location(str(config.model))
    parts = (str(config.model), str(config.vq), *((str(config.tokenizer),) if config.tokenizer else ()))
    return tuple(_location(p) for p in parts)


def _description(trainer: Any, losses: list[float], eval_losses: dict) -> str:
    config = trainer.config
    method = f"LoRA (rank {config.lora_rank}, alpha {config.lora_alpha})" if config.lora else "full fine-tuning"
    parts = [f"Trained with `emu3 train` (emu3-hf): {method}, {len(losses)} optimizer steps of "
             f"{trainer.micro * config.gradient_accumulation_steps} examples, learning rate {config.learning_rate}, "
             f"loss on {_LOSS_WORDS[config.loss_on]}."]  # fmt: skip
    if losses:
        recent = recent_loss(losses)
        parts.append(f"Training loss {losses[0]:.4f} at the first step, {recent.mean:.4f} over the last "
                     f"{recent.steps} steps.")  # fmt: skip
    if eval_losses:
        step = max(eval_losses)
        parts.append(f"Held-out loss {eval_losses[step]:.4f} at step {step}.")
    return " ".join(parts)


def export_trained(trainer: Any, losses: list[float], eval_losses: dict) -> None:
    """Save the adapter or the pipeline, with its card and the run's record (every process must call this)."""
    from ..hub.cards import adapter_card, pipeline_card

    config, accelerator = trainer.config, trainer.accelerator
    # collective under FSDP2: every process gathers, process 0 writes
    if config.lora:
        state = trainable_state_dict(trainer.model)
    else:
        state = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    description = _description(trainer, losses, eval_losses)
    record = {"config": config.to_dict(), "losses": losses, "eval_losses": {str(k): v for k, v in eval_losses.items()},
              "num_processes": accelerator.num_processes}
    with staged_folder(trainer.output) as staging:
        if config.lora:
            trainer.model.save_pretrained(str(staging), state_dict=state, safe_serialization=True)
            location = config.hub_model_id or str(Path(config.output_dir).resolve())
            card = adapter_card(staging, _card_repo_id(trainer), base_model=_base_repo(trainer), local_base=True,
                                pipeline_tag=LORA_TASK, description=description,
                                pipeline_base=_pipeline_base(config), adapter_location=location)  # fmt: skip
        else:
            lm = trainer.pipe.model
            if any(type(p).__name__ == "DTensor" for p in lm.parameters()):  # FSDP2: save a gathered copy
                lm = type(lm)(lm.config)
                lm.load_state_dict(state)
            trainer.pipe.register_modules(model=lm.eval())
            trainer.pipe.save_pretrained(str(staging))
            card = pipeline_card(staging, _card_repo_id(trainer), base_model=_base_repo(trainer),
                                 description=description)  # fmt: skip
        card.save(str(staging / "README.md"))
        (staging / "training_config.json").write_text(json.dumps(record, indent=1, default=str))
    accelerator.wait_for_everyone()


__all__ = ["export_trained"]
