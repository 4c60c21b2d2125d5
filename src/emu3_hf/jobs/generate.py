"""Text-to-image jobs: many prompts in, a ``datasets`` imagefolder out, sharded over processes, resumable.

The output folder holds the images (``<row>-<index>.png``, row = the prompt's position in the source) and a
``metadata.jsonl`` with one line per image: ``file_name``, ``text`` (the prompt; the column ``emu3 train`` reads),
and every setting that shaped the image (seed, size, guidance, sampling, negative prompt, model), so
``datasets.load_dataset("imagefolder", data_dir=DIR)`` reads it back. Image ``k`` of row ``r`` is drawn with its own
``torch.Generator`` seeded by :func:`~emu3_hf.jobs.state.image_seed` ``(seed, r, k)`` (or the row's own ``seed`` +
``k``), so an image never depends on the batch size, the batch composition, the process count or where a run was
resumed.

Example:
    ```python
    >>> from emu3_hf.jobs import generate_images
    >>> result = generate_images(pipe, "prompts.jsonl", "out", batch_size=8, seed=0)
    >>> import datasets; datasets.load_dataset("imagefolder", data_dir="out", split="train")[0]["text"]
    'a red circle'
    ```
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..processing.processing_emu3 import calculate_generate_size
from ..utils.atomic import atomic_file
from .rows import PromptRow, read_prompts
from .state import STATE_DIR, JobState, image_seed, process_state, write_jsonl

METADATA = "metadata.jsonl"


@dataclass
class JobResult:
    """What one process of a job did: ``made`` items now, ``skipped`` ones found finished; ``total`` in the job."""

    output: Path
    made: int
    skipped: int
    total: int


def _check_number(name: str, value: Any, *, low: float, inclusive: bool = False, integer: bool = False,
                  high: float | None = None) -> None:  # fmt: skip
    kind = "an int" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")
    if (value < low) if inclusive else (value <= low):
        raise ValueError(f"`{name}` must be {'>=' if inclusive else '>'} {low}, got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}, got {value!r}.")


def image_settings(
    *,
    model: str,
    seed: int = 0,
    num_images: int = 1,
    negative_prompt: str | None = None,
    ratio: str = "1:1",
    height: int | None = None,
    width: int | None = None,
    image_area: int | None = None,
    guidance_scale: float | None = None,
    do_sample: bool | None = None,
    top_k: int | None = 2048,
    top_p: float = 1.0,
    temperature: float = 1.0,
    dtype: str | None = None,
) -> dict[str, Any]:
    """The settings of a text-to-image job, checked (what shapes its images; batch size, device and process count
    do not). None means the pipeline's default (``guidance_scale`` / ``do_sample``: the model's recommendation)."""
    _check_number("seed", seed, low=0, inclusive=True, integer=True)
    _check_number("num_images", num_images, low=1, inclusive=True, integer=True)
    if (height is None) != (width is None):
        raise ValueError("Pass both `height` and `width` (pixels) or neither (then `ratio` and `image_area` decide).")
    for name, value in (("height", height), ("width", width), ("image_area", image_area)):
        if value is not None:
            _check_number(name, value, low=1, inclusive=True, integer=True)
    calculate_generate_size(ratio, image_area or 1 << 20, 1)  # the ratio's own checks
    if guidance_scale is not None:
        _check_number("guidance_scale", guidance_scale, low=0)
    if top_k is not None:
        _check_number("top_k", top_k, low=1, inclusive=True, integer=True)
    _check_number("top_p", top_p, low=0, high=1)
    _check_number("temperature", temperature, low=0)
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise TypeError(f"`negative_prompt` must be a string, got {negative_prompt!r}.")
    return dict(task="text-to-image", model=str(model), seed=seed, num_images=num_images,
                negative_prompt=negative_prompt, ratio=ratio, height=height, width=width, image_area=image_area,
                guidance_scale=guidance_scale, do_sample=do_sample, top_k=top_k, top_p=top_p,
                temperature=temperature, dtype=dtype)  # fmt: skip


@dataclass
class ImageJob:
    """A checked text-to-image job (no model loaded yet): build it with :meth:`plan`, run it with :meth:`run`."""

    rows: list[PromptRow]
    output: Path
    settings: dict[str, Any]
    state: JobState = field(init=False)
    SUFFIX = ".png"  # the outputs' file type

    def __post_init__(self) -> None:
        self.state = JobState(self.output / STATE_DIR)

    @staticmethod
    def make_settings(**settings: Any) -> dict[str, Any]:
        """The job's checked settings (:func:`image_settings`)."""
        return image_settings(**settings)

    def output_fields(self) -> dict[str, Any]:
        """Settings of the job's kind that each metadata line also records (none for images)."""
        return {}

    @classmethod
    def plan(cls, prompts: str | os.PathLike | list[str], output_dir: str | os.PathLike, *, column: str | None = None,
             split: str = "train", **settings: Any) -> "ImageJob":  # fmt: skip
        """Read and check the prompts and the settings (:func:`image_settings`), and refuse an output folder made
        with other settings, all before any model is loaded."""
        if isinstance(prompts, (list, tuple)):
            rows = [PromptRow(i, p) for i, p in enumerate(prompts)]
            if not rows or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError(f"`prompts` must be a non-empty list of non-empty strings, got {prompts!r}.")
        else:
            rows = read_prompts(prompts, column=column, split=split)
        output = Path(output_dir)
        if output.exists() and not output.is_dir():
            raise ValueError(f"The output {output} is a file; a generation job writes a folder (-o DIR).")
        job = cls(rows, output, cls.make_settings(**settings))
        job.state.check_settings(job.settings, write=False, place=str(output))
        return job

    def _size(self, row: PromptRow, pipe) -> tuple[int, int]:
        s = self.settings
        if row.height is not None:
            return row.height, row.width
        if row.ratio is None and s["height"] is not None:
            return s["height"], s["width"]
        sf = pipe.spatial_factor
        h, w = calculate_generate_size(row.ratio or s["ratio"], s["image_area"] or pipe.model.config.image_area, sf)
        return h * sf, w * sf

    def records(self, pipe) -> list[dict[str, Any]]:
        """The metadata line of every image of the job, in row order (the model's defaults resolved)."""
        from ..pipelines.pipeline_emu3 import BAAI_NEGATIVE_PROMPT

        s = self.settings
        recommended = pipe.recommended_sampling()
        guidance = recommended["guidance_scale"] if s["guidance_scale"] is None else s["guidance_scale"]
        do_sample = recommended["do_sample"] if s["do_sample"] is None else s["do_sample"]
        out = []
        sf = pipe.spatial_factor
        for row in self.rows:
            height, width = self._size(row, pipe)
            if height % sf or width % sf:  # refused before any image is made, not in the middle of the job
                raise ValueError(f"Prompt row {row.index} ({row.prompt!r}): height {height} and width {width} must be "
                                 f"multiples of the VQ's spatial factor {sf} (pixels).")  # fmt: skip
            negatives = (row.negative_prompt, s["negative_prompt"], BAAI_NEGATIVE_PROMPT)
            negative = next(n for n in negatives if n is not None)
            for k in range(row.num_images or s["num_images"]):
                seed = row.seed + k if row.seed is not None else image_seed(s["seed"], row.index, k)
                name = f"{row.index:06d}-{k}{self.SUFFIX}"
                out.append(dict(file_name=name, text=row.prompt, row=row.index, image_index=k,
                                seed=seed, height=height, width=width, guidance_scale=guidance,
                                negative_prompt=negative if guidance != 1.0 else None, do_sample=do_sample,
                                top_k=s["top_k"], top_p=s["top_p"], temperature=s["temperature"],
                                model=s["model"], dtype=s["dtype"], **self.output_fields()))  # fmt: skip
        return out

    def _pending(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pending = []
        for record in records:
            name = Path(record["file_name"]).stem
            done = self.state.record(name)
            if done is not None and done != record:
                changed = sorted(k for k in set(done) | set(record) if done.get(k) != record.get(k))
                raise ValueError(
                    f"{self.output / record['file_name']} was made for another row ({', '.join(changed)} differ: "
                    f"{done.get('text')!r} then, {record['text']!r} now). A job never mixes two prompt lists: "
                    "write to a new folder, or restore the prompts it was made from."
                )
            if done is None or not (self.output / record["file_name"]).is_file():
                pending.append(record)
        return pending

    def run(self, pipe, *, batch_size: int = 8, show_progress: bool = True, **decoding: Any) -> JobResult:
        """Make the missing images of this process's share, then (one process, after all finished) write
        ``metadata.jsonl``. ``decoding``: ``parallel_decoding`` / ``compile_decode`` / ``cache_implementation``
        (how the engine decodes, not what: they are not settings of the job)."""
        from tqdm.auto import tqdm

        _check_number("batch_size", batch_size, low=1, inclusive=True, integer=True)
        procs = process_state()
        self.state.check_settings(self.settings, write=procs.is_main_process, place=str(self.output))
        records = self.records(pipe)
        pending = self._pending(records)
        procs.wait_for_everyone()  # every process has listed the pending images before any is written
        pipe.set_progress_bar_config(disable=True)  # the job's bar counts images instead
        with procs.split_between_processes(pending) as mine:
            bar = tqdm(total=len(mine), unit="img", disable=not show_progress or not procs.is_main_process,
                       desc=f"images (process 0 of {procs.num_processes})" if procs.num_processes > 1 else "images")
            for start in range(0, len(mine), batch_size):
                batch = mine[start : start + batch_size]
                for size in dict.fromkeys((r["height"], r["width"]) for r in batch):  # one call per image size
                    group = [r for r in batch if (r["height"], r["width"]) == size]
                    self._generate(pipe, group, decoding)
                    bar.update(len(group))
            bar.close()
            made = len(mine)
        procs.wait_for_everyone()
        if procs.is_main_process:
            finished = sorted(self.state.records(), key=lambda r: (r["row"], r["image_index"]))
            write_jsonl(self.output / METADATA, finished)
        procs.wait_for_everyone()
        return JobResult(self.output, made=made, skipped=len(records) - len(pending), total=len(records))

    def _generate(self, pipe, group: list[dict[str, Any]], decoding: dict[str, Any]) -> None:
        first = group[0]
        negatives = [r["negative_prompt"] or "" for r in group] if first["guidance_scale"] != 1.0 else None
        outputs = self.call(pipe, [r["text"] for r in group], dict(
            negative_prompt=negatives, height=first["height"], width=first["width"],
            guidance_scale=first["guidance_scale"], do_sample=first["do_sample"], top_k=first["top_k"],
            top_p=first["top_p"], temperature=first["temperature"],
            generator=[torch.Generator("cpu").manual_seed(r["seed"]) for r in group], **decoding))  # fmt: skip
        for record, output in zip(group, outputs):
            self.save(output, self.output / record["file_name"])
            self.state.finish(Path(record["file_name"]).stem, record)

    def call(self, pipe, prompts: list[str], kwargs: dict[str, Any]) -> list:
        """One pipeline call for a group of outputs of one size; one output per prompt."""
        return pipe(prompts, **kwargs).images

    def save(self, image, path: Path) -> None:
        """Write one output atomically."""
        with atomic_file(path) as tmp:
            image.save(tmp, format="PNG")

def generate_images(
    pipe,
    prompts: str | os.PathLike | list[str],
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 8,
    show_progress: bool = True,
    model: str | None = None,
    column: str | None = None,
    split: str = "train",
    parallel_decoding: str | None = None,
    compile_decode: bool | None = None,
    **settings: Any,
) -> JobResult:
    """Generate an image dataset from many prompts with ``pipe`` (an :class:`~emu3_hf.pipelines.Emu3Pipeline`).

    Args:
        prompts: a list of strings, a ``.txt`` file (one prompt a line), a ``.jsonl`` file (``prompt`` plus optional
            ``negative_prompt``, ``seed``, ``ratio`` or ``height``/``width``, ``num_images`` per row), or a
            ``datasets`` folder / Hub dataset id whose ``column`` (default ``prompt``/``text``/``caption``) holds them.
        output_dir: the folder to fill: ``<row>-<k>.png`` images and ``metadata.jsonl`` (``datasets`` imagefolder).
            Run again with the same settings, it makes only what is missing; with other settings it is refused.
        batch_size: images per pipeline call (images of different sizes in a batch go in separate calls).
        model: the model's name recorded in the settings and metadata (default: the pipeline's ``name_or_path``).
        settings: :func:`image_settings` (``seed``, ``num_images``, ``negative_prompt``, ``ratio``, ``height``,
            ``width``, ``image_area``, ``guidance_scale``, ``do_sample``, ``top_k``, ``top_p``, ``temperature``).

    Under ``accelerate launch`` or ``torchrun`` each process makes its share of the missing images and one process
    writes ``metadata.jsonl`` after all finished; the files are the same as with one process.

    Example:
        ```python
        >>> generate_images(pipe, ["a red circle", "a blue square"], "shapes", num_images=2, seed=0).made
        4
        ```
    """
    model = model if model is not None else str(getattr(pipe, "name_or_path", None) or type(pipe).__name__)
    job = ImageJob.plan(prompts, output_dir, column=column, split=split, model=model, **settings)
    return job.run(pipe, batch_size=batch_size, show_progress=show_progress, parallel_decoding=parallel_decoding,
                   compile_decode=compile_decode)  # fmt: skip


__all__ = ["ImageJob", "JobResult", "METADATA", "generate_images", "image_settings"]
