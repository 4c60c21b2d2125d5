"""Image-token generation speed: BAAI's recipe on transformers vs transformers' native Emu3 vs the emu3-hf engine.

One run, the same random weights, prompts and image size for all of them:

(a) BAAI's README recipe on our model: ``model.generate`` + ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` +
    ``PrefixConstrainedLogitsProcessor`` with BAAI's per-token rules (emu3_hf.generation.transformers_recipe);
(b) the same recipe on transformers' native ``Emu3ForConditionalGeneration`` (weights converted with
    emu3_hf.conversion; a random VQ of matching codebook, unused here);
(c) emu3_hf.generation.generate_image_tokens (grammar as tensors, one doubled CFG batch, LM head on the visual rows);
(d) (c) with parallel_decoding="jacobi" (Jacobi decoding, exact: the same tokens; window --window);
(e) (c) on int8 weights (torchao weight-only, emu3_hf.generation.quantization) with the compiled decode step (eager
    torchao int8 converts each weight back per call; skipped when torchao is not installed).

Sampling as BAAI does it (top-k 2048, guidance 3.0). Before timing, (a)-(d) are checked to produce the same tokens
greedily on a small grid, so they do the same work ((e) computes with other weights; its agreement is reported).
Each method is run once untimed per batch size (warm-up, compilation), then --repeats times interleaved; the median
is reported. Writes bench/results/generation-<time>.json and prints a markdown table.

Usage:
    python bench/bench_generation.py                 # hidden 512, 8 layers, vocab 40403, 16x16 tokens, batch 1 and 4
    python bench/bench_generation.py --quick         # a smoke run (small model, 4x4 tokens)
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import time

# Compile in this process: inductor's worker processes would compete with the timed runs on a small machine.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import torch  # noqa: E402
from bench_results import machine, median, save_result  # noqa: E402

from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM, Emu3VisionVQConfig, Emu3VisionVQModel
from emu3_hf.conversion import convert_baai_to_native
from emu3_hf.generation import generate_image_tokens, token_ids_from_config
from emu3_hf.generation.quantization import quantize_weights, weight_bytes
from emu3_hf.generation.transformers_recipe import generate_with_transformers


def build_models(args) -> tuple[Emu3LMForCausalLM, torch.nn.Module]:
    t = args.text_vocab  # BAAI's layout: text ids, 208 Qwen specials, 3 image tokens, then the codebook
    config = Emu3LMConfig(
        vocab_size=t + 211 + args.codebook, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096, pad_token_id=t, bos_token_id=t + 206, eos_token_id=t + 207,
        img_token_id=t + 208, boi_token_id=t + 209, eoi_token_id=t + 210, eol_token_id=t + 203,
        eof_token_id=t + 204, image_area=(args.grid * 8) ** 2, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    lm = Emu3LMForCausalLM(config).eval()
    vq_config = Emu3VisionVQConfig(
        codebook_size=args.codebook, embed_dim=4, z_channels=4, ch=32, ch_mult=[1, 1], num_res_blocks=1,
        attn_resolutions=[1], temporal_downsample_factor=4,
    )  # fmt: skip
    vq = Emu3VisionVQModel(vq_config).eval()
    native = convert_baai_to_native(lm, vq)
    native.config._attn_implementation = "sdpa"
    return lm, native


def make_prompts(config, batch: int, grid: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[bos] text [boi] 'h*w' [img] prompts (B, L) and one negative prompt each, no padding."""
    rng = random.Random(seed)
    digits = [15 + int(c) for c in str(grid)]  # Qwen ids of '0'..'9' are 15..24, '*' is 9
    size = digits + [9] + digits

    def row(n):
        return [config.bos_token_id, *[rng.randrange(1000) for _ in range(n)], config.boi_token_id, *size,
                config.img_token_id]  # fmt: skip

    return torch.tensor([row(24) for _ in range(batch)]), torch.tensor([row(14) for _ in range(batch)])


