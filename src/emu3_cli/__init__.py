"""The ``emu3`` command's argument parser: it imports nothing but the standard library, so ``emu3 --help`` and
argument errors answer at once; a parsed command then imports :mod:`emu3_hf.cli`, where the work is done.

Example:
    ```bash
    emu3 generate "a small red circle in the top left corner on a black background" -o circle.png --seed 0
    emu3 caption circle.png
    emu3 video "a small blue square moving right on a gray background" -o clip.gif
    emu3 continue clip.gif -o more.gif
    emu3 convert --lm Emu3-Gen --vq Emu3-VisionTokenizer --to pipeline -o emu3-gen-pipeline --validate
    emu3 merge-lora emu3-gen-pipeline my-lora emu3-gen-merged
    emu3 tiny-world train -o tiny-run && emu3 tiny-world eval --model tiny-run/pipeline
    ```
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

_DTYPES = ("float32", "bfloat16", "float16")


def _model_options() -> argparse.ArgumentParser:
    """Options every model-running command shares: which model, where, and how verbose."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("model (a pipeline folder or repo id, or BAAI's separate folders)")
    where.add_argument("--model", default=None,
                       help="pipeline folder or Hub repo id written by Emu3Pipeline.save_pretrained "
                            "(default: the embedded model shipped with emu3-hf)")
    where.add_argument("--lm", default=None, help="BAAI LM folder or Hub id (with --vq; overrides --model)")
    where.add_argument("--vq", default=None, help="BAAI VQ folder or Hub id")
    where.add_argument("--tokenizer", default=None, help="tokenizer folder when the LM folder has none")
    common.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    common.add_argument("--dtype", choices=_DTYPES, default=None, help="LM dtype (default: as saved)")
    common.add_argument("--seed", type=int, default=None, help="random seed (reproducible sampling)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    return common


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--negative-prompt", default=None, help="guidance prompt (default: BAAI's negative prompt)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance, 1 disables (default: the model's recommendation, else 3.0)")
    parser.add_argument("--top-k", type=int, default=2048, help="sample among the k best codes (an int >= 1)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--greedy", dest="do_sample", action="store_const", const=False, default=None,
                        help="pick the most likely token (default: the model's recommendation, else sampling)")
    parser.add_argument("--sample", dest="do_sample", action="store_const", const=True,
                        help="sample the tokens even where the model recommends greedy decoding")
    parser.add_argument("--parallel-decoding", choices=["jacobi"], default=None,
                        help="verify several draft tokens per forward pass (Jacobi decoding: the same tokens)")
    parser.add_argument("--parallel-window", type=int, default=None,
                        help="draft tokens per forward pass with --parallel-decoding (default: the engine's)")
    parser.add_argument("--compile", dest="compile_decode", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the decode step over a static cache (default: on with CUDA only)")


def _size_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ratio", default="1:1", help="aspect ratio w:h (ignored with --height/--width)")
    parser.add_argument("--image-area", type=int, default=None, help="pixel area (default: the model config's)")
    parser.add_argument("--height", type=int, default=None, help="height in pixels (multiple of the VQ factor)")
    parser.add_argument("--width", type=int, default=None, help="width in pixels (multiple of the VQ factor)")


def _job_options(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    jobs = parser.add_argument_group("batch jobs (emu3_hf.jobs)")
    jobs.add_argument(flag, dest="job_source", default=None, metavar="SOURCE", help=help)
    jobs.add_argument("--batch-size", type=int, default=8, help="with %s: items per model call" % flag)
    jobs.add_argument("--column", default=None, help="with a dataset %s: the column to read" % flag)
    jobs.add_argument("--split", default="train", help="with a dataset %s: the split to read" % flag)


def _check_job_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A single item or a job: exactly one of the positional input and the job flag."""
    single = {"generate": "prompt", "video": "prompt", "caption": "image"}.get(args.command)
    if single is None:
        return
    flag = "--images" if args.command == "caption" else "--prompts"
    if (getattr(args, single) is None) == (args.job_source is None):
        parser.error(f"{args.command}: give a {single} or {flag} SOURCE (exactly one).")
    if args.command == "caption" and args.job_source is not None and args.output is None:
        parser.error("caption --images: give -o FILE.jsonl, where the captions go.")


def build_parser() -> argparse.ArgumentParser:
    """The whole ``emu3`` command line (standard library only)."""
    parser = argparse.ArgumentParser(prog="emu3", description="BAAI's Emu3 with Hugging Face tooling.")
    commands = parser.add_subparsers(dest="command", required=True)
    common = _model_options()

    gen = commands.add_parser("generate", parents=[common], help="text-to-image generation")
    gen.add_argument("prompt", nargs="?", default=None, help="the text prompt (or --prompts FILE)")
    gen.add_argument("--output", "-o", required=True, type=Path,
                     help="image file to write (with --num-images N > 1: NAME-0.png ... NAME-(N-1).png); "
                          "with --prompts, the dataset folder to fill")  # fmt: skip
    gen.add_argument("--num-images", type=int, default=1, help="images to generate (with --prompts: per prompt)")
    _size_options(gen)
    _sampling_options(gen)
    _job_options(gen, "--prompts", "a .txt (one prompt a line) or .jsonl file (prompt, negative_prompt, seed, ratio "
                 "or height/width, num_images per line), or a datasets folder / Hub dataset id with a text column: "
                 "writes images + metadata.jsonl (datasets imagefolder) to -o DIR; resumable; shards over the "
                 "processes of accelerate launch / torchrun")  # fmt: skip
    gen.add_argument("--push-to-hub", default=None, metavar="REPO", help="with --prompts: upload DIR as a dataset repo")

    cap = commands.add_parser("caption", parents=[common], help="describe an image (image understanding)")
    cap.add_argument("image", type=Path, nargs="?", default=None, help="image file (or --images DIR)")
    _job_options(cap, "--images", "a folder of images or a datasets folder / Hub dataset id with an image column: "
                 "writes one JSON line per image (file_name, text) to -o FILE.jsonl; resumable; shards over processes")
    cap.add_argument("--output", "-o", type=Path, default=None, help="with --images: the .jsonl file to write")
    cap.add_argument("--question", default="Describe the image.", help="what to ask about the image")
    cap.add_argument("--max-new-tokens", type=int, default=64)

    vid = commands.add_parser("video", parents=[common], help="text-to-video generation")
    vid.add_argument("prompt", nargs="?", default=None, help="the text prompt (or --prompts FILE)")
    vid.add_argument("--output", "-o", required=True, type=Path,
                     help="video file to write (.gif, or .mp4 with PyAV); with --prompts, the folder to fill")
    _job_options(vid, "--prompts", "prompts as for `emu3 generate --prompts`: writes <row>-<k>.gif clips + "
                 "metadata.jsonl to -o DIR; resumable; shards over processes")  # fmt: skip
    vid.add_argument("--num-frames", type=int, default=None, help="frames (a multiple of the VQ's temporal factor)")
    vid.add_argument("--fps", type=int, default=8)
    _size_options(vid)
    _sampling_options(vid)

    cont = commands.add_parser("continue", parents=[common], help="continue a video (what happens next)")
    cont.add_argument("video", type=Path, help="video to continue (.gif, or .mp4 with PyAV)")
    cont.add_argument("--output", "-o", required=True, type=Path, help="the continued video (.gif or .mp4)")
    cont.add_argument("--prompt", default=None, help="caption of the clip (default: none, the frames carry it)")
    cont.add_argument("--num-frames", type=int, default=None, help="new frames (default: the temporal factor)")
    cont.add_argument("--fps", type=int, default=8)
    _sampling_options(cont)
    _add_conversion_commands(commands)
    _add_train_command(commands)
    _add_tiny_world_commands(commands)
    _add_demo_command(commands)
    return parser


def _add_demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="try a model in the browser (Gradio; pip install 'emu3-hf[demo]')")
    demo.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: the embedded model)")
    demo.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 for every interface)")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    demo.add_argument("--export-space", type=Path, default=None, metavar="DIR",
                      help="write app.py + requirements.txt + README.md for a Hugging Face Space instead of serving")


def _add_tiny_world_commands(commands) -> None:
    world = commands.add_parser("tiny-world", help="train or evaluate the embedded tiny-world model "
                                "(docs/TINY_WORLD.md)")  # fmt: skip
    steps = world.add_subparsers(dest="tiny_world_command", required=True)
    train = steps.add_parser("train", help="the whole recipe: VQ, tokenizer + base pipeline, LM, pink LoRA "
                             "(each stage resumes)")  # fmt: skip
    train.add_argument("--output", "-o", required=True, type=Path,
                       help="run folder: vq/, vq-compact/, vq-decoder/ and vq-canonical/ (stage 1), base/, lm/ (stage 2b), the "
                       "finished pipeline in pipeline/, the LoRA's adapter in pink-lora/")  # fmt: skip
    train.add_argument("--vq-image-steps", type=int, default=10_000, help="VQ phase 1 steps (images only)")
    train.add_argument("--vq-clip-steps", type=int, default=0, help="VQ phase 2 steps (images + clips; 0 skips)")
    train.add_argument("--vq-decoder-steps", type=int, default=1500,
                       help="VQ stage 1c steps: the decoder on the compacted codes (0 skips)")
    train.add_argument("--vq-canonical-steps", type=int, default=4000,
                       help="VQ stage 1d steps: the decoder draws canonical grids, so the LM composes (0 skips)")
    train.add_argument("--copies", type=int, default=8, help="renders of each base spec per task and epoch")
    train.add_argument("--lm-epochs", type=float, default=12.0, help="passes over the LM's training mixture")
    train.add_argument("--lm-finish-epochs", type=float, default=2.0,
                       help="LM stage 2c: passes over the finishing mixture (more captions and clips; 0 skips)")
    train.add_argument("--lm-batch-size", type=int, default=32)
    train.add_argument("--lm-max-steps", type=int, default=None, help="stop each LM stage after this many steps")
    train.add_argument("--lora-max-steps", type=int, default=None, help="stop the LoRA after this many steps")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", dest="show_progress", action="store_false", help="no progress bars")
    evaluate = steps.add_parser("eval", help="score a pipeline with the reference analyzer (text-to-image, "
                                "held-out pairs, captions, video motion, speed)")  # fmt: skip
    evaluate.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    evaluate.add_argument("--lora", default=None, help="score this adapter instead (the LoRA demo): pink prompts "
                          "without and with it, other colours with it; --images prompts each")  # fmt: skip
    evaluate.add_argument("--images", type=int, default=None, help="distinct text-to-image prompts (default all: "
                          "104 of test + validation; 0 skips)")  # fmt: skip
    evaluate.add_argument("--heldout", type=int, default=None, help="distinct held-out-pair prompts (default all "
                          "80; 0 skips)")  # fmt: skip
    evaluate.add_argument("--captions", type=int, default=None, help="pictures to caption, each clean and jittered "
                          "(default all 104; 0 skips)")  # fmt: skip
    evaluate.add_argument("--videos", type=int, default=None, help="distinct text-to-video prompts (default all "
                          "36; 0 skips)")  # fmt: skip
    evaluate.add_argument("--sample", action="store_true", help="sample instead of the model's recommended decoding")
    evaluate.add_argument("--seeds", type=int, default=1, help="draws per image/video prompt; > 1 needs sampling "
                          "(greedy decoding gives one output per prompt)")  # fmt: skip
    evaluate.add_argument("--splits", default="test,validation", help="comma-separated base splits whose captions "
                          "the text-to-image, caption and video parts (and --lora's other colours) read")  # fmt: skip
    evaluate.add_argument("--guidance-scale", type=float, default=None)
    evaluate.add_argument("--top-k", type=int, default=None)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--output", "-o", type=Path, default=None, help="also write the report here (JSON)")


_CONVERT_HELP = """\
Convert an Emu3 checkpoint between layouts: 'baai' (BAAI's LM folder + VQ folder), 'pipeline' (an emu3-hf
pipeline folder: model_index.json + components) and 'native' (transformers' Emu3ForConditionalGeneration with its
processor). The source layout is detected. BAAI input: --lm DIR --vq DIR [--tokenizer DIR], or one folder holding
lm/ and vq/. BAAI output: OUTPUT/lm (weights, config, tokenizer files) and OUTPUT/vq (weights, config,
preprocessor_config.json), BAAI's two Hub repos side by side. Weights are written as safetensors only, the
tokenizer with tokenizer.json; nothing appears at OUTPUT unless the whole conversion (and --validate) succeeded."""
_LAYOUTS = ("baai", "pipeline", "native")  # emu3_hf.conversion.layouts.LAYOUTS (a test keeps them equal)
_SHARD = "5GB"


def _add_conversion_commands(commands) -> None:
    convert = commands.add_parser("convert", help="convert a checkpoint between BAAI, pipeline and native layouts",
                                  description=_CONVERT_HELP)
    convert.add_argument("source", nargs="?", type=Path, default=None,
                         help="checkpoint folder (pipeline, native, or one holding BAAI's lm/ + vq/); omit with --lm")
    convert.add_argument("--lm", type=Path, default=None, help="BAAI LM folder (with --vq)")
    convert.add_argument("--vq", type=Path, default=None, help="BAAI VQ folder (with --lm)")
    convert.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder if the BAAI LM folder has none")
    convert.add_argument("--to", required=True, choices=_LAYOUTS, help="target layout")
    convert.add_argument("--output", "-o", required=True, type=Path, help="new folder to write")
    convert.add_argument("--from", dest="source_layout", choices=_LAYOUTS, default=None,
                         help="the source's layout, checked against the detected one")
    convert.add_argument("--dtype", choices=_DTYPES, default=None, help="cast all weights (default: as stored)")
    convert.add_argument("--max-shard-size", default=_SHARD, help=f"largest safetensors shard (default {_SHARD})")
    convert.add_argument("--validate", action="store_true",
                         help="compare LM logits and VQ codes + pixels of both sides; exit 1 when they differ")
    convert.add_argument("--atol", type=float, default=1e-3, help="--validate absolute tolerance (default 1e-3)")
    convert.add_argument("--rtol", type=float, default=1e-3, help="--validate relative tolerance (default 1e-3)")

    lora = commands.add_parser("convert-lora", help="rename a PEFT LoRA adapter between emu3 and native modules",
                               description="Rename a PEFT LoRA adapter's modules between emu3-hf's LM (the same names "
                               "as BAAI's remote code: 'emu3', alias 'baai') and transformers' native "
                               "Emu3ForConditionalGeneration ('native'). Weights stay bit-identical.")
    lora.add_argument("adapter", type=Path, help="adapter folder (adapter_config.json + adapter_model.safetensors)")
    lora.add_argument("--to", required=True, choices=("native", "emu3", "baai"), help="target module names")
    lora.add_argument("--output", "-o", required=True, type=Path, help="new folder to write")

    merge = commands.add_parser("merge-lora", help="fuse a LoRA adapter into a copy of its base checkpoint",
                                description="Write BASE with the adapter fused into its LM weights (everything else "
                                "copied) to the new folder OUTPUT, in BASE's layout.")
    merge.add_argument("base", type=Path, help="BAAI LM folder, folder with BAAI's lm/ + vq/, or pipeline folder")
    merge.add_argument("adapter", type=Path, help="PEFT adapter folder (emu3 or native module names)")
    merge.add_argument("output", type=Path, help="new folder to write")
    merge.add_argument("--max-shard-size", default=_SHARD, help=f"largest safetensors shard (default {_SHARD})")


_TRAIN_HELP = """\
Fine-tune an Emu3 pipeline's LM with LoRA (--lora, PEFT, the VQ never adapted) or fully (--full) on a folder with
metadata.jsonl (file_name + text per line, or file_name + question + answer) or a dataset saved with
datasets' save_to_disk. Images are VQ-tokenized once into a resumable cache. Runs in one process or under
`accelerate launch` (DDP, DeepSpeed; --sharding fsdp2 for torch's fully_shard); checkpoints every --save-steps
resume exactly with --resume latest. Writes the adapter (adapter_config.json + adapter_model.safetensors) or the
pipeline folder, a model card and training_config.json to OUTPUT_DIR."""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults formatter, minus "(default: None)" / "(default: False)" where the help says the default
    in words (flags, and options whose absence means something)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_train_command(commands) -> None:
    # Defaults equal emu3_hf.training.TrainConfig's (a test keeps them so); None = TrainConfig's own default.
    t = commands.add_parser("train", help="LoRA or full fine-tuning (one process or accelerate launch)",
                            description=_TRAIN_HELP, formatter_class=_DefaultsFormatter)
    t.add_argument("data", help="folder with metadata.jsonl, or a save_to_disk dataset folder")
    t.add_argument("--model", default=None, help="pipeline folder or Hub repo, or BAAI's LM folder with --vq "
                   "(default: the embedded model shipped with emu3-hf)")  # fmt: skip
    t.add_argument("--vq", default=None, help="BAAI VisionTokenizer folder (with a BAAI LM folder as --model)")
    t.add_argument("--tokenizer", default=None, help="tokenizer folder if the BAAI LM folder has none")
    t.add_argument("--output-dir", "-o", required=True,
                   help="where checkpoints, logs and the result go (created; an existing folder is added to)")
    t.add_argument("--eval-data", default=None, help="held-out set (same forms as DATA; default: none)")
    t.add_argument("--eval-fraction", type=float, default=0.0, help="hold out this share of DATA instead")
    t.add_argument("--cache-dir", default=None, help="VQ code cache (default: OUTPUT_DIR/vq-cache)")
    t.add_argument("--loss-on", choices=["vision", "text", "all", "auto"], default="vision",
                   help="tokens with loss: vision (BAAI's T2I SFT), text (answers), all, auto (per example)")
    t.add_argument("--null-prompt-prob", type=float, default=0.05,
                   help="share of rows trained with an empty prompt (CFG's unconditional branch; empty captions in "
                   "DATA are refused)")  # fmt: skip
    method = t.add_mutually_exclusive_group()
    method.add_argument("--lora", dest="lora", action="store_true", default=True, help="LoRA (default)")
    method.add_argument("--full", dest="lora", action="store_false", help="full fine-tuning")
    t.add_argument("--lora-rank", type=int, default=16, help="LoRA rank r (the adapter matrices' inner size)")
    t.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha: the update is scaled by alpha / r")
    t.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA branch's input, in [0, 1)")
    t.add_argument("--lora-targets", nargs="+", default=None,
                   help="LM linear layers to adapt (default: every attention and MLP projection)")
    t.add_argument("--rslora", dest="use_rslora", action="store_true", help="rank-stabilised LoRA scaling")
    t.add_argument("--dora", dest="use_dora", action="store_true", help="weight-decomposed LoRA (DoRA)")
    t.add_argument("--qlora", action="store_true", help="4-bit NF4 base (bitsandbytes, CUDA)")
    t.add_argument("--learning-rate", "--lr", type=float, default=1e-4, help="AdamW learning rate (peak)")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    t.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps before the cosine decay")
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="clip gradients to this norm (0 disables)")
    t.add_argument("--max-steps", type=int, default=None, help="optimizer steps (default: --num-epochs passes)")
    t.add_argument("--num-epochs", type=float, default=1.0, help="passes over DATA (when --max-steps is not given)")
    t.add_argument("--batch-size", dest="per_device_batch_size", type=int, default=1,
                   help="examples per process and micro-step")
    t.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-steps per optimizer step")
    t.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no", help="accelerate's autocast")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    t.add_argument("--sharding", choices=["fsdp2"], default=None,
                   help="torch fully_shard across processes (default: DDP or accelerate's config)")
    t.add_argument("--padding-side", choices=["left", "right"], default="right", help="where batches are padded")
    t.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                   help="batch in random order (default: batches of similar lengths, less padding)")
    t.add_argument("--save-steps", type=int, default=0, help="checkpoint every N steps (0: only the result)")
    t.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    t.add_argument("--resume", dest="resume_from_checkpoint", default=None,
                   help="checkpoint folder, or 'latest' (the newest in OUTPUT_DIR) (default: a new run)")
    t.add_argument("--eval-steps", type=int, default=0, help="evaluate every N steps (0: at the end)")
    t.add_argument("--logging-steps", type=int, default=10, help="log the loss every N steps")
    t.add_argument("--report-to", choices=["auto", "tensorboard", "none"], default="auto",
                   help="auto: TensorBoard in OUTPUT_DIR/emu3-train when installed, else no logs (said at the start)")
    t.add_argument("--seed", type=int, default=0, help="data order, dropout and prompt drops")
    t.add_argument("--vq-batch-size", type=int, default=16, help="images per VQ forward when tokenizing DATA")
    t.add_argument("--hub-model-id", default=None,
                   help="repo id the model card names (default: the card loads from OUTPUT_DIR)")
    t.add_argument("--quiet", dest="show_progress", action="store_false", help="no progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``emu3`` command; returns the exit status (2 for bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_job_arguments(parser, args)
    from emu3_hf.cli import run  # torch, transformers and the model code load only now

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
