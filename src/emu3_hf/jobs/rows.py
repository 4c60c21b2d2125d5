"""The rows a job reads: prompts from a text file, a JSON Lines file or a ``datasets`` dataset; images from a folder
or a dataset. Everything here is checked before a model is loaded, and every error names the file, the line and
the fix.

Example:
    ```python
    >>> from emu3_hf.jobs.rows import read_prompts
    >>> rows = read_prompts("prompts.jsonl")  # {"prompt": "a red circle", "seed": 3, "ratio": "16:9"} per line
    >>> rows[0].prompt, rows[0].index
    ('a red circle', 0)
    ```
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.jsonl import read_json_objects

PROMPT_KEYS = ("prompt", "negative_prompt", "seed", "ratio", "height", "width", "num_images")
"""The keys a ``.jsonl`` prompt row may hold (``prompt`` is required; the others override the job's settings)."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class PromptRow:
    """One prompt of a job: its position ``index`` in the source (the key of its file names and seeds) and the
    settings it overrides (None: the job's)."""

    index: int
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    ratio: str | None = None
    height: int | None = None
    width: int | None = None
    num_images: int | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_row(row: dict, where: str, index: int) -> PromptRow:
    unknown = sorted(set(row) - set(PROMPT_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; a prompt row may hold {list(PROMPT_KEYS)}.")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: `prompt` must be a non-empty string, got {prompt!r}.")
    negative = row.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise ValueError(f"{where}: `negative_prompt` must be a string, got {negative!r}.")
    seed = row.get("seed")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"{where}: `seed` must be an int >= 0, got {seed!r}.")
    for key in ("height", "width", "num_images"):
        value = row.get(key)
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"{where}: `{key}` must be a positive int, got {value!r}.")
    if (row.get("height") is None) != (row.get("width") is None):
        raise ValueError(f"{where}: give both `height` and `width` (pixels) or neither.")
    ratio = row.get("ratio")
    if ratio is not None:
        from ..processing.processing_emu3 import calculate_generate_size

        try:  # the ratio's own checks, on a size that always fits
            calculate_generate_size(ratio, 1 << 20, 1)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return PromptRow(index=index, prompt=prompt, negative_prompt=negative, seed=seed, ratio=ratio,
                     height=row.get("height"), width=row.get("width"), num_images=row.get("num_images"))  # fmt: skip


def _read_text(path: Path) -> list[PromptRow]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [PromptRow(index=i, prompt=line.strip()) for i, line in enumerate(line for line in lines if line.strip())]


def _read_jsonl(path: Path) -> list[PromptRow]:
    rows = []
    for where, row in read_json_objects(path):
        rows.append(_check_row(row, where, len(rows)))
    return rows


def load_dataset_source(source: str | os.PathLike, split: str) -> Any:
    """A ``datasets`` dataset from a folder written by ``save_to_disk`` or a Hub dataset id (``datasets`` needed)."""
    try:
        import datasets
    except ImportError:
        raise ValueError(f"Reading the dataset {source} needs `pip install 'emu3-hf[train]'` (the datasets "
                         "library).") from None  # fmt: skip
    if Path(source).is_dir():
        loaded = datasets.load_from_disk(str(source))
    else:
        loaded = datasets.load_dataset(str(source), split=split)
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"The dataset {source} has splits {list(loaded)}, not {split!r}: pass --split.")
        loaded = loaded[split]
    return loaded


def _pick_column(dataset: Any, column: str | None, candidates: tuple[str, ...], what: str, source) -> str:
    names = list(dataset.column_names)
    if column is not None:
        if column not in names:
            raise ValueError(f"The dataset {source} has no column {column!r} (columns: {names}).")
        return column
    for name in candidates:
        if name in names:
            return name
    raise ValueError(f"The dataset {source} has no {what} column among {list(candidates)} (columns: {names}); "
                     "name it with --column.")  # fmt: skip


def read_prompts(source: str | os.PathLike, *, column: str | None = None, split: str = "train") -> list[PromptRow]:
    """The prompt rows of ``source``: a ``.txt`` file (one prompt a line, blank lines skipped), a ``.jsonl`` file
    (keys :data:`PROMPT_KEYS`), or a ``datasets`` folder / Hub dataset id whose ``column`` (default ``prompt``, else
    ``text``, else ``caption``) holds the prompts. Row ``index`` counts the prompts in order from 0.

    Example:
        ```python
        >>> [r.prompt for r in read_prompts("prompts.txt")]
        ['a red circle', 'a blue square']
        ```
    """
    path = Path(source)
    if path.suffix.lower() == ".txt" and path.is_file():
        rows = _read_text(path)
    elif path.suffix.lower() == ".jsonl" and path.is_file():
        rows = _read_jsonl(path)
    elif path.suffix.lower() in (".txt", ".jsonl"):
        raise ValueError(f"No prompts file at {path}.")
    elif path.is_file():
        raise ValueError(f"--prompts {path}: give a .txt file (one prompt a line), a .jsonl file (one "
                         "{\"prompt\": ...} object a line) or a datasets folder / Hub dataset id.")  # fmt: skip
    else:
        dataset = load_dataset_source(source, split)
        name = _pick_column(dataset, column, ("prompt", "text", "caption"), "text", source)
        rows = [_check_row({"prompt": text}, f"{source}, row {i}", i) for i, text in enumerate(dataset[name])]
    if not rows:
        raise ValueError(f"{source} holds no prompt.")
    return rows


@dataclass(frozen=True)
class ImageRow:
    """One image of a captioning job: ``index`` in the source, the ``file_name`` it is reported under, and where
    to read it (a path, or a dataset and its image column, read only when the row is processed)."""

    index: int
    file_name: str
    path: Path | None = None
    dataset: Any = None
    column: str | None = None

    def load(self):
        """The image as RGB PIL."""
        from PIL import Image

        image = Image.open(self.path) if self.path is not None else self.dataset[self.index][self.column]
        return image.convert("RGB")


def read_images(source: str | os.PathLike, *, column: str | None = None, split: str = "train") -> list[ImageRow]:
    """The images of ``source``: a folder (every image file below it, in sorted path order, reported by its path
    relative to the folder, as ``datasets``' imagefolder names them), a folder written by ``save_to_disk`` or a Hub
    dataset id with an image ``column`` (default ``image``; reported as ``"row-N"``)."""
    path = Path(source)
    if path.is_dir() and not (path / "dataset_info.json").is_file() and not (path / "dataset_dict.json").is_file():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))  # fmt: skip
        if not files:
            raise ValueError(f"{path} holds no image file ({', '.join(IMAGE_EXTENSIONS)}).")
        return [ImageRow(i, p.relative_to(path).as_posix(), path=p) for i, p in enumerate(files)]
    if path.is_file():
        raise ValueError(f"--images {path}: give a folder of images or a datasets folder / Hub dataset id.")
    dataset = load_dataset_source(source, split)
    name = _pick_column(dataset, column, ("image",), "image", source)
    return [ImageRow(i, f"row-{i}", dataset=dataset, column=name) for i in range(len(dataset))]


__all__ = ["IMAGE_EXTENSIONS", "ImageRow", "PROMPT_KEYS", "PromptRow", "load_dataset_source", "read_images",
           "read_prompts"]
