"""Training data: examples from a folder or a ``datasets`` dataset, tokenized once by the VQ into a cached dataset.

Sources (:func:`load_examples`):

- a folder with ``metadata.jsonl`` (the ``datasets`` imagefolder convention): one JSON object per line with
  ``file_name`` (an image, or a clip: ``.gif``/``.mp4``/...) and ``text``; or ``question`` + ``answer`` for
  understanding (image + question -> answer);
- a folder written by ``Dataset.save_to_disk``, or any ``datasets.Dataset`` with the columns ``image`` + ``text``
  (text-to-image), ``video`` + ``text`` (text-to-video; a list of frames or a file path), or ``image`` +
  ``question`` + ``answer`` (understanding). A row may instead come already tokenized: ``codes`` (the VQ's ids,
  flat) and ``grid`` (``[T, h, w]``, ``T = 0`` for an image) in place of its image or clip; it is kept as it is.

:func:`tokenize_dataset` runs the VQ over the images in batches (images of one processed size together), with a
progress bar, and saves chunks under ``cache_dir`` as it goes (each chunk written atomically): an interrupted run
resumes at the first missing chunk. The result is a ``datasets.Dataset`` with ``codes`` (flat ints), ``grid``
(``[T, h, w]``, ``T = 0`` for an image), ``text``, ``question`` and ``answer``. Nothing here unpickles anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..utils.atomic import atomic_file, staged_folder
from ..utils.jsonl import read_json_objects
from ..utils.media import check_media_file

CACHE_FORMAT = 1


def _datasets():
    try:
        import datasets
    except ImportError as error:  # pragma: no cover - datasets is in the train and dev extras
        raise ImportError("Training data needs the `datasets` package: pip install 'emu3-hf[train]'.") from error
    return datasets


def _read_metadata(folder: Path) -> list[dict]:
    path = folder / "metadata.jsonl"
    rows = []
    for where, row in read_json_objects(path):
        name = row.get("file_name")
        if not name:
            raise ValueError(f"{where}: every line needs a `file_name` (the image or clip).")
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"{where}: {file} does not exist.")
        if row.get("text") is None and (row.get("question") is None or row.get("answer") is None):
            raise ValueError(f"{where}: give `text` (a caption) or `question` and `answer`.")
        try:
            check_blank_texts(row)
            column = check_media_file(file)  # read now: a bad file fails here, not after the model has loaded
        except (ValueError, TypeError, OSError) as error:
            raise type(error)(f"{where}: {error}") from None
        rows.append({column: str(file), "text": row.get("text"), "question": row.get("question"),
                     "answer": row.get("answer")})  # fmt: skip
    if not rows:
        raise ValueError(f"{path} lists no examples.")
    return rows


def check_blank_texts(row: dict) -> None:
    """An empty or blank caption (or answer) is a mistake, not data: a run learns the unconditional branch of
    classifier-free guidance from ``null_prompt_prob`` (which empties the prompt of a share of the rows, reproducibly),
    so a row without a caption is refused rather than trained as an unconditional one."""
    for key in ("text", "answer"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"`{key}` must be a string, got {type(value).__name__} {value!r}.")
        if value is not None and not value.strip() and (key == "answer" or row.get("answer") is None):
            fix = ("write the caption, or drop the row (unconditional rows come from null_prompt_prob, "
                   "--null-prompt-prob)") if key == "text" else "write the answer, or drop the row"
            raise ValueError(f"`{key}` is empty ({value!r}): {fix}.")


def _check_dataset_texts(source: Any) -> None:
    """:func:`check_blank_texts` on every row of a dataset (the text columns only: no image is decoded)."""
    keys = [k for k in ("text", "answer") if k in source.column_names]
    if not keys:
        return
    table = source.select_columns(keys).with_format(None)[:]
    for number, values in enumerate(zip(*(table[k] for k in keys))):
        try:
            check_blank_texts(dict(zip(keys, values)))
        except (ValueError, TypeError) as error:
            raise type(error)(f"Row {number}: {error}") from None


def load_examples(source: Any) -> Any:
    """A ``datasets.Dataset`` of raw examples from a folder with ``metadata.jsonl``, a ``save_to_disk`` folder, or a
    dataset (returned as is after its columns are checked)."""
    datasets = _datasets()
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if (folder / "metadata.jsonl").is_file():
            rows = _read_metadata(folder)
            columns = {key: [row.get(key) for row in rows] for key in ("image", "video", "text", "question", "answer")}
            source = datasets.Dataset.from_dict({k: v for k, v in columns.items() if any(x is not None for x in v)})
        elif (folder / "dataset_info.json").is_file() or (folder / "state.json").is_file():
            source = datasets.load_from_disk(str(folder))
        else:
            raise ValueError(
                f"{folder} is neither a folder with metadata.jsonl (file_name + text per line) nor a dataset saved "
                "with Dataset.save_to_disk. Pass one of those or a datasets.Dataset."
            )
    if isinstance(source, datasets.DatasetDict):
        raise ValueError(f"Got a DatasetDict with splits {list(source)}: pass one split, e.g. dataset['train'].")
    columns = set(source.column_names)
    if not columns & {"image", "video", "codes"}:
        raise ValueError(f"The dataset needs an `image`, `video` or `codes` column; it has {sorted(columns)}.")
    if "codes" in columns and "grid" not in columns:
        raise ValueError("A `codes` column (already tokenized rows) needs a `grid` column too: [T, h, w] per row, "
                         "T = 0 for an image.")
    if "text" not in columns and not {"question", "answer"} <= columns:
        raise ValueError(f"The dataset needs a `text` column, or `question` and `answer`; it has {sorted(columns)}.")
    _check_dataset_texts(source)
    return source


def open_image(value: Any):
    """A training row's image as RGB: a path, datasets' undecoded ``{"bytes", "path"}`` dict, or a PIL image."""
    from PIL import Image

    if isinstance(value, (str, os.PathLike)):
        with Image.open(value) as image:
            return image.convert("RGB")
    if isinstance(value, dict):  # datasets' undecoded Image feature
        import io

        return Image.open(io.BytesIO(value["bytes"])).convert("RGB") if value.get("bytes") else open_image(value["path"])
    return value


def open_video(value: Any) -> list:
    """A training row's clip as a list of frames: a path (read with :func:`~emu3_hf.utils.video_export.load_video`)
    or frames already."""
    if isinstance(value, (str, os.PathLike)):
        from ..utils.video_export import load_video

        return load_video(value)
    return list(value)


def _examples_digest(examples: Any) -> str:
    """A digest of the examples that is the same in every run over the same data: datasets' own fingerprint for a
    dataset backed by files (``load_from_disk``), a hash of the table for one built in memory (``from_dict`` gets a
    random fingerprint), and the size and mtime of every file an ``image`` / ``video`` path names."""
    from datasets.fingerprint import Hasher

    digest = hashlib.sha256()
    digest.update((examples._fingerprint if examples.cache_files else Hasher.hash(examples.data)).encode())
    for column in ("image", "video"):
        if column not in examples.column_names:
            continue
        for value in examples.select_columns([column]).with_format(None)[column]:
            if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
                stat = Path(value).stat()
                digest.update(f"{value}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _fingerprint(examples: Any, processor: Any) -> str:
    """What the cached codes depend on: the examples, the VQ's config and weights, the image processor."""
    vq = processor.vq_model
    digest = hashlib.sha256()
    digest.update(_examples_digest(examples).encode())
    digest.update(json.dumps(vq.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vq.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes()[:4096])
    digest.update(json.dumps(processor.image_processor.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _features(datasets):
    text = datasets.Value("string")
    ints = datasets.Sequence(datasets.Value("int32"))
    return datasets.Features(codes=ints, grid=ints, text=text, question=text, answer=text)


def _check_pretokenized(examples: Any, codebook_size: int) -> None:
    """Every already tokenized row (``codes`` + ``grid``) is whole and in the VQ's range; every other row has an image
    or a clip. Raises ValueError naming the first bad row, before any encoding."""
    if "codes" not in examples.column_names:
        return
    media = [c for c in ("image", "video") if c in examples.column_names]
    # Arrow, not rows: the images are only tested for presence, never decoded.
    table = examples.select_columns(["codes", "grid", *media]).with_format("arrow")[:]
    nulls = [table.column(c).is_null().to_pylist() for c in media]
    with_media = [not all(row) for row in zip(*nulls)] if media else [False] * table.num_rows
    rows = zip(table.column("codes").to_pylist(), table.column("grid").to_pylist(), with_media)
    for number, (codes, grid, has_media) in enumerate(rows):
        if codes is None:
            if not has_media:
                raise ValueError(f"Row {number} has no image, clip or codes.")
            continue
        if has_media:
            raise ValueError(f"Row {number} has codes and an image or clip: give one of them.")
        if grid is None or len(grid) != 3 or min(grid) < 0 or min(grid[1:]) < 1:
            raise ValueError(f"Row {number}: grid must be [T, h, w] (T = 0 for an image, h, w >= 1), got {grid}.")
        size = max(grid[0], 1) * grid[1] * grid[2]
        if len(codes) != size:
            raise ValueError(f"Row {number}: grid {grid} needs {size} codes, got {len(codes)}.")
        if codes and (min(codes) < 0 or max(codes) >= codebook_size):
            raise ValueError(f"Row {number}: codes must lie in [0, {codebook_size}) (the VQ's codebook), got "
                             f"{min(codes)}..{max(codes)}.")


def _encode_chunk(rows: list[dict], processor: Any, batch_size: int, bar) -> list[dict]:
    vq = processor.vq_model
    out: list[dict | None] = [None] * len(rows)
    by_size: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
    for i, row in enumerate(rows):
        if row.get("codes") is not None:  # already tokenized: kept as it is
            out[i] = {"codes": list(row["codes"]), "grid": list(row["grid"])}
            bar.update(1)
            continue
        if row.get("video") is not None:
            codes = processor.encode_video(open_video(row["video"]))  # (T, h, w)
            out[i] = {"codes": codes.flatten().tolist(), "grid": list(codes.shape)}
            bar.update(1)
            continue
        pixels = processor.image_processor(open_image(row["image"]), return_tensors="pt")["pixel_values"][0]
        by_size.setdefault(tuple(pixels.shape), []).append((i, pixels))
    for items in by_size.values():
        for start in range(0, len(items), batch_size):
            part = items[start : start + batch_size]
            pixels = torch.stack([p for _, p in part]).to(device=vq.device, dtype=vq.dtype)
            with torch.no_grad():
                codes = vq.encode(pixels).cpu()  # (n, h, w)
            for (i, _), grid in zip(part, codes):
                out[i] = {"codes": grid.flatten().tolist(), "grid": [0, *grid.shape]}
            bar.update(len(part))
    for i, row in enumerate(rows):
        out[i].update(text=row.get("text"), question=row.get("question"), answer=row.get("answer"))
    return out


def tokenize_dataset(
    examples: Any,
    processor: Any,
    cache_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    chunk_size: int = 512,
    show_progress: bool = True,
) -> Any:
    """VQ codes for every example, cached in ``cache_dir`` (resumable; reused when the same examples, VQ and image
    processor come again); rows given as ``codes`` + ``grid`` are checked against the VQ's codebook and kept as they
    are. ``processor`` is an :class:`~emu3_hf.Emu3MultimodalProcessor` built with its ``vq_model``. Returns the
    ``datasets.Dataset`` of codes."""
    datasets = _datasets()
    if getattr(processor, "vq_model", None) is None:
        raise ValueError("tokenize_dataset needs the processor's vq_model (Emu3MultimodalProcessor(..., vq_model=vq)).")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size} and {chunk_size}.")
    examples = load_examples(examples)
    _check_pretokenized(examples, processor.vq_model.config.codebook_size)
    cache = Path(cache_dir)
    key = {"format": CACHE_FORMAT, "fingerprint": _fingerprint(examples, processor), "rows": len(examples),
           "chunk_size": chunk_size}  # fmt: skip
    meta_path = cache / "cache.json"
    if meta_path.is_file():
        found = json.loads(meta_path.read_text())
        if found != key:
            raise ValueError(
                f"{cache} holds codes of other examples or another VQ / image processor ({found} != {key}). "
                "Pass a new cache_dir, or delete this one to re-tokenize."
            )
    else:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_file(meta_path) as tmp:
            Path(tmp).write_text(json.dumps(key, indent=2))
    with _datasets_progress(datasets, show_progress):
        return _tokenize_chunks(examples, processor, cache, chunk_size, batch_size, show_progress)


@contextlib.contextmanager
def _datasets_progress(datasets, show: bool):
    """datasets' own progress bars (saving, loading) follow ``show_progress`` and are restored afterwards."""
    was_enabled = datasets.is_progress_bar_enabled()
    if not show:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not show:
            datasets.enable_progress_bars()


def _tokenize_chunks(examples: Any, processor: Any, cache: Path, chunk_size: int, batch_size: int, show: bool):
    datasets = _datasets()
    from tqdm.auto import tqdm

    starts = range(0, len(examples), chunk_size)
    chunk_dirs = [cache / f"chunk-{i // chunk_size:05d}" for i in starts]
    done = sum(min(chunk_size, len(examples) - s) for s, d in zip(starts, chunk_dirs) if d.is_dir())
    columns = [c for c in ("image", "video", "codes", "grid", "text", "question", "answer") if c in examples.column_names]
    with tqdm(total=len(examples), initial=done, desc="VQ tokenizing", unit="example", disable=not show) as bar:
        for start, folder in zip(starts, chunk_dirs):
            if folder.is_dir():
                continue
            part = examples.select_columns(columns).select(range(start, min(start + chunk_size, len(examples))))
            rows = _encode_chunk(list(part), processor, batch_size, bar)
            with staged_folder(folder) as staging:
                datasets.Dataset.from_list(rows, features=_features(datasets)).save_to_disk(str(staging))
    return datasets.concatenate_datasets([datasets.load_from_disk(str(d)) for d in chunk_dirs])


__all__ = ["check_blank_texts", "load_examples", "open_image", "open_video", "tokenize_dataset"]
