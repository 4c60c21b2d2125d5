"""Writers that never leave a half-written file or folder, and never a stale one: write next to the target, then
swap it in.

Every writer of the package (pipeline and model saves, conversion, training checkpoints, CLI outputs, video export)
goes through these two, so an interrupted run leaves the previous file or folder as it was, and a finished one leaves
exactly what it wrote.

- :func:`atomic_file` writes a temporary file next to the target and renames it over the target.
- :func:`staged_folder` writes a temporary folder next to the target and exchanges the two in one ``renameat2``
  (Linux; elsewhere two renames, with an instant where the target is absent). In every folder where the save
  writes weights, the previous weight files (``*.safetensors``, pickles such as ``*.bin`` / ``*.pt``) and weight
  indexes (``*.index.json``) never survive it, so a later load returns exactly what was saved, whatever the sharding.
  Everything else the save did not write is carried over unchanged (hard links, or copies where links are
  impossible): a README.md, ``.git``, notes, and the weights of a folder when the save wrote none there (a tokenizer
  saved next to a model).
- Both create what they write with the modes a plain ``open()`` / ``mkdir()`` gives under the process umask (files
  ``0o666 & ~umask``, folders ``0o777 & ~umask``); a file or folder that is replaced keeps its previous mode, as an
  in-place write would.

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

import ctypes
import os
import secrets
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Weights in every format and their shard indexes: a save that writes weights into a folder replaces all of these.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".msgpack", ".h5", ".gguf")


def is_weight_file(name: str) -> bool:
    """Whether a file name is a checkpoint's weights or weight index (not carried over a save that writes weights)."""
    return name.endswith(WEIGHT_SUFFIXES) or name.endswith(".index.json")


def _sibling_name(target: Path, suffix: str) -> Path:
    return target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder (same suffix); on success it replaces ``path`` in one rename.

    The result has the mode ``open(path, "w")`` would give it: ``0o666 & ~umask`` for a new file, the previous mode
    of a replaced one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}{path.suffix}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    os.close(fd)
    try:
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
        yield str(tmp)
        os.chmod(tmp, mode)  # also after writers that replace the file with a private one (safetensors)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def _carry_over(old: Path, new: Path) -> None:
    """Bring into ``new`` what ``old`` holds and the save did not write. In a folder where the save wrote weights,
    the previous weights and weight indexes are dropped; a folder where it wrote none (a tokenizer saved next to a
    model) keeps them. Hidden entries (``.git``, ``.cache``) are carried whole: they are not ours to judge."""
    wrote_weights = any(entry.is_file() and is_weight_file(entry.name) for entry in os.scandir(new))
    for entry in os.scandir(old):
        destination = new / entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        if os.path.lexists(destination):
            if is_dir and not entry.name.startswith(".") and destination.is_dir() and not destination.is_symlink():
                _carry_over(Path(entry.path), destination)
            continue
        if is_dir:
            shutil.copytree(entry.path, destination, symlinks=True, copy_function=_link_or_copy)
        elif not (wrote_weights and is_weight_file(entry.name)):
            _link_or_copy(entry.path, str(destination))


def _apply_umask(folder: Path, umask: int) -> None:
    """Give what a save wrote the modes of a plain ``open()`` / ``mkdir()``: some writers (safetensors' ``save_file``)
    create private (0o600) files whatever the umask. Executable files stay executable."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            executable = name in dirs or os.stat(path).st_mode & stat.S_IXUSR
            os.chmod(path, (0o777 if executable else 0o666) & ~umask)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the previous ``target`` ends at ``staging`` (the caller removes it)."""
    if _exchange(staging, target):
        return
    backup = _sibling_name(target, ".old")
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    os.replace(backup, staging)


@contextmanager
def staged_folder(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it becomes ``target``, replacing its content.

    A new ``target`` appears in one rename; an existing one is exchanged with the staging folder, after the entries
    of ``target`` that the save did not write were carried over, except previous weights and weight indexes in a
    folder where the save wrote weights. A failed or interrupted save leaves ``target`` as it was; a finished one
    leaves no stale weights. A symlink ``target`` is followed (the folder it points to is replaced).
    """
    target = Path(target)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"Cannot save a folder at {str(target)!r}: a file of that name exists.")
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        staging = _sibling_name(target, ".partial")
        try:
            staging.mkdir(0o777)  # the kernel applies the umask, as for any folder the save creates inside
            break
        except FileExistsError:
            continue
    umask = ~stat.S_IMODE(staging.stat().st_mode) & 0o777  # read back, not os.umask(): that call is process-wide
    try:
        yield staging
        _apply_umask(staging, umask)
        if not target.exists():
            os.replace(staging, target)
            return
        os.chmod(staging, stat.S_IMODE(target.stat().st_mode))
        _carry_over(target, staging)
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["WEIGHT_SUFFIXES", "atomic_file", "is_weight_file", "staged_folder"]
