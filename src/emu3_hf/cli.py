"""The ``emu3`` command line.

Example:
    ```bash
    emu3 generate "a red circle on a white background" --output circle.png --seed 0
    emu3 generate "a cat" --model path/to/pipeline-folder --ratio 16:9 --num-images 2 --output cat.png
    emu3 generate "a cat" --lm BAAI/Emu3-Gen --vq BAAI/Emu3-VisionTokenizer --dtype bfloat16 --device cuda \\
        --output cat.png
    ```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

# BAAI's tiny random-weight test checkpoints as a pipeline folder (scripts/build_random_tiny_pipeline.py), until
# the project's own trained tiny model replaces them.
DEFAULT_MODEL = Path(__file__).parent / "assets" / "baai-tiny-random"
_DTYPES = ("float32", "bfloat16", "float16")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emu3", description="BAAI's Emu3 with Hugging Face tooling.")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="text-to-image generation")
    gen.add_argument("prompt", help="the text prompt")
    gen.add_argument("--output", "-o", required=True, type=Path,
                     help="image file to write (with --num-images N > 1: NAME-0.png ... NAME-(N-1).png)")
    where = gen.add_argument_group("model (a pipeline folder, or BAAI's separate folders)")
    where.add_argument("--model", type=Path, default=None,
                       help=f"pipeline folder written by Emu3Pipeline.save_pretrained (default: {DEFAULT_MODEL})")
    where.add_argument("--lm", default=None, help="BAAI LM folder or Hub id (with --vq; overrides --model)")
    where.add_argument("--vq", default=None, help="BAAI VQ folder or Hub id")
    where.add_argument("--tokenizer", default=None, help="tokenizer folder when the LM folder has none")
    gen.add_argument("--negative-prompt", default=None, help="guidance prompt (default: BAAI's negative prompt)")
    gen.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance (1 disables)")
    gen.add_argument("--ratio", default="1:1", help="aspect ratio w:h (ignored with --height/--width)")
    gen.add_argument("--image-area", type=int, default=None, help="pixel area (default: the model config's)")
    gen.add_argument("--height", type=int, default=None, help="height in pixels (multiple of the VQ factor)")
    gen.add_argument("--width", type=int, default=None, help="width in pixels (multiple of the VQ factor)")
    gen.add_argument("--num-images", type=int, default=1, help="images to generate")
    gen.add_argument("--seed", type=int, default=None, help="random seed (reproducible sampling)")
    gen.add_argument("--top-k", type=int, default=2048)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--greedy", action="store_true", help="pick the most likely token instead of sampling")
    gen.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    gen.add_argument("--dtype", choices=_DTYPES, default=None, help="LM dtype (default: as saved)")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=_generate)
    from .cli_convert import add_convert_commands

    add_convert_commands(commands)  # convert, convert-lora, merge-lora
    return parser


def _load_pipeline(args: argparse.Namespace):
    import torch

    from .pipelines import Emu3Pipeline

    dtype = getattr(torch, args.dtype) if args.dtype else None
    if args.lm is not None or args.vq is not None:
        if args.lm is None or args.vq is None:
            raise SystemExit("emu3: pass both --lm and --vq (BAAI's separate folders), or a pipeline folder --model.")
        return Emu3Pipeline.from_baai(args.lm, args.vq, tokenizer_path=args.tokenizer, torch_dtype=dtype)
    folder = args.model or DEFAULT_MODEL
    if not (Path(folder) / "model_index.json").is_file():
        raise SystemExit(
            f"emu3: {folder} is not a pipeline folder (no model_index.json). Pass --model PATH (a folder written by "
            "Emu3Pipeline.save_pretrained) or --lm/--vq[/--tokenizer] with BAAI's folders."
        )
    kwargs = {"torch_dtype": dtype} if dtype is not None else {}
    return Emu3Pipeline.from_pretrained(folder, **kwargs)


def _output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix or '.png'}") for i in range(count)]


def _generate(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    pipe = _load_pipeline(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=args.quiet, desc="rows")
    generator = torch.Generator("cpu").manual_seed(args.seed) if args.seed is not None else None
    out = pipe(
        args.prompt,
        negative_prompt=args.negative_prompt,
        height=args.height,
        width=args.width,
        ratio=args.ratio,
        image_area=args.image_area,
        guidance_scale=args.guidance_scale,
        num_images_per_prompt=args.num_images,
        generator=generator,
        do_sample=not args.greedy,
        top_k=args.top_k,
        top_p=args.top_p,
        temperature=args.temperature,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    from .utils.atomic import atomic_file

    for image, path in zip(out.images, _output_paths(args.output, len(out.images))):
        with atomic_file(path) as tmp:  # an interrupted run never leaves a truncated image
            image.save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emu3`` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as err:  # argument problems reported by the pipeline: no traceback
        print(f"emu3: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
