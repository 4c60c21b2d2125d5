"""Text-to-video jobs: the generation job's rules (seeds from (seed, row, index), resume, sharding, refusal of other
settings) with :class:`~emu3_hf.pipelines.Emu3VideoPipeline`; each clip is a GIF (``<row>-<k>.gif``) and
``metadata.jsonl`` records ``num_frames`` and ``fps`` as well.

Example:
    ```python
    >>> from emu3_hf.jobs import generate_videos
    >>> generate_videos(video_pipe, "prompts.txt", "clips", num_frames=8, fps=8).total
    3
    ```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..utils.video_export import export_to_gif
from .generate import ImageJob, JobResult, image_settings


def video_settings(*, num_frames: int | None = None, fps: int = 8, **settings: Any) -> dict[str, Any]:
    """The settings of a text-to-video job: :func:`~emu3_hf.jobs.image_settings` plus ``num_frames`` (None: the
    pipeline's default) and ``fps`` of the written GIFs."""
    for name, value in (("num_frames", num_frames), ("fps", fps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return {**image_settings(**settings), "task": "text-to-video", "num_frames": num_frames, "fps": fps}


class VideoJob(ImageJob):
    """A checked text-to-video job: :meth:`plan`, then :meth:`run` (see :class:`~emu3_hf.jobs.ImageJob`)."""

    SUFFIX = ".gif"

    @staticmethod
    def make_settings(**settings: Any) -> dict[str, Any]:
        return video_settings(**settings)

    def output_fields(self) -> dict[str, Any]:
        return {"num_frames": self.settings["num_frames"], "fps": self.settings["fps"]}

    def call(self, pipe, prompts: list[str], kwargs: dict[str, Any]) -> list:
        return pipe(prompts, num_frames=self.settings["num_frames"], **kwargs).frames

    def save(self, frames, path: Path) -> None:
        export_to_gif(frames, path, fps=self.settings["fps"])  # written next to the path, then renamed


def generate_videos(pipe, prompts: str | os.PathLike | list[str], output_dir: str | os.PathLike, *,
                    batch_size: int = 4, show_progress: bool = True, model: str | None = None,
                    column: str | None = None, split: str = "train", **settings: Any) -> JobResult:  # fmt: skip
    """Generate a clip per prompt (``num_images`` per prompt) with ``pipe`` (an
    :class:`~emu3_hf.pipelines.Emu3VideoPipeline`) into ``output_dir``: ``<row>-<k>.gif`` + ``metadata.jsonl``.
    Arguments as :func:`~emu3_hf.jobs.generate_images`, plus ``num_frames`` and ``fps``."""
    model = model if model is not None else str(getattr(pipe, "name_or_path", None) or type(pipe).__name__)
    job = VideoJob.plan(prompts, output_dir, column=column, split=split, model=model, **settings)
    return job.run(pipe, batch_size=batch_size, show_progress=show_progress)


__all__ = ["VideoJob", "generate_videos", "video_settings"]
