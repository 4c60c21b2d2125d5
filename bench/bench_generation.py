"""Image-token generation speed: BAAI's recipe on transformers vs transformers' native Emu3 vs the emu3-hf engine.

One run, the same random weights, prompts and image size for all three:

(a) BAAI's README recipe on our model: ``model.generate`` + ``UnbatchedClassifierFreeGuidanceLogitsProcessor`` +
    ``PrefixConstrainedLogitsProcessor`` with BAAI's per-token rules (emu3_hf.generation.transformers_recipe);
(b) the same recipe on transformers' native ``Emu3ForConditionalGeneration`` (weights converted with
    emu3_hf.conversion; a random VQ of matching codebook, unused here);
(c) emu3_hf.generation.generate_image_tokens (grammar as tensors, one doubled CFG batch, LM head on the visual rows).

Sampling as BAAI does it (top-k 2048, guidance 3.0). Before timing, all three are checked to produce the same tokens
greedily on a small grid, so they do the same work. Prints a markdown table.

Usage:
    python bench/bench_generation.py                 # hidden 512, 8 layers, vocab 40403, 16x16 tokens, batch 1 and 4
    python bench/bench_generation.py --quick         # a smoke run (small model, 4x4 tokens)
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM, Emu3VisionVQConfig, Emu3VisionVQModel
from emu3_hf.conversion import convert_baai_to_native
from emu3_hf.generation import generate_image_tokens, token_ids_from_config
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


def run_engine(model, ids, pos, neg, grid, do_sample, seed):
    out = generate_image_tokens(
        model, pos, negative_input_ids=neg, height=grid, width=grid, do_sample=do_sample, top_k=2048,
        generator=torch.Generator().manual_seed(seed), token_ids=ids,
    )  # fmt: skip
    return out.sequences


@torch.no_grad()
def step_anatomy(lm, batch: int, context: int = 150, steps: int = 40) -> dict[str, float]:
    """Milliseconds of one decoder step at `batch` and `2 * batch` rows, and of the LM head (full / visual slice).

    Recipe (a) pays two decoder steps of `batch` rows and two full heads per token; the engine one step of
    `2 * batch` rows and one visual-slice head: on a memory-bound CPU that ratio bounds the speed-up.
    """
    from transformers import DynamicCache

    def decoder_ms(rows: int) -> float:
        cache = DynamicCache(config=lm.config)
        lm.model(torch.randint(0, 1000, (rows, context)), past_key_values=cache, use_cache=True)
        token = torch.randint(0, 1000, (rows, 1))
        start = time.perf_counter()
        for i in range(steps):
            lm.model(token, position_ids=torch.full((rows, 1), context + i), past_key_values=cache, use_cache=True)
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
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 4x4 tokens, batch 1 and 2")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.intermediate, args.layers, args.text_vocab, args.codebook = 64, 128, 2, 2000, 512
        args.grid, args.batches = 4, [1, 2]

    lm, native = build_models(args)
    ids = token_ids_from_config(lm.config)
    methods = {
        "(a) BAAI recipe, transformers generate, emu3-hf model": lambda *a: run_recipe(lm, ids, *a),
        "(b) BAAI recipe, transformers native Emu3": lambda *a: run_recipe(native, ids, *a),
        "(c) emu3-hf engine": lambda *a: run_engine(lm, ids, *a),
    }
    params = sum(p.numel() for p in lm.parameters())
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, vocab {lm.config.vocab_size} (codebook {args.codebook}), "
        f"{params / 1e6:.1f}M params, float32, sdpa; image {args.grid}x{args.grid} tokens "
        f"({args.grid * (args.grid + 1) + 3} generated per image); CFG 3.0, top-k 2048 sampling; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    # Same work: greedy tokens agree on a small grid (also warms every path up).
    with torch.no_grad():
        pos, neg = make_prompts(lm.config, 2, 3, seed=1)
        outs = [fn(pos, neg, 3, False, 0) for fn in methods.values()]
    assert all(torch.equal(outs[0], o) for o in outs[1:]), "the three methods disagree on greedy tokens"
    print("check: greedy tokens identical across (a), (b), (c) on a 3x3 grid, batch 2")

    rows = []
    for batch in args.batches:
        pos, neg = make_prompts(lm.config, batch, args.grid)
        times = {}
        for name, fn in methods.items():
            start = time.perf_counter()
            with torch.no_grad():
                seqs = fn(pos, neg, args.grid, True, 0)
            times[name] = (time.perf_counter() - start) / batch
            assert seqs.shape[1] == pos.shape[1] + args.grid * (args.grid + 1) + 3
            print(f"  batch {batch}: {name}: {times[name]:.2f} s/image", flush=True)
        rows.append((batch, times))

    print("\nper-token anatomy (ms):")
    for batch in args.batches:
        print("  " + ", ".join(f"{k}: {v:.1f}" for k, v in step_anatomy(lm, batch).items()))

    names = list(methods)
    print("\n| batch | " + " | ".join(f"{n} s/image" for n in names) + " | (a)/(c) | (b)/(c) |")
    print("|---|" + "---|" * (len(names) + 2))
    for batch, times in rows:
        cells = " | ".join(f"{times[n]:.2f}" for n in names)
        fast = times[names[2]]
        print(f"| {batch} | {cells} | {times[names[0]] / fast:.1f}x | {times[names[1]] / fast:.1f}x |")


if __name__ == "__main__":
    main()
