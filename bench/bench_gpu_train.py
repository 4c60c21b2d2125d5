"""GPU training check of issue 32: a few optimizer steps of each training method on BAAI's 8B Emu3 configuration.

Each method runs ``emu3_hf.training.train`` (the same code as ``emu3 train``) on one fixed set of pictures, in a
process of its own so that peak memory is its own:

- ``lora``: bf16 LoRA (rank 16, every decoder linear layer) with gradient checkpointing;
- ``qlora``: the same on the LM loaded in 4-bit (bitsandbytes NF4; needs CUDA and bitsandbytes);
- ``zero2`` / ``zero3``: the ``lora`` run under ``accelerate launch`` with DeepSpeed ZeRO-2 / ZeRO-3 on one process
  (needs deepspeed; its ops build with the machine's nvcc when first used);
- ``fsdp2``: ``torchrun`` with 2 processes and ``sharding="fsdp2"`` (needs 2 devices, or runs on CPUs with gloo
  in the ``--tiny`` dry run): the trainer applies ``fully_shard`` only with 2 processes or more.

The pipeline folder is built first with random weights (LM in bf16: 16 GB for the 8B config; BAAI's VQ config and the
real Qwen tokenizer layout, vocabulary 184622), then reused by every method. A record per method: the losses of each
step (finite, and falling over the steps on a fixed batch), tokens per second over the steps (the trainer's own
``TrainResult.train_seconds``, load and export excluded), peak GPU memory (or the process's peak RSS on CPU), or the
error that stopped it. The whole record is rewritten after each method (``--out``), so a run cut short keeps what
it measured.

Usage:
    python bench/bench_gpu_train.py --out /tmp/gpu-out/train.json              # every method, 8B (CUDA, >= 40 GB)
    python bench/bench_gpu_train.py --tiny --methods lora fsdp2 --steps 3     # dry run on any machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = ("lora", "qlora", "zero2", "zero3", "fsdp2")


def build_folder(folder: Path, tiny: bool, side: int, pictures: int) -> Path:
    """A pipeline folder with random weights (8B or tiny) and ``pictures`` captioned pictures beside it."""
    import torch
    from bench_gpu import build_lm, lm_config, vq_config
    from PIL import Image

    from emu3_hf import Emu3Pipeline, Emu3VisionVQImageProcessor, Emu3VisionVQModel, build_emu3_tokenizer
    from emu3_hf.tiny_world import all_image_specs, render_image

    pipeline, data = folder / "pipeline", folder / "data"
    if (pipeline / "model_index.json").is_file() and (data / "metadata.jsonl").is_file():
        return folder
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lm = build_lm(lm_config(tiny), device, torch.bfloat16).to("cpu")
    vq = Emu3VisionVQModel(vq_config(tiny)).eval()
    codebook = vq.config.codebook_size
    text = lm.config.vocab_size - 211 - codebook  # the BPE ranks before the 208 specials and 3 image tokens
    tokenizer = build_emu3_tokenizer(codebook_size=codebook, num_text_tokens=text)
    factor = 2 ** (len(vq.config.ch_mult) - 1)
    processor = Emu3VisionVQImageProcessor(spatial_factor=factor, min_pixels=(side * factor) ** 2,
                                           max_pixels=(side * factor) ** 2)  # fmt: skip
    Emu3Pipeline(lm, vq, tokenizer, processor).save_pretrained(pipeline)
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(all_image_specs()[:pictures]):
        name = f"{i:03d}.png"
        Image.fromarray(render_image(spec)).resize((side * factor,) * 2, Image.NEAREST).save(data / name)
        rows.append(json.dumps({"file_name": name, "text": spec.caption()}))
    (data / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def peak_memory_gib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def worker(method: str, folder: Path, steps: int, out: Path) -> None:
    """One method's run (in its own process, or one rank of a launcher); rank 0 writes ``out``."""
    import torch

    from emu3_hf.training import TrainConfig, train

    bf16 = torch.cuda.is_available() or method != "fsdp2"  # CPU autocast in bf16 works; gloo FSDP2 stays fp32
    pictures = sum(1 for _ in open(folder / "data" / "metadata.jsonl"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    config = TrainConfig(
        model=str(folder / "pipeline"), data=str(folder / "data"), output_dir=str(folder / f"out-{method}"),
        lora=True, lora_rank=16, qlora=method == "qlora", learning_rate=1e-3, max_steps=steps,
        per_device_batch_size=max(1, pictures // world), mixed_precision="bf16" if bf16 else "no", gradient_checkpointing=True,
        sharding="fsdp2" if method == "fsdp2" else None, null_prompt_prob=0.0, group_by_length=False,
        report_to="none", logging_steps=1, show_progress=False, seed=0,
    )  # fmt: skip
    # the same batch every step: the whole set is one global batch (per-device batch x processes = pictures)
    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    record = {
        "method": method, "steps": result.global_step, "losses": result.losses,
        "tokens": result.train_tokens, "train_seconds": result.train_seconds,
        "tokens_per_s": result.train_tokens / result.train_seconds if result.train_seconds else None,
        "peak_memory_gib": round(peak_memory_gib(), 2),
        "finite": all(math.isfinite(x) for x in result.losses),
        "falling": len(result.losses) > 1 and result.losses[-1] < result.losses[0],
    }  # fmt: skip
    out.write_text(json.dumps(record))


def launch(method: str, folder: Path, steps: int, timeout: float) -> dict:
    """Run one method in fresh processes; the record it wrote, or the error that ended it."""
    out = folder / f"record-{method}.json"
    out.unlink(missing_ok=True)
    me = [str(Path(__file__).resolve()), "--worker", method, "--folder", str(folder), "--steps", str(steps)]
    if method in ("zero2", "zero3"):
        config = folder / f"accelerate-{method}.yaml"
        config.write_text(
            "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
            f"  zero_stage: {method[-1]}\n  offload_optimizer_device: none\n  offload_param_device: none\n"
            "  gradient_accumulation_steps: 1\n  gradient_clipping: 1.0\n  zero3_init_flag: false\n"
            "mixed_precision: bf16\nnum_machines: 1\nnum_processes: 1\nmachine_rank: 0\nuse_cpu: false\n"
        )
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), *me]
    elif method == "fsdp2":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *me]
    else:
        command = [sys.executable, *me]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout:.0f} s"}
    record = {"method": method, "wall_seconds": round(time.perf_counter() - started, 1)}
    if done.returncode == 0 and out.is_file():
        return {**json.loads(out.read_text()), **record}
    lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
    return {**record, "error": lines[-1] if lines else f"exit status {done.returncode}", "log_tail": lines[-15:]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="dry run: tiny LM and VQ, any device")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per method")
    parser.add_argument("--side", type=int, default=None, help="picture side in tokens (default 32; 8 with --tiny)")
    parser.add_argument("--pictures", type=int, default=4, help="pictures in the fixed batch (split over the processes)")
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per method")
    parser.add_argument("--out", type=Path, default=None, help="write the record here after every method")
    parser.add_argument("--worker", choices=METHODS, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    if args.worker:
        worker(args.worker, args.folder, args.steps, args.folder / f"record-{args.worker}.json")
        return
    folder = args.folder or Path(tempfile.mkdtemp(prefix="emu3-gpu-train-"))
    side = args.side or (8 if args.tiny else 32)
    started = time.perf_counter()
    build_folder(folder, args.tiny, side, args.pictures)
    record = {"tiny": args.tiny, "side": side, "pictures": args.pictures, "steps": args.steps,
              "build_seconds": round(time.perf_counter() - started, 1), "methods": []}  # fmt: skip
    for method in args.methods:
        record["methods"].append(launch(method, folder, args.steps, args.timeout))
        row = record["methods"][-1]
        print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1))
            tmp.replace(args.out)


if __name__ == "__main__":
    main()
