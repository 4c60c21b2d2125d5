"""Parallel (Jacobi) decoding against BAAI's recipe on the embedded model, batch 1: forward passes and wall clock.

One run, the same weights (src/emu3_hf/assets/emu3-tiny, the default of every entry point) and the same captions for
every method, under two settings:

- ``baai``: BAAI's settings, sampling with top-k 2048 and CFG 3.0 (the negative prompt is BAAI's);
- ``greedy``: the embedded model's recommended settings (its generation_config: greedy, no guidance).

Methods: (a) BAAI's recipe, ``model.generate`` with BAAI's logits processors
(:mod:`emu3_hf.generation.transformers_recipe`); (b) the engine, one token per pass; (c) the engine with
``parallel_decoding="jacobi"`` for each ``--windows`` value. Every engine method is checked to give the same tokens as
(b) for the same seed (position-keyed noise: exact, sampled or greedy), before anything is timed. Forward passes are
decoder calls per image, the prefill included. Each method runs once untimed, then ``--repeats`` times per caption
interleaved; the median over captions x repeats is reported. Writes bench/results/parallel-<time>.json and prints a
markdown table.

Usage:
    python bench/bench_parallel.py                       # 8x8 images, windows 8 16 24 32
    python bench/bench_parallel.py --windows 16 --repeats 1 --captions 2   # a quick run
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_results import machine, median, save_result

from emu3_hf.generation import generate_image_tokens, token_ids_from_config
from emu3_hf.generation.transformers_recipe import generate_with_transformers
from emu3_hf.pipelines import Emu3Pipeline
from emu3_hf.pipelines.pipeline_emu3 import BAAI_NEGATIVE_PROMPT
from emu3_hf.tiny_world import EMU3_TINY

CAPTIONS = [
    "a small red circle in the top left corner on a black background",
    "a large blue square in the center on a white background",
    "a small green triangle in the bottom right corner on a gray background",
    "a large yellow circle in the top right corner on a black background",
]
SETTINGS = {"baai": dict(do_sample=True, guidance_scale=3.0), "greedy": dict(do_sample=False, guidance_scale=1.0)}


def encode(pipe: Emu3Pipeline, caption: str, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    processor = pipe.make_processor()
    pos = processor(text=[caption], mode="G", height=grid, width=grid, return_tensors="pt")["input_ids"]
    neg = processor(text=[BAAI_NEGATIVE_PROMPT], mode="G", height=grid, width=grid, return_tensors="pt")["input_ids"]
    return pos, neg


def count_passes(lm) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, lm.model.register_forward_pre_hook(lambda *a: calls.append(1))


def methods(lm, windows: list[int]) -> dict:
    ids = token_ids_from_config(lm.config)

    def recipe(pos, neg, grid, setting, seed):
        torch.manual_seed(seed)
        out = generate_with_transformers(lm, pos, negative_input_ids=neg, height=grid, width=grid, top_k=2048,
                                         token_ids=ids, **SETTINGS[setting])
        return out[:, pos.shape[1]:]

    def engine(**options):
        def run(pos, neg, grid, setting, seed):
            out = generate_image_tokens(lm, pos, negative_input_ids=neg, height=grid, width=grid, top_k=2048,
                                        generator=torch.Generator().manual_seed(seed), **SETTINGS[setting], **options)
            return out.generated_ids

        return run

    table = {"BAAI recipe (transformers generate)": recipe, "engine, sequential": engine(parallel_decoding=None)}
    for w in windows:
        table[f"engine, jacobi window {w}"] = engine(parallel_decoding="jacobi", parallel_window=w)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=8, help="image size in tokens (grid x grid)")
    parser.add_argument("--windows", type=int, nargs="+", default=[8, 16, 24, 32])
    parser.add_argument("--captions", type=int, default=4, help=f"captions used (at most {len(CAPTIONS)})")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = machine()
    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
    lm = pipe.model.eval()
    prompts = [encode(pipe, c, args.grid) for c in CAPTIONS[: args.captions]]
    table = methods(lm, args.windows)
    rows = []
    for setting in args.settings:
        passes: dict[str, list[int]] = {name: [] for name in table}
        times: dict[str, list[float]] = {name: [] for name in table}
        with torch.no_grad():
            for i, (pos, neg) in enumerate(prompts):  # untimed: warm-up, exactness check, pass count
                reference = None
                for name, fn in table.items():
                    calls, handle = count_passes(lm)
                    try:
                        tokens = fn(pos, neg, args.grid, setting, i)
                    finally:
                        handle.remove()
                    passes[name].append(len(calls))
                    if name.startswith("engine"):
                        reference = tokens if reference is None else reference
                        if not torch.equal(tokens, reference):
                            raise SystemExit(f"{name} differs from sequential decoding ({setting}, caption {i})")
            for _ in range(args.repeats):
                for i, (pos, neg) in enumerate(prompts):
                    for name, fn in table.items():
                        start = time.perf_counter()
                        fn(pos, neg, args.grid, setting, i)
                        times[name].append(time.perf_counter() - start)
        base = median(times["BAAI recipe (transformers generate)"])
        for name in table:
            ms = median(times[name])
            rows.append(dict(setting=setting, method=name, passes_per_image=sum(passes[name]) / len(prompts),
                             ms_per_image=ms * 1e3, speedup_vs_recipe=base / ms))
            print(rows[-1], flush=True)  # progress: a long run on a busy machine shows its rows as they come
    settings = dict(vars(args), model=str(EMU3_TINY.name), batch=1)
    path = save_result("parallel", {"machine": machine(), "machine_before": before, "settings": settings,
                                    "rows": rows})
    print(f"{args.grid}x{args.grid} tokens, batch 1, embedded model; {path}")
    print("| setting | method | forward passes / image | ms / image | vs BAAI recipe |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['method']} | {r['passes_per_image']:.1f} | {r['ms_per_image']:.1f} | "
              f"{r['speedup_vs_recipe']:.2f}x |")


if __name__ == "__main__":
    main()
