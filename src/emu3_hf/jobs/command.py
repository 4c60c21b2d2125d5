"""``emu3 generate --prompts`` and ``emu3 caption --images``: plan the job from the parsed arguments (prompts, images,
settings and the output all checked), then load the pipeline with the caller's loader and run the job.

Example:
    ```bash
    emu3 generate --prompts prompts.jsonl -o shapes --batch-size 8 --seed 0
    accelerate launch --num_processes 2 -m emu3_cli generate --prompts prompts.txt -o shapes
    emu3 caption --images shapes -o captions.jsonl
    ```
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from .caption import CaptionJob
from .generate import ImageJob
from .hub import push_job_to_hub
from .state import process_state
from .video import VideoJob


def model_name(args: argparse.Namespace) -> str:
    """How a job records the model of a command line (the settings a rerun must repeat)."""
    if args.lm is not None or args.vq is not None:
        return f"lm={args.lm} vq={args.vq}" + (f" tokenizer={args.tokenizer}" if args.tokenizer else "")
    return args.model or "emu3-tiny (embedded)"


def _device(args: argparse.Namespace) -> None:
    # Under accelerate launch / torchrun each process takes its own GPU (accelerate's choice), else the CLI's default.
    if args.device is None:
        device = process_state().device
        args.device = str(device) if device.type != "cpu" else None


def generate_command(args: argparse.Namespace, load_pipeline: Callable[[], Any]) -> int:
    """Run ``emu3 generate --prompts SOURCE -o DIR [...]``; ``load_pipeline()`` loads the pipeline once checked."""
    job = ImageJob.plan(args.job_source, args.output, column=args.column, split=args.split, model=model_name(args),
                        seed=0 if args.seed is None else args.seed, num_images=args.num_images,
                        negative_prompt=args.negative_prompt, ratio=args.ratio, height=args.height, width=args.width,
                        image_area=args.image_area, guidance_scale=args.guidance_scale, do_sample=args.do_sample,
                        top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, dtype=args.dtype)  # fmt: skip
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.push_to_hub is not None:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(args.push_to_hub)
    _device(args)
    result = job.run(load_pipeline(), batch_size=args.batch_size, show_progress=not args.quiet,
                     parallel_decoding=args.parallel_decoding, compile_decode=args.compile_decode)  # fmt: skip
    if process_state().is_main_process:
        print(f"{result.output}: {result.total} images ({result.skipped} already there)")
        if args.push_to_hub is not None:
            print(push_job_to_hub(result.output, args.push_to_hub).commit_url)
    return 0


def video_command(args: argparse.Namespace, load_pipeline: Callable[[], Any]) -> int:
    """Run ``emu3 video --prompts SOURCE -o DIR [...]`` (one clip per prompt, ``<row>-0.gif``)."""
    job = VideoJob.plan(args.job_source, args.output, column=args.column, split=args.split, model=model_name(args),
                        seed=0 if args.seed is None else args.seed, num_frames=args.num_frames, fps=args.fps,
                        negative_prompt=args.negative_prompt, ratio=args.ratio, height=args.height, width=args.width,
                        image_area=args.image_area, guidance_scale=args.guidance_scale, do_sample=args.do_sample,
                        top_k=args.top_k, top_p=args.top_p, temperature=args.temperature, dtype=args.dtype)  # fmt: skip
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    _device(args)
    result = job.run(load_pipeline(), batch_size=args.batch_size, show_progress=not args.quiet,
                     parallel_decoding=args.parallel_decoding, compile_decode=args.compile_decode)  # fmt: skip
    if process_state().is_main_process:
        print(f"{result.output}: {result.total} videos ({result.skipped} already there)")
    return 0


def caption_command(args: argparse.Namespace, load_pipeline: Callable[[], Any]) -> int:
    """Run ``emu3 caption --images SOURCE -o FILE.jsonl [...]``."""
    job = CaptionJob.plan(args.job_source, args.output, column=args.column, split=args.split, model=model_name(args),
                          question=args.question, max_new_tokens=args.max_new_tokens, dtype=args.dtype)  # fmt: skip
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    _device(args)
    result = job.run(load_pipeline(), batch_size=args.batch_size, show_progress=not args.quiet)
    if process_state().is_main_process:
        print(f"{result.output}: {result.total} captions ({result.skipped} already there)")
    return 0


__all__ = ["caption_command", "generate_command", "model_name", "video_command"]
