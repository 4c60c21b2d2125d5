"""Images per second of a generation job (emu3_hf.jobs) on the embedded model, in one process or sharded.

One process:
    python bench/bench_jobs.py --prompts 32
Two processes (CPUs: gloo; GPUs: one each):
    accelerate launch --config_file examples/accelerate/ddp.yaml bench/bench_jobs.py --prompts 32

Each run writes a fresh folder; the time counts the job only (model loaded, processes joined), from a barrier to
the assembled metadata.jsonl. Process 0 prints one line: processes, images, seconds, images/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from emu3_hf.jobs import generate_images
from emu3_hf.jobs.state import process_state
from emu3_hf.pipelines import Emu3Pipeline
from emu3_hf.tiny_world import EMU3_TINY

PROMPTS = ["a small red circle in the top left corner on a black background",
           "a large blue square in the center on a white background",
           "a medium green triangle at the bottom on a gray background",
           "a small yellow circle on the right on a black background"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32, help="prompts (one image each)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    procs = process_state()
    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY).to(procs.device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        folder = tmp
        if procs.num_processes > 1:  # every process writes into process 0's folder
            from accelerate.utils import broadcast_object_list

            folder = broadcast_object_list([tmp])[0]
        procs.wait_for_everyone()
        start = time.perf_counter()
        generate_images(pipe, prompts, folder, batch_size=args.batch_size, show_progress=False, seed=0,
                        do_sample=True, top_k=64)  # fmt: skip
        seconds = time.perf_counter() - start
    if procs.is_main_process:
        print(f"processes {procs.num_processes}, images {args.prompts}, batch {args.batch_size}, {seconds:.1f} s, "
              f"{args.prompts / seconds:.2f} images/s on {procs.device}")


if __name__ == "__main__":
    main()
