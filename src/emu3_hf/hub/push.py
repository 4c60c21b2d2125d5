"""Publishing Emu3 pipelines, models and LoRA adapters on the Hub, each with a generated model card.

Every helper saves the object into a temporary folder first (a failed save uploads nothing), writes the card as
``README.md`` next to the files, then creates the repo if needed and uploads the folder in one commit through
huggingface_hub's ``HfApi`` (``create_repo`` + ``upload_folder``). The returned ``CommitInfo`` holds the commit id
and URL.

Example:
    ```python
    >>> from emu3_hf.hub import push_adapter_to_hub, push_pipeline_to_hub
    >>> push_pipeline_to_hub(pipe, "me/emu3-cats", base_model="BAAI/Emu3-Gen", tags=["cats"])
    >>> push_adapter_to_hub(peft_model, "me/emu3-cats-lora", base_model="BAAI/Emu3-Gen")
    ```
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffusers import DiffusionPipeline
from huggingface_hub import CommitInfo, HfApi, ModelCard
from huggingface_hub.utils import validate_repo_id
from transformers import PreTrainedModel

from .cards import adapter_card, card_for_folder, model_card, pipeline_card
from .remote_code import save_pretrained_with_code


def _push(
    write: Callable[[Path], None],
    card_builder: Callable[..., ModelCard],
    repo_id: str,
    card_kwargs: dict[str, Any],
    *,
    private: bool | None,
    token: str | bool | None,
    revision: str | None,
    commit_message: str | None,
    create_pr: bool,
    endpoint: str | None,
) -> CommitInfo:
    """Save with ``write`` into a temporary folder, add the card, create the repo and upload the folder."""
    validate_repo_id(repo_id)
    # A wrong card argument fails here, before any weights are written.
    inspect.signature(card_builder).bind("<folder>", repo_id, **card_kwargs)
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="emu3-push-") as tmp:
        folder = Path(tmp) / repo_id.split("/")[-1]
        write(folder)
        card_builder(folder, repo_id, **card_kwargs).save(folder / "README.md")
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {folder.name} with emu3-hf",
            revision=revision,
            create_pr=create_pr,
        )


def push_pipeline_to_hub(
    pipe: DiffusionPipeline,
    repo_id: str,
    *,
    export_code: bool = False,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Upload an Emu3 pipeline folder (``model_index.json`` + components) with a ``diffusers`` model card.

    Args:
        pipe: an :class:`~emu3_hf.Emu3Pipeline`, :class:`~emu3_hf.Emu3VideoPipeline` or
            :class:`~emu3_hf.Emu3ChatPipeline`.
        repo_id: ``"namespace/name"``; created (``exist_ok``) when missing.
        export_code: also write each component's code (see :func:`~emu3_hf.hub.save_pretrained_with_code`), so the
            components load with transformers' Auto classes and ``trust_remote_code=True`` without emu3-hf.
        private, token, revision, commit_message, create_pr, endpoint: as in ``HfApi.upload_folder``.
        card_kwargs: passed to :func:`~emu3_hf.hub.pipeline_card` (``license``, ``base_model``, ``tags``, ...).

    Example:
        ```python
        >>> info = push_pipeline_to_hub(pipe, "me/emu3-cats", base_model="BAAI/Emu3-Gen")
        >>> info.oid  # the commit
        ```
    """
    if not isinstance(pipe, DiffusionPipeline):
        raise TypeError(f"`pipe` must be an Emu3 pipeline (a DiffusionPipeline), got {type(pipe).__name__}.")

    def write(folder: Path) -> None:
        save_pretrained_with_code(pipe, folder) if export_code else pipe.save_pretrained(folder)

    return _push(write, pipeline_card, repo_id, card_kwargs, private=private, token=token, revision=revision,
                 commit_message=commit_message, create_pr=create_pr, endpoint=endpoint)  # fmt: skip


