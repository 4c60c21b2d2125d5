"""Pixel batches for VQ training (:func:`~emu3_hf.training.vq.train_vq`): images and clips from streams, lists,
datasets or a ``metadata.jsonl`` folder, normalised like the image processor, in a seeded and resumable order.

A source is one of:

- a folder with ``metadata.jsonl`` or a ``save_to_disk`` folder (read by
  :func:`~emu3_hf.training.data.load_examples`; the image source reads its ``image`` rows, the video source its
  ``video`` rows);
- a sequence (``list``, ``tuple``, ``datasets.Dataset``, a uint8 array of images): read in a fresh seeded order
  every epoch, for as many epochs as the run needs;
- any other iterable (e.g. the tiny world's ``iter_image_examples(..., epochs=None)``): read once, in its order.

An example is an image (a PIL image, a ``(H, W, 3)`` uint8 array or tensor, or a file path) or, for videos, a clip
(a list of such frames, a ``(T, H, W, 3)`` uint8 array, or a video file path); it may come as the first item of an
``(example, caption)`` pair, as the tiny world's streams yield, or as the ``image`` / ``video`` value of a dict row.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

KINDS = ("image", "video")
_END = object()


def _unwrap(example: Any, kind: str) -> Any:
    """The image or clip inside an ``(example, caption)`` pair or a dataset row."""
    if isinstance(example, dict):
        if example.get(kind) is None:
            raise ValueError(f"A {kind} example row has no `{kind}` value (keys: {sorted(example)}).")
        return example[kind]
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], str):
        return example[0]
    return example


def _frame_array(value: Any, kind: str) -> np.ndarray:
    """One frame as a (H, W, 3) uint8 array."""
    import PIL.Image

    if isinstance(value, (str, os.PathLike)):
        from .data import open_image

        value = open_image(value)
    if isinstance(value, PIL.Image.Image):
        return np.asarray(value.convert("RGB"), dtype=np.uint8)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"A {kind} example must be a PIL image, a (H, W, 3) uint8 array or a file path, got {type(value).__name__}."
        )
    if value.dtype != np.uint8 or value.ndim != 3 or value.shape[-1] != 3:
        raise ValueError(
            f"A {kind} frame array must be (H, W, 3) uint8 RGB, got shape {value.shape} and dtype {value.dtype}. "
            "Convert with (x * 255).round().astype(np.uint8) and put channels last."
        )
    return value


def to_pixels(example: Any, kind: str) -> np.ndarray:
    """An example as uint8 pixels: (H, W, 3) for an image, (T, H, W, 3) for a clip."""
    value = _unwrap(example, kind)
    if kind == "image":
        return _frame_array(value, kind)
    if isinstance(value, (str, os.PathLike)):
        from .data import open_video

        value = open_video(value)
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 4:
        frames = [_frame_array(frame, kind) for frame in value]
    elif isinstance(value, (list, tuple)) and value:
        frames = [_frame_array(frame, kind) for frame in value]
    else:
        raise ValueError(
            f"A video example must be a list of frames, a (T, H, W, 3) uint8 array or a video file path, got "
            f"{type(value).__name__}{getattr(value, 'shape', '')}."
        )
    if len({f.shape for f in frames}) > 1:
        raise ValueError(f"A clip's frames differ in size: {sorted({f.shape for f in frames})}.")
    return np.stack(frames)


def normalize(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] exactly as the image processor does it (x / 255, then (x - 0.5) / 0.5),
    channels moved before H and W: (..., H, W, 3) -> (..., 3, H, W)."""
    scaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis((scaled - 0.5) / 0.5, -1, -3)))


