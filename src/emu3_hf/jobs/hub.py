"""Publish a finished job folder as a Hub dataset repo (the images, ``metadata.jsonl`` and a dataset card), in one
commit through huggingface_hub's ``HfApi``; the job's hidden state folder stays local.

Example:
    ```python
    >>> from emu3_hf.jobs import push_job_to_hub
    >>> push_job_to_hub("shapes", "me/emu3-shapes", private=True).commit_url
    ```
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from huggingface_hub.utils import validate_repo_id

from .generate import METADATA
from .state import STATE_DIR


def dataset_card(folder: Path, repo_id: str) -> str:
    """The README.md of a pushed job: YAML metadata the Hub reads, what the columns are and how to load it."""
    settings_file = folder / STATE_DIR / "settings.json"
    settings = json.loads(settings_file.read_text(encoding="utf-8")) if settings_file.is_file() else {}
    count = sum(1 for line in (folder / METADATA).read_text(encoding="utf-8").splitlines() if line.strip())
    task = "text-to-image" if settings.get("task", "text-to-image") == "text-to-image" else "image-to-text"
    lines = ["---", "tags:", "- emu3", "- emu3-hf", "- synthetic", "task_categories:", f"- {task}", "---", "",
             f"# {repo_id.split('/')[-1]}", "",
             f"{count} images generated with Emu3 by `emu3 generate --prompts` (emu3-hf). `metadata.jsonl` holds one "
             "line per image: `file_name`, `text` (the prompt), the `seed` of its generator and every setting that "
             "shaped it.", "", "```python", "import datasets", "",
             f'ds = datasets.load_dataset("{repo_id}", split="train")', "```", "", "Job settings:", "", "```json",
             json.dumps(settings, indent=1, sort_keys=True), "```", ""]  # fmt: skip
    return "\n".join(lines)


def push_job_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Upload the job folder ``folder`` (images + ``metadata.jsonl``) to the dataset repo ``repo_id`` with a card,
    creating the repo if needed. Refused before any request when the folder holds no finished job.

    Example:
        ```python
        >>> push_job_to_hub("shapes", "me/emu3-shapes").oid
        ```
    """
    validate_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / METADATA).is_file():
        raise ValueError(f"{folder} has no {METADATA}: push the folder of a finished `emu3 generate --prompts` job.")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))  # fmt: skip
    operations = [CommitOperationAdd(p.relative_to(folder).as_posix(), str(p)) for p in files if p.name != "README.md"]
    operations.append(CommitOperationAdd("README.md", dataset_card(folder, repo_id).encode()))
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.create_commit(repo_id, operations, repo_type="dataset",
                             commit_message=commit_message or f"Upload {len(files)} files of an emu3 job")  # fmt: skip


__all__ = ["dataset_card", "push_job_to_hub"]
