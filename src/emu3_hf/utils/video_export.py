"""Write generated frames to GIF (Pillow) or MP4 (PyAV's H.264 encoder, the ``video`` extra).

Frames may be PIL images, uint8 arrays ``(H, W, 3)``, a uint8 array ``(T, H, W, 3)`` or a float tensor/array
``(T, 3, H, W)`` / ``(T, H, W, 3)`` in [0, 1]. Files are written to a temporary name and moved into place, so a
failure never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageSequence

from .atomic import atomic_file


def frames_to_uint8(frames: Any) -> np.ndarray:
    """Normalise frames to one uint8 array ``(T, H, W, 3)``."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("No frames to export: the video is empty.")
        arrays = [np.asarray(f.convert("RGB")) if isinstance(f, PIL.Image.Image) else np.asarray(f) for f in frames]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"All frames must have one size, got {sorted({a.shape for a in arrays})}.")
        arr = np.stack(arrays)
    else:
        arr = frames.detach().cpu().float().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if arr.ndim != 4:
        raise ValueError(f"Frames must form a (T, H, W, 3) or (T, 3, H, W) stack, got shape {arr.shape}.")
    if arr.shape[-1] != 3 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] != 3:
        raise ValueError(f"Frames must have 3 colour channels, got shape {arr.shape}.")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return arr


def _atomic_write(path: str | os.PathLike, write) -> Path:
    with atomic_file(path) as tmp:
        write(tmp)
    return Path(path)


def export_to_gif(frames: Sequence[Any] | Any, path: str | os.PathLike, fps: float = 8.0, loop: int = 0) -> Path:
    """Save frames as an animated GIF at ``fps`` frames per second.

    Example:
        ```python
        >>> export_to_gif(video.frames[0], "clip.gif", fps=8)
        ```
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}.")
    images = [PIL.Image.fromarray(f) for f in frames_to_uint8(frames)]
    duration = max(int(round(1000.0 / fps)), 10)

    def write(tmp: str) -> None:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=loop)

    return _atomic_write(path, write)


def export_to_mp4(frames: Sequence[Any] | Any, path: str | os.PathLike, fps: int = 8, crf: int = 18) -> Path:
    """Encode frames as H.264 MP4 with PyAV (``pip install emu3-hf[video]``).

    Odd frame sizes are padded by one edge pixel (yuv420p needs even sides).
    """
    try:
        import av
    except ImportError as err:
        raise ImportError("MP4 export needs PyAV: pip install 'emu3-hf[video]' (or pip install av).") from err
    if fps <= 0 or int(fps) != fps:
        raise ValueError(f"fps must be a positive integer for MP4, got {fps}.")
    arr = frames_to_uint8(frames)
    pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    def write(tmp: str) -> None:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height = arr.shape[2], arr.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in arr:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())

    return _atomic_write(path, write)


def load_video(path: str | os.PathLike) -> list[PIL.Image.Image]:
    """Read the frames of a GIF (Pillow) or of any video PyAV can open (MP4, ...) as RGB PIL images.

    Example:
        ```python
        >>> frames = load_video("clip.gif")
        >>> more = video_pipe("a small red circle moving right", video=frames, num_frames=4)
        ```
    """
    from .media import VIDEO_SUFFIXES, is_video_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No video file at {path}.")
    if not is_video_file(path):  # FFmpeg would read a text file as frames of rendered text
        raise ValueError(f"{path} is not a video file: its suffix is none of {', '.join(VIDEO_SUFFIXES)}.")
    if path.suffix.lower() == ".gif":
        try:
            with PIL.Image.open(path) as gif:
                frames = [frame.convert("RGB") for frame in PIL.ImageSequence.Iterator(gif)]
        except (OSError, SyntaxError) as err:  # Pillow names no file: "image file is truncated", ...
            raise ValueError(f"{path} is not a readable GIF ({err}).") from None
    else:
        try:
            import av
        except ImportError as err:
            raise ImportError(f"Reading {path.suffix} needs PyAV: pip install 'emu3-hf[video]' (or use a GIF).") from err
        try:
            with av.open(str(path)) as container:
                frames = [frame.to_image().convert("RGB") for frame in container.decode(video=0)]
        except av.FFmpegError as err:
            raise ValueError(f"{path} is not a readable video ({err}).") from None
    if not frames:
        raise ValueError(f"{path} holds no frames.")
    return frames


__all__ = ["export_to_gif", "export_to_mp4", "frames_to_uint8", "load_video"]