def stack_batch(examples: list[np.ndarray], kind: str, spatial_factor: int, temporal_factor: int) -> torch.Tensor:
    """Check and stack one batch: (B, 3, H, W) images or (B, T, 3, H, W) clips in [-1, 1]."""
    shapes = sorted({e.shape for e in examples})
    if len(shapes) > 1:
        raise ValueError(
            f"The {kind}s of one batch must share one size, got {shapes}. Resize or crop every {kind} to one size "
            "(the tiny world's are all 64 x 64, 8 frames)."
        )
    shape = shapes[0]
    height, width = shape[-3:-1]
    if height % spatial_factor or width % spatial_factor:
        raise ValueError(
            f"{kind} size {height}x{width} is not a multiple of the VQ's spatial_scale_factor={spatial_factor}: "
            f"resize or crop to multiples of {spatial_factor}."
        )
    if kind == "video" and shape[0] % temporal_factor:
        raise ValueError(
            f"Clips of {shape[0]} frames cannot be encoded: the frame count must be a multiple of the VQ's "
            f"temporal_downsample_factor={temporal_factor}. Trim or pad the clips."
        )
    return normalize(np.stack(examples))


def _folder_rows(folder: Path, kind: str) -> list[Any]:
    from .data import load_examples

    examples = load_examples(folder)
    if kind not in examples.column_names:
        raise ValueError(f"{folder} holds no {kind} examples (columns {examples.column_names}); pass it as the "
                         f"{'videos' if kind == 'image' else 'images'} source instead.")  # fmt: skip
    rows = [value for value in examples.select_columns([kind]).with_format(None)[kind] if value is not None]
    if not rows:
        raise ValueError(f"{folder} holds no {kind} examples.")
    return rows


def _is_sequence(data: Any) -> bool:
    return hasattr(data, "__len__") and hasattr(data, "__getitem__") and not isinstance(data, (str, bytes, dict))


class ExampleSource:
    """Examples of one kind in a reproducible order; :meth:`state` / :meth:`restore` resume it exactly.

    Sequences are read in a permutation seeded by (seed, kind, epoch); other iterables are read once in their own
    order (a resumed run passes the same stream again and skips what the interrupted run consumed).
    """

    def __init__(self, data: Any, kind: str, seed: int):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
        self.kind, self.seed = kind, seed
        if isinstance(data, (str, os.PathLike)):
            folder = Path(data)
            if not folder.is_dir():
                raise FileNotFoundError(f"{kind}s: {folder} is not a folder (expected one with metadata.jsonl).")
            data = _folder_rows(folder, kind)
        self.rows = data if _is_sequence(data) else None
        if self.rows is not None and len(self.rows) == 0:
            raise ValueError(f"The {kind} source is empty.")
        if self.rows is None:
            try:
                self.iterator: Iterator[Any] = iter(data)
            except TypeError:
                raise ValueError(
                    f"The {kind} source must be a folder, a sequence or an iterable of examples, got "
                    f"{type(data).__name__}."
                ) from None
        self.epoch, self.position, self.consumed = 0, 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            rng = np.random.default_rng([self.seed, KINDS.index(self.kind), self.epoch])
            self._order = rng.permutation(len(self.rows))
        return self._order

    def take(self, count: int) -> list[Any]:
        """The next ``count`` examples as uint8 pixel arrays."""
        out = []
        while len(out) < count:
            if self.rows is not None:
                if self.position == len(self.rows):
                    self.epoch, self.position, self._order = self.epoch + 1, 0, None
                example = self.rows[int(self._epoch_order()[self.position])]
                self.position += 1
            else:
                example = next(self.iterator, _END)
                if example is _END:
                    raise ValueError(
                        f"The {self.kind}s stream ended after {self.consumed} examples, before the run's "
                        "last step. Pass an endless stream (e.g. iter_image_examples(..., epochs=None)), a list or "
                        "a folder (read for as many epochs as needed), or lower max_steps."
                    )
            self.consumed += 1
            out.append(to_pixels(example, self.kind))
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "consumed": self.consumed}

    def restore(self, state: dict[str, int]) -> None:
        """Continue where a run with this state stopped (an iterable is advanced past what it consumed)."""
        if self.rows is not None:
            self.epoch, self.position, self._order = int(state["epoch"]), int(state["position"]), None
        else:
            skipped = sum(1 for _ in itertools.islice(self.iterator, int(state["consumed"])))
            if skipped < int(state["consumed"]):
                raise ValueError(
                    f"Resuming needs the {self.kind}s stream the run was started with: it consumed "
                    f"{state['consumed']} examples, this stream holds only {skipped}."
                )
        self.consumed = int(state["consumed"])


__all__ = ["ExampleSource", "normalize", "stack_batch", "to_pixels"]
