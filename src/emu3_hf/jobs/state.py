"""What makes a job resumable, shardable and reproducible: the seed of every image, the settings a folder was made
with, one record per finished item, and the one metadata file assembled from the records.

A job keeps its state in a hidden folder (``datasets`` skips hidden paths): ``settings.json`` (what shapes the
outputs; a run with other settings into the same place is refused) and ``records/<name>.json``, written atomically
after the item's output, one per finished item. An item is done when its record exists, so a rerun (or another
process) makes exactly the missing items, and the metadata file is rebuilt from the records by one process at the
end, never appended to by several.

Example:
    ```python
    >>> from emu3_hf.jobs.state import image_seed
    >>> image_seed(0, row=3, index=1) == image_seed(0, row=3, index=1)
    True
    ```
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..utils.atomic import atomic_file

STATE_DIR = ".emu3-job"
"""The hidden folder next to a job's outputs that holds its settings and the records of finished items."""


def image_seed(seed: int, row: int, index: int) -> int:
    """The seed of the ``torch.Generator`` of image ``index`` of prompt row ``row`` in a job with base ``seed``:
    the first 8 bytes of ``sha256(f"emu3-job:{seed}:{row}:{index}")`` as a big-endian int, top bit cleared.

    It depends on these three numbers only, so batch size, batch composition, process count and resume point never
    change an image; a prompt row with its own ``seed`` S uses S + ``index`` instead (see
    :func:`emu3_hf.jobs.generate_images`). The metadata records the seed actually used.

    Example:
        ```python
        >>> image_seed(0, 0, 0) != image_seed(0, 0, 1) != image_seed(1, 0, 0)
        True
        ```
    """
    digest = hashlib.sha256(f"emu3-job:{seed}:{row}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (never a half-written file)."""
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")


class JobState:
    """The state of a job whose state folder is ``state_dir`` (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike):
        self.dir = Path(state_dir)
        self.records_dir = self.dir / "records"

    def check_settings(self, settings: dict[str, Any], *, write: bool, place: str) -> None:
        """Refuse ``settings`` that differ from those the place was made with; record them (``write``, one process)
        when the place is new. ``place`` names the output in the error."""
        path = self.dir / "settings.json"
        if path.is_file():
            before = json.loads(path.read_text(encoding="utf-8"))
            changed = {k: (before.get(k), settings.get(k)) for k in sorted(set(before) | set(settings))
                       if before.get(k) != settings.get(k)}  # fmt: skip
            if changed:
                detail = ", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in changed.items())
                raise ValueError(
                    f"{place} was made with other settings ({detail}); a job never mixes outputs of two settings. "
                    "Rerun with the same settings to finish it, or write to a new output."
                )
        elif write:
            write_json(path, settings)

    def record(self, name: str) -> dict[str, Any] | None:
        """The record of the finished item ``name``, or None."""
        path = self.records_dir / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def finish(self, name: str, record: dict[str, Any]) -> None:
        """Mark ``name`` done (call after its output is in place)."""
        write_json(self.records_dir / f"{name}.json", record)

    def records(self) -> list[dict[str, Any]]:
        """Every record, in name order."""
        if not self.records_dir.is_dir():
            return []
        files = sorted(self.records_dir.glob("*.json"))
        return [json.loads(p.read_text(encoding="utf-8")) for p in files]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON Lines atomically."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


def process_state():
    """accelerate's ``PartialState``: this process's rank, the process count and device under ``accelerate launch``
    or ``torchrun`` (one process otherwise). Launched on a machine without a GPU, the processes join over gloo on
    the CPUs (accelerate does that only when told ``cpu=True``; else each process would run the whole job alone)."""
    import torch
    from accelerate import PartialState

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    gpu = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return PartialState(cpu=launched and not gpu)


__all__ = ["JobState", "STATE_DIR", "image_seed", "process_state", "write_json", "write_jsonl"]
