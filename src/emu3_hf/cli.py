"""The work behind the ``emu3`` command: load a pipeline, run it, write the outputs atomically.

The argument parser lives in :mod:`emu3_cli` (standard library only, so ``emu3 --help`` answers at once); this module
is imported once a command has been parsed.

Example:
    ```bash
    emu3 generate "a red circle on a white background" --output circle.png --seed 0
    emu3 generate "a cat" --model path/to/pipeline-folder --ratio 16:9 --num-images 2 --output cat.png
    emu3 generate "a cat" --lm BAAI/Emu3-Gen --vq BAAI/Emu3-VisionTokenizer --dtype bfloat16 --device cuda \\
        --output cat.png
    emu3 caption cat.png
    ```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .cli_checks import (
    VIDEO_OUTPUT_SUFFIXES,
    check_generation_args,
    check_model_args,
    check_output_file,
    check_seed,
    is_user_error,
)
from .tiny_world import EMU3_TINY
from .utils.atomic import atomic_file

# The embedded model, trained here on the tiny shapes world (`emu3 tiny-world train`; docs/TINY_WORLD.md).
DEFAULT_MODEL = EMU3_TINY


def _load_pipeline(args: argparse.Namespace, pipeline_class, device: torch.device):
    """The pipeline the options name, on ``device`` (checked by :func:`~emu3_hf.cli_checks.check_model_args`)."""
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.lm is not None or args.vq is not None:
        pipe = pipeline_class.from_baai(args.lm, args.vq, tokenizer_path=args.tokenizer, torch_dtype=dtype)
    else:
        folder = args.model or DEFAULT_MODEL
        if Path(folder).exists() and not (Path(folder) / "model_index.json").is_file():
            raise ValueError(
                f"{folder} is not a pipeline folder (no model_index.json). Pass --model PATH (a folder written by "
                "Emu3Pipeline.save_pretrained, or a Hub repo id) or --lm/--vq[/--tokenizer] with BAAI's folders."
            )
        pipe = pipeline_class.from_pretrained(folder, **({"torch_dtype": dtype} if dtype is not None else {}))
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=args.quiet, desc="rows")
    return pipe


def _generator(args: argparse.Namespace) -> torch.Generator | None:
    return torch.Generator("cpu").manual_seed(args.seed) if args.seed is not None else None


def _sampling(args: argparse.Namespace) -> dict:
    return dict(negative_prompt=args.negative_prompt, guidance_scale=args.guidance_scale, do_sample=args.do_sample,
                top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, generator=_generator(args),
                parallel_decoding=args.parallel_decoding, parallel_window=args.parallel_window,
                compile_decode=args.compile_decode)


def _size(args: argparse.Namespace) -> dict:
    return dict(height=args.height, width=args.width, ratio=args.ratio, image_area=args.image_area)


def _output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix or '.png'}") for i in range(count)]


def _save_image(image, path: Path) -> None:
    from PIL import Image

    with atomic_file(path) as tmp:  # an interrupted run never leaves a truncated image
        image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))


def _save_video(frames, path: Path, fps: int) -> None:
    from .utils.video_export import export_to_gif, export_to_mp4

    (export_to_mp4 if path.suffix.lower() == ".mp4" else export_to_gif)(frames, path, fps=fps)


def _generate(args: argparse.Namespace) -> int:
    from .pipelines import Emu3Pipeline

    device = check_model_args(args)
    if args.job_source is not None:  # many prompts: emu3_hf.jobs
        from .jobs.command import generate_command

        return generate_command(args, lambda: _load_pipeline(args, Emu3Pipeline, device))
    check_generation_args(args, device)
    for path in _output_paths(args.output, args.num_images):
        check_output_file(path)
    pipe = _load_pipeline(args, Emu3Pipeline, device)
    out = pipe(args.prompt, num_images_per_prompt=args.num_images, **_size(args), **_sampling(args))
    for image, path in zip(out.images, _output_paths(args.output, len(out.images))):
        _save_image(image, path)
        print(path)
    return 0


def _caption(args: argparse.Namespace) -> int:
    from .pipelines import Emu3ChatPipeline
    from .utils.media import load_image

    device = check_model_args(args)
    check_seed(args.seed)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    if not args.question.strip():
        raise ValueError("--question is empty: ask something about the image (default 'Describe the image.').")
    if args.job_source is not None:  # many images: emu3_hf.jobs
        from .jobs.command import caption_command

        return caption_command(args, lambda: _load_pipeline(args, Emu3ChatPipeline, device))
    image = load_image(args.image)  # decoded now: a bad file is named before the model loads
    pipe = _load_pipeline(args, Emu3ChatPipeline, device)
    print(pipe(args.question, images=image, max_new_tokens=args.max_new_tokens).text[0])
    return 0


def _video(args: argparse.Namespace) -> int:
    from .pipelines import Emu3VideoPipeline

    device = check_model_args(args)
    if args.job_source is not None:  # many prompts: emu3_hf.jobs
        from .jobs.command import video_command

        return video_command(args, lambda: _load_pipeline(args, Emu3VideoPipeline, device))
    check_generation_args(args, device)
    check_output_file(args.output, VIDEO_OUTPUT_SUFFIXES)
    pipe = _load_pipeline(args, Emu3VideoPipeline, device)
    out = pipe(args.prompt, num_frames=args.num_frames, **_size(args), **_sampling(args))
    _save_video(out.frames[0], args.output, args.fps)
    print(args.output)
    return 0


def _continue(args: argparse.Namespace) -> int:
    from .pipelines import Emu3VideoPipeline
    from .utils.video_export import load_video

    device = check_model_args(args)
    check_generation_args(args, device, empty_prompt_ok=True)
    check_output_file(args.output, VIDEO_OUTPUT_SUFFIXES)
    frames = load_video(args.video)  # decoded now: a bad file is named before the model loads
    pipe = _load_pipeline(args, Emu3VideoPipeline, device)
    out = pipe(args.prompt or "", video=frames, num_frames=args.num_frames, **_sampling(args))
    _save_video(out.frames[0], args.output, args.fps)
    print(args.output)
    return 0


def _commands() -> dict:
    from . import cli_convert, cli_demo, cli_tiny_world, cli_train

    return {"generate": _generate, "caption": _caption, "video": _video, "continue": _continue, **cli_convert.COMMANDS,
            **cli_train.COMMANDS, **cli_tiny_world.COMMANDS, **cli_demo.COMMANDS}


def run(args: argparse.Namespace) -> int:
    """Run a parsed command. Every error the user can cause (:func:`~emu3_hf.cli_checks.is_user_error`: bad values,
    unreadable files, unknown repos, whichever library raised it) is reported as ``emu3: message`` with exit status
    2 and no traceback; any other error is a bug and propagates with its traceback."""
    try:
        return _commands()[args.command](args)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"emu3: {str(err) or type(err).__name__}", file=sys.stderr)
        return 2
