"""What the ``emu3`` command checks before it loads anything, and which errors it reports as the user's.

Every value a command takes is checked here through the checks the Python API runs itself (the pipelines'
``check_inputs``, :class:`~emu3_hf.generation.sampling.SamplingConfig`, the engine's
:func:`~emu3_hf.generation.engine.resolve_decoding`, the processor's ``calculate_generate_size``), then again by the
pipeline once it has loaded (the checks that need the model, such as multiples of the VQ's spatial factor). Input
files are read first (:mod:`emu3_hf.utils.media`) and output paths tested, so a command that would fail on them
fails before a model loads and before anything is written.

Error rule (:func:`is_user_error`): an error the user can cause -- ``ValueError``, ``TypeError``, ``OSError`` and
every error type of the libraries that read the user's files and repos (tokenizers, safetensors, Pillow, PyAV /
FFmpeg, huggingface_hub, datasets) -- ends as ``emu3: <message>`` with exit status 2 and no traceback; anything else
(an ``AssertionError``, ``AttributeError``, ... of our own) is a bug and keeps its traceback.

Example:
    ```python
    >>> from emu3_hf.cli_checks import check_device
    >>> check_device("cpu")
    device(type='cpu')
    >>> check_device("cuda")  # on a machine without CUDA
    Traceback (most recent call last):
    ValueError: --device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); ...
    ```
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from .hub.download import check_model_source

# Libraries that read the user's files, folders and repos: their errors are about the input, not about our code.
USER_INPUT_LIBRARIES = ("tokenizers", "safetensors", "PIL", "av", "imageio", "imageio_ffmpeg", "huggingface_hub",
                        "requests", "httpx", "httpx2", "urllib3", "datasets", "pyarrow")  # fmt: skip
VIDEO_OUTPUT_SUFFIXES = (".gif", ".mp4")
MAX_SEED = 2**63 - 1


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is something the user caused (bad value, unreadable file, unknown repo) rather than a bug.

    ``ValueError`` / ``TypeError`` / ``OSError`` (our own refusals, missing files, permissions, Hub errors), any
    error type defined by a library of :data:`USER_INPUT_LIBRARIES`, and the bare ``Exception`` that Rust bindings
    such as tokenizers raise for an unreadable file (no code of ours raises a bare ``Exception``).
    """
    if isinstance(err, (ValueError, TypeError, OSError)):
        return True
    if type(err) is Exception:
        return True
    return any(type(err).__module__.split(".")[0] == lib for lib in USER_INPUT_LIBRARIES)


def check_device(device: str | None) -> torch.device:
    """The torch device ``--device`` names, refused with the fix when this machine does not have it; None picks
    CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} names no torch device: use cpu, cuda, cuda:1, mps, ...") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                             "use --device cpu, or install a CUDA build of torch on a machine with a GPU.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1}).")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu.")
    elif parsed.type not in ("cpu", "cuda", "mps") and not _accelerator_available(parsed):
        raise ValueError(f"--device {device}: torch has no {parsed.type} device here; use --device cpu.")
    return parsed


def _accelerator_available(device: torch.device) -> bool:
    module = getattr(torch, device.type, None)
    return bool(getattr(module, "is_available", lambda: False)())


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--seed must be an int in [0, 2**63 - 1], got {seed}.")


def check_output_file(path: Path, suffixes: tuple[str, ...] | None = None) -> None:
    """An output file can be written: a known suffix (``suffixes``, else an image format Pillow can save), an
    existing parent folder (the CLI creates none: a typo in the path would silently make folders), no folder in
    its place."""
    from PIL import Image

    suffix = path.suffix.lower()
    if suffixes is None:
        savable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
        if suffix not in savable:
            raise ValueError(f"--output {path}: {suffix or 'no extension'} is not an image format Pillow writes; "
                             "end the name in .png, .jpg, .webp, .bmp, ...")  # fmt: skip
    elif suffix not in suffixes:
        raise ValueError(f"--output must end in {' or '.join(suffixes)}, got {path.name!r}.")
    if suffix == ".mp4":
        import importlib.util

        if importlib.util.find_spec("av") is None:
            raise ValueError(f"--output {path}: writing .mp4 needs PyAV (pip install 'emu3-hf[video]'); or use .gif.")
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder; give a file name inside it.")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"--output {path}: the folder {parent} does not exist; create it first (mkdir -p {parent}).")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--output {path}: the folder {parent} is not writable.")


class _Unloaded:
    """Stands in for a pipeline whose components are not loaded yet, so that its ``check_inputs`` runs on the
    arguments alone: spatial factor 1 (any positive size passes here; multiples of the VQ's real factor are checked
    by the pipeline once loaded)."""

    spatial_factor = 1

    def __init__(self, callback_tensor_inputs: list[str]):
        self._callback_tensor_inputs = callback_tensor_inputs


def check_generation_args(args: argparse.Namespace, device: torch.device, empty_prompt_ok: bool = False) -> None:
    """The prompt, size and sampling options of ``generate`` / ``video`` / ``continue``, through the pipelines' own
    checks (before any component loads)."""
    from .generation.engine import resolve_decoding
    from .generation.sampling import SamplingConfig
    from .pipelines import Emu3Pipeline
    from .processing.processing_emu3 import calculate_generate_size

    check_seed(args.seed)
    # temperature only matters when sampling; with the model's own recommendation unknown yet, assume sampling
    SamplingConfig(do_sample=args.do_sample is not False, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p)  # fmt: skip
    resolve_decoding(device, None, args.compile_decode, args.parallel_decoding)
    height, width = getattr(args, "height", None), getattr(args, "width", None)
    count = getattr(args, "num_images", 1)
    guidance = 1.0 if args.guidance_scale is None else args.guidance_scale
    unloaded = _Unloaded(Emu3Pipeline._callback_tensor_inputs)
    Emu3Pipeline.check_inputs(unloaded, args.prompt or "", args.negative_prompt, height, width,
                              getattr(args, "ratio", "1:1"), guidance, count, "pil", [], None, None,
                              empty_prompt_ok=empty_prompt_ok)  # fmt: skip
    if height is None and getattr(args, "ratio", None) is not None:
        area = getattr(args, "image_area", None)
        calculate_generate_size(args.ratio, 10**6 if area is None else area, 1)
    for name in ("num_frames", "fps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}.")


def check_model_args(args: argparse.Namespace) -> torch.device:
    """Where the model comes from and the device it runs on; returns the device."""
    if (args.lm is None) != (args.vq is None):
        raise ValueError("pass both --lm and --vq (BAAI's separate folders), or a pipeline folder --model.")
    for option in ("model", "lm", "vq", "tokenizer"):
        check_model_source(f"--{option}", getattr(args, option))  # the Python API's own check (TrainConfig too)
    return check_device(args.device)


__all__ = ["USER_INPUT_LIBRARIES", "VIDEO_OUTPUT_SUFFIXES", "check_device", "check_generation_args", "check_model_args",
           "check_output_file", "check_seed", "is_user_error"]  # fmt: skip
