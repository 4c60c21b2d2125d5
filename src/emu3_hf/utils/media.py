"""Reading the user's image and clip files, every failure named by its file.

Pillow and PyAV / FFmpeg report a bad file as "image file is truncated" or "Invalid data found when processing
input" without saying which file; a training run over thousands of files, or a CLI call, needs the name. FFmpeg
also reads a text file as a video (it renders the text as frames), so a clip is first recognised by its suffix.

Example:
    ```python
    >>> from emu3_hf.utils.media import check_media_file, load_image
    >>> check_media_file("notes.txt")
    Traceback (most recent call last):
    ValueError: notes.txt is neither an image Pillow reads nor a clip (.gif, .mp4, .webm, .mov, .avi, .mkv) ...
    >>> image = load_image("cat.png")  # RGB, decoded now
    ```
"""

from __future__ import annotations

import os
from pathlib import Path

import PIL.Image

VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".mov", ".avi", ".mkv")
"""Clip files (GIFs through Pillow, the rest through PyAV); in training data a ``.gif`` is a clip, not an image."""


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a clip by its suffix (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """The image at ``path`` as RGB, decoded now; a missing or unreadable file raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No image file at {path}.")
    try:
        with PIL.Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        raise ValueError(f"{path} is not a readable image ({err}).") from None


def check_media_file(path: str | os.PathLike) -> str:
    """Check that ``path`` is a readable image or clip without decoding all of it; returns "image" or "video".

    An image is opened and verified by Pillow (for PNG that checks every chunk, so a truncated file is found); a clip
    must have a clip suffix, and its container is opened (PyAV) or its first frame read (GIF).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    if is_video_file(path):
        if path.suffix.lower() != ".gif":
            _probe_container(path)
            return "video"
    try:
        with PIL.Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        kind = "clip" if is_video_file(path) else "image Pillow reads"
        raise ValueError(f"{path} is not a readable {kind} ({err}); clips end in {', '.join(VIDEO_SUFFIXES)}.") from None
    return "video" if is_video_file(path) else "image"


def _probe_container(path: Path) -> None:
    try:
        import av
    except ImportError as err:
        raise ImportError(f"Reading {path.suffix} needs PyAV: pip install 'emu3-hf[video]' (or use a GIF).") from err
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} holds no video stream.")
    except av.FFmpegError as err:
        raise ValueError(f"{path} is not a readable video ({err}).") from None


__all__ = ["VIDEO_SUFFIXES", "check_media_file", "is_video_file", "load_image"]
