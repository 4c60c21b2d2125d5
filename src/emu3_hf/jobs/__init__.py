"""Batch jobs: many prompts (or images) in, a ``datasets``-readable folder (or JSON Lines file) out; sharded over the
processes of ``accelerate launch`` / ``torchrun``; resumable; every image reproducible from (seed, row, index).

Example:
    ```python
    >>> from emu3_hf.jobs import caption_images, generate_images
    >>> generate_images(pipe, "prompts.txt", "shapes", seed=0, batch_size=8)
    >>> caption_images(chat_pipe, "shapes", "captions.jsonl")
    ```
"""

from .caption import caption_images, caption_settings, CaptionJob
from .generate import ImageJob, JobResult, METADATA, generate_images, image_settings
from .hub import push_job_to_hub
from .rows import ImageRow, PromptRow, read_images, read_prompts
from .state import image_seed
from .video import VideoJob, generate_videos, video_settings

__all__ = ["CaptionJob", "ImageJob", "ImageRow", "JobResult", "METADATA", "PromptRow", "VideoJob", "caption_images",
           "caption_settings", "generate_images", "generate_videos", "image_seed", "image_settings", "push_job_to_hub",
           "read_images", "read_prompts", "video_settings"]