def run_recipe(model, ids, pos, neg, grid, do_sample, seed):
    torch.manual_seed(seed)
    return generate_with_transformers(
        model, pos, negative_input_ids=neg, height=grid, width=grid, do_sample=do_sample, top_k=2048, token_ids=ids
    )


def run_engine(model, ids, pos, neg, grid, do_sample, seed, **options):
    out = generate_image_tokens(
        model, pos, negative_input_ids=neg, height=grid, width=grid, do_sample=do_sample, top_k=2048,
        generator=torch.Generator().manual_seed(seed), token_ids=ids, **options,
    )  # fmt: skip
    return out.sequences


def tokens_per_pass(lm, fn, pos, neg, grid) -> float:
    """Generated tokens per row / decoder forward passes after the prefill, for one sampled call."""
    calls: list[int] = []
    handle = lm.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            seqs = fn(pos, neg, grid, True, 0)
    finally:
        handle.remove()
    return (seqs.shape[1] - pos.shape[1]) / (len(calls) - 1)


@torch.no_grad()
def step_anatomy(lm, batch: int, context: int = 150, steps: int = 40) -> dict[str, float]:
    """Milliseconds of one decoder step at `batch` and `2 * batch` rows, and of the LM head (full / visual slice).

    Recipe (a) pays two decoder steps of `batch` rows and two full heads per token; the engine one step of
    `2 * batch` rows and one visual-slice head: on a memory-bound CPU that ratio bounds the speed-up.
    """
    from transformers import DynamicCache

    def decoder_ms(rows: int) -> float:
        cache = DynamicCache(config=lm.config)
        lm.model(torch.randint(0, 1000, (rows, context)), cache=cache, use_cache=True)
        token = torch.randint(0, 1000, (rows, 1))
        start = time.perf_counter()
        for i in range(steps):
            lm.model(token, position_ids=torch.full((rows, 1), context + i), cache=cache, use_cache=True)
        return (time.perf_counter() - start) / steps * 1e3

    def head_ms(rows: int, vocab_rows: slice) -> float:
        hidden, weight = torch.randn(rows, lm.config.hidden_size), lm.lm_head.weight[vocab_rows]
        start = time.perf_counter()
        for _ in range(steps):
            torch.nn.functional.linear(hidden, weight)
        return (time.perf_counter() - start) / steps * 1e3

    ids = token_ids_from_config(lm.config)
    visual = slice(ids.visual_offset, ids.visual_offset + ids.codebook_size)
    return {
        f"decoder step, {batch} rows": decoder_ms(batch),
        f"decoder step, {2 * batch} rows": decoder_ms(2 * batch),
        f"full LM head, {batch} rows": head_ms(batch, slice(None)),
        f"visual-slice head, {2 * batch} rows": head_ms(2 * batch, visual),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--text-vocab", type=int, default=32000)
    parser.add_argument("--codebook", type=int, default=8192)
    parser.add_argument("--grid", type=int, default=16, help="image size in tokens (grid x grid)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--window", type=int, default=4, help="draft tokens per forward pass for (d)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and batch (median reported)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 4x4 tokens, batch 1 and 2")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.intermediate, args.layers, args.text_vocab, args.codebook = 64, 128, 2, 2000, 512
        args.grid, args.batches, args.repeats = 4, [1, 2], 1
    start = machine()

    lm, native = build_models(args)
    ids = token_ids_from_config(lm.config)
    jacobi = dict(parallel_decoding="jacobi", parallel_window=args.window)
    methods = {
        "(a) BAAI recipe, transformers generate, emu3-hf model": lambda *a: run_recipe(lm, ids, *a),
        "(b) BAAI recipe, transformers native Emu3": lambda *a: run_recipe(native, ids, *a),
        "(c) emu3-hf engine": lambda *a: run_engine(lm, ids, *a),
        f"(d) engine + Jacobi decoding (window {args.window})": lambda *a: run_engine(lm, ids, *a, **jacobi),
    }
    int8 = None
    try:
        int8 = quantize_weights(copy.deepcopy(lm), "int8")
        methods["(e) engine + int8 weights (compiled decode)"] = lambda *a: run_engine(int8, ids, *a,
                                                                                   compile_decode=True)
    except ImportError as error:
        print(f"(e) skipped: {error}")
    names = list(methods)
    params = sum(p.numel() for p in lm.parameters())
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, vocab {lm.config.vocab_size} (codebook {args.codebook}), "
        f"{params / 1e6:.1f}M params, float32, sdpa; image {args.grid}x{args.grid} tokens "
        f"({args.grid * (args.grid + 1) + 3} generated per image); CFG 3.0, top-k 2048 sampling; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {start['load_average']}"
    )

    # Same work: greedy tokens agree on a small grid (also warms every path up).
    with torch.no_grad():
        pos, neg = make_prompts(lm.config, 2, 3, seed=1)
        outs = [fn(pos, neg, 3, False, 0) for fn in methods.values()]
    assert all(torch.equal(outs[0], o) for o in outs[1:4]), "(a)-(d) disagree on greedy tokens"
    check = "greedy tokens identical across (a)-(d) on a 3x3 grid, batch 2"
    if int8 is not None:
        agree = float((outs[4] == outs[0]).float().mean())
        check += f"; (e) int8 agrees on {agree:.0%} of the sequence ids"
    print("check: " + check)

    rows = []
    for batch in args.batches:
        pos, neg = make_prompts(lm.config, batch, args.grid)
        with torch.no_grad():
            for fn in methods.values():  # warm-up at this shape (compiles (e))
                fn(pos, neg, args.grid, True, 0)
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.repeats):
            for name, fn in methods.items():
                start_time = time.perf_counter()
                with torch.no_grad():
                    seqs = fn(pos, neg, args.grid, True, 0)
                times[name].append((time.perf_counter() - start_time) / batch)
                assert seqs.shape[1] == pos.shape[1] + args.grid * (args.grid + 1) + 3
        accepted = {name: tokens_per_pass(lm, methods[name], pos, neg, args.grid) for name in names[2:4]}
        for name in names:
            print(f"  batch {batch}: {name}: {median(times[name]):.2f} s/image "
                  f"(runs {', '.join(f'{t:.2f}' for t in times[name])})", flush=True)
        print(f"  batch {batch}: tokens per forward pass: "
              + ", ".join(f"{k[:3]} {v:.2f}" for k, v in accepted.items()))
        rows.append({"batch": batch, "seconds_per_image": times, "median": {n: median(times[n]) for n in names},
                     "tokens_per_forward_pass": accepted})

    print("\nper-token anatomy (ms):")
    anatomy = {batch: step_anatomy(lm, batch) for batch in args.batches}
    for batch in args.batches:
        print("  " + ", ".join(f"{k}: {v:.1f}" for k, v in anatomy[batch].items()))

    memory = {"float32_bytes": weight_bytes(lm), "int8_bytes": weight_bytes(int8) if int8 is not None else None}
    path = save_result("generation", {
        "machine_start": start, "machine_end": machine(), "settings": vars(args), "parameters": params,
        "check": check, "rows": rows, "anatomy_ms": anatomy, "weights": memory,
    })  # fmt: skip

    letters = [n[:3] for n in names]
    print(f"\nweights: float32 {memory['float32_bytes'] / 2**20:.1f} MiB" + (
        f", int8 {memory['int8_bytes'] / 2**20:.1f} MiB (embedding stays float32)" if int8 is not None else ""))
    print("\n| batch | " + " | ".join(f"{n} s/image" for n in names) + " | "
          + " | ".join(f"(a)/{x}" for x in letters[2:]) + " | (d) tokens/pass |")  # fmt: skip
    print("|---|" + "---|" * (2 * len(names) - 1))
    for row in rows:
        med = row["median"]
        cells = " | ".join(f"{med[n]:.2f}" for n in names)
        ratios = " | ".join(f"{med[names[0]] / med[n]:.1f}x" for n in names[2:])
        print(f"| {row['batch']} | {cells} | {ratios} | {row['tokens_per_forward_pass'][names[3]]:.2f} |")
    print(f"\nresult: {path}")


if __name__ == "__main__":
    main()
