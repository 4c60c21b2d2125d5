"""Captioning jobs: a folder of images (or a ``datasets`` dataset) in, a JSON Lines file out, one line per image with
``file_name`` and ``text`` (the answer), the question and the settings; sharded over processes and resumable like
the generation jobs (state in the hidden folder ``.<FILE>.emu3-job`` next to the output file).

Written next to the images as ``metadata.jsonl``, the output is what ``emu3 train`` and ``datasets``' imagefolder
read.

Example:
    ```python
    >>> from emu3_hf.jobs import caption_images
    >>> caption_images(chat_pipe, "shapes", "shapes/captions.jsonl", question="Describe the image.")
    ```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .generate import JobResult
from .rows import ImageRow, read_images
from .state import STATE_DIR, JobState, process_state, write_jsonl

DEFAULT_QUESTION = "Describe the image."


def caption_settings(*, model: str, question: str = DEFAULT_QUESTION, max_new_tokens: int = 64,
                     dtype: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The settings of a captioning job, checked (greedy decoding: a caption depends on the image only)."""
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"`question` must be a non-empty string, got {question!r}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive int, got {max_new_tokens!r}.")
    return dict(task="caption", model=str(model), question=question, max_new_tokens=max_new_tokens, dtype=dtype)


@dataclass
class CaptionJob:
    """A checked captioning job (no model loaded yet): :meth:`plan`, then :meth:`run`."""

    rows: list[ImageRow]
    output: Path
    settings: dict[str, Any]
    state: JobState = field(init=False)

    def __post_init__(self) -> None:
        self.state = JobState(self.output.parent / f".{self.output.name}{STATE_DIR}")

    @classmethod
    def plan(cls, images: str | os.PathLike, output_file: str | os.PathLike, *, column: str | None = None,
             split: str = "train", **settings: Any) -> "CaptionJob":  # fmt: skip
        """List and check the images and the settings; refuse an output made with other settings."""
        output = Path(output_file)
        if output.suffix.lower() != ".jsonl":
            raise ValueError(f"The captions go to a JSON Lines file: -o must end in .jsonl, got {output.name!r}.")
        if output.is_dir():
            raise ValueError(f"The output {output} is a folder; pass a .jsonl file path.")
        job = cls(read_images(images, column=column, split=split), output, caption_settings(**settings))
        job.state.check_settings(job.settings, write=False, place=str(output))
        return job

    def _record(self, row: ImageRow, text: str) -> dict[str, Any]:
        s = self.settings
        return dict(file_name=row.file_name, text=text, row=row.index, question=s["question"],
                    max_new_tokens=s["max_new_tokens"], model=s["model"], dtype=s["dtype"])  # fmt: skip

    def run(self, pipe, *, batch_size: int = 8, show_progress: bool = True) -> JobResult:
        """Caption this process's share of the images not captioned yet; then one process writes the file."""
        from tqdm.auto import tqdm

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        procs = process_state()
        self.state.check_settings(self.settings, write=procs.is_main_process, place=str(self.output))
        pending = []
        for row in self.rows:
            done = self.state.record(f"{row.index:06d}")
            if done is not None and done["file_name"] != row.file_name:
                raise ValueError(f"{self.output} row {row.index} was {done['file_name']!r}, now {row.file_name!r}: "
                                 "the image source changed. Write to a new file.")  # fmt: skip
            if done is None:
                pending.append(row)
        procs.wait_for_everyone()  # every process has listed the pending images before any record is written
        pipe.set_progress_bar_config(disable=True)
        with procs.split_between_processes(pending) as mine:
            quiet = not show_progress or not procs.is_main_process
            bar = tqdm(total=len(mine), unit="img", desc="captions", disable=quiet)
            for start in range(0, len(mine), batch_size):
                batch = mine[start : start + batch_size]
                question = self.settings["question"]
                answers = pipe([question] * len(batch), images=[row.load() for row in batch],
                               max_new_tokens=self.settings["max_new_tokens"]).text  # fmt: skip
                for row, text in zip(batch, answers):
                    self.state.finish(f"{row.index:06d}", self._record(row, text))
                bar.update(len(batch))
            bar.close()
            made = len(mine)
        procs.wait_for_everyone()
        if procs.is_main_process:
            write_jsonl(self.output, sorted(self.state.records(), key=lambda r: r["row"]))
        procs.wait_for_everyone()
        return JobResult(self.output, made=made, skipped=len(self.rows) - len(pending), total=len(self.rows))


def caption_images(
    pipe,
    images: str | os.PathLike,
    output_file: str | os.PathLike,
    *,
    batch_size: int = 8,
    show_progress: bool = True,
    model: str | None = None,
    column: str | None = None,
    split: str = "train",
    **settings: Any,
) -> JobResult:
    """Caption every image of ``images`` (a folder, searched recursively, or a ``datasets`` folder / Hub dataset id
    with an image ``column``) with ``pipe`` (an :class:`~emu3_hf.pipelines.Emu3ChatPipeline`) into
    ``output_file`` (.jsonl). ``settings``: ``question`` (default "Describe the image."), ``max_new_tokens``.

    Example:
        ```python
        >>> caption_images(chat, "photos", "captions.jsonl", batch_size=4).total
        12
        ```
    """
    model = model if model is not None else str(getattr(pipe, "name_or_path", None) or type(pipe).__name__)
    job = CaptionJob.plan(images, output_file, column=column, split=split, model=model, **settings)
    return job.run(pipe, batch_size=batch_size, show_progress=show_progress)


__all__ = ["CaptionJob", "DEFAULT_QUESTION", "caption_images", "caption_settings"]
