"""Writers that never leave a half-written file or folder: write next to the target, then rename.

Every writer of the package (pipeline and model saves, conversion, training checkpoints, CLI outputs, video export)
goes through these two, so an interrupted run leaves the previous file or folder as it was.

Example:
    ```python
    >>> from emu3_hf.utils.atomic import atomic_file, staged_folder
    >>> with atomic_file("out.png") as tmp:
    ...     image.save(tmp, format="PNG")
    >>> with staged_folder("checkpoint-100") as tmp:
    ...     model.save_pretrained(tmp)
    ```
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder (same suffix); on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success move its content into ``target``.

    A new ``target`` appears in one rename; into an existing one every file is moved with an atomic ``os.replace``,
    so a failed save leaves ``target`` as it was and no file is ever half written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        if not target.exists():
            os.replace(staging, target)
            return
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            destination = target / path.relative_to(staging)
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["atomic_file", "staged_folder"]