def push_model_to_hub(
    model: PreTrainedModel,
    repo_id: str,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    export_code: bool = False,
    max_shard_size: str | int = "5GB",
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Upload an Emu3 LM or VQ (BAAI's layout: one folder, tokenizer or image processor beside the weights) with a
    ``transformers`` model card.

    Args:
        model: an :class:`~emu3_hf.Emu3LMForCausalLM` (or base model) or :class:`~emu3_hf.Emu3VisionVQModel`.
        tokenizer: saved into the same folder (an LM's tokenizer, as in BAAI's ``Emu3-Gen``).
        image_processor: saved into the same folder (a VQ's, as in BAAI's ``Emu3-VisionTokenizer``).
        export_code: write the code of every saved object next to it, so the repo loads with
            ``trust_remote_code=True`` where emu3-hf is not installed; the card then shows that way.
        max_shard_size: weight shard size (safetensors).
        card_kwargs: passed to :func:`~emu3_hf.hub.model_card`; ``base_model="BAAI/Emu3-Gen"`` marks a fine-tune.
        The other arguments are those of :func:`push_pipeline_to_hub`.

    Example:
        ```python
        >>> push_model_to_hub(model, "me/emu3-gen-cats", tokenizer=tokenizer, base_model="BAAI/Emu3-Gen")
        ```
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"`model` must be an Emu3 model (a PreTrainedModel), got {type(model).__name__}.")
    if getattr(model, "peft_config", None):
        raise ValueError("`model` carries PEFT adapters: push them with push_adapter_to_hub, or merge them first.")
    parts = [obj for obj in (tokenizer, image_processor) if obj is not None]

    def write(folder: Path) -> None:
        if export_code:
            save_pretrained_with_code(model, folder, max_shard_size=max_shard_size)
            for part in parts:
                save_pretrained_with_code(part, folder)
        else:
            model.save_pretrained(folder, max_shard_size=max_shard_size)
            for part in parts:
                part.save_pretrained(folder)

    return _push(write, model_card, repo_id, card_kwargs, private=private, token=token, revision=revision,
                 commit_message=commit_message, create_pr=create_pr, endpoint=endpoint)  # fmt: skip


def push_adapter_to_hub(
    model: Any,
    repo_id: str,
    *,
    adapter_name: str = "default",
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Upload one adapter of a ``peft.PeftModel`` (PEFT's own files: ``adapter_config.json`` +
    ``adapter_model.safetensors``) with a ``peft`` model card.

    Args:
        model: a ``PeftModel`` wrapping an Emu3 LM.
        adapter_name: which of its adapters to upload.
        card_kwargs: passed to :func:`~emu3_hf.hub.adapter_card`; pass ``base_model`` (a Hub id) unless the base
            LM was itself loaded from the Hub.
        The other arguments are those of :func:`push_pipeline_to_hub`.

    Example:
        ```python
        >>> from peft import LoraConfig, get_peft_model
        >>> peft_model = get_peft_model(lm, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
        >>> push_adapter_to_hub(peft_model, "me/emu3-cats-lora", base_model="BAAI/Emu3-Gen")
        ```
    """
    from peft import PeftModel  # imported on use: importing peft takes a second

    if not isinstance(model, PeftModel):
        raise TypeError(
            f"`model` must be a peft.PeftModel, got {type(model).__name__}; for an adapter folder already on disk "
            "use push_folder_to_hub(folder, repo_id)."
        )
    if adapter_name not in model.peft_config:
        raise ValueError(f"No adapter named {adapter_name!r}; the model has {sorted(model.peft_config)}.")

    def write(folder: Path) -> None:
        model.save_pretrained(folder, selected_adapters=[adapter_name], safe_serialization=True)
        if adapter_name != "default":  # PEFT saves a non-default adapter in a subfolder of its name
            nested = folder / adapter_name
            for path in nested.iterdir():
                os.replace(path, folder / path.name)
            nested.rmdir()

    return _push(write, adapter_card, repo_id, card_kwargs, private=private, token=token, revision=revision,
                 commit_message=commit_message, create_pr=create_pr, endpoint=endpoint)  # fmt: skip


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Upload a folder already on disk (pipeline, model or adapter) with a fresh card from
    :func:`~emu3_hf.hub.card_for_folder`; the folder itself is not modified (a copy gets the ``README.md``).

    Example:
        ```python
        >>> push_folder_to_hub("outputs/cats-lora", "me/emu3-cats-lora", base_model="BAAI/Emu3-Gen")
        ```
    """
    source = Path(folder)
    if not source.is_dir():
        raise ValueError(f"`folder` must be an existing folder, got {str(folder)!r}.")
    card_for_folder(source, repo_id, **card_kwargs)  # fails on a folder with nothing to describe, before copying

    def write(target: Path) -> None:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*"))

    return _push(write, card_for_folder, repo_id, card_kwargs, private=private, token=token, revision=revision,
                 commit_message=commit_message, create_pr=create_pr, endpoint=endpoint)  # fmt: skip


__all__ = ["push_adapter_to_hub", "push_folder_to_hub", "push_model_to_hub", "push_pipeline_to_hub"]
