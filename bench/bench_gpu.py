"""GPU speed table of issue 13: BAAI's 8B Emu3-Gen configuration with random bf16 weights, 720x720 images.

The image is 90x90 tokens (8193 generated per image), CFG 3.0, top-k 2048 sampling, batch 1 and 4:

(a) BAAI's recipe: transformers ``generate`` + CFG logits processor + BAAI's prefix rule, on our model;
(b) the same recipe on transformers' native ``Emu3ForConditionalGeneration``;
(c) the emu3-hf engine, eager (dynamic cache);
(d) the engine with the compiled decode step (static cache, CUDA graphs);
(e) (d) with speculative Jacobi decoding (``--window`` drafts a pass, compiled fixed-size windows);
(f) (d) on 4-bit weights (torchao int4 tinygemm, or bitsandbytes nf4 with ``--four-bit bnb``).

Each method starts a whole 90x90 image and is stopped after N1 and after N2 rows (``--rows``; the engine's row
callback returns ``RowUpdate(stop=True)``, so the static cache and the compiled graphs have the whole image's
shapes; the recipes (a)/(b) generate N-row images). One untimed run of N1 rows comes first (compiles (d)-(f)).
Seconds per full image are extrapolated linearly in rows, ``t(N1) + (90 - N1) * slope`` (for the dynamic caches
of (a)-(c) attention grows with the context, a few percent of a step at this size, so those slightly under-count;
``--rows 90`` measures whole images). Also: VQ decode of a 720x720 image (BAAI's VQ config, random weights), peak
GPU memory per method, the device's copy bandwidth and the bandwidth floor of one token per step (weights + KV
cache read per step). Writes bench/results/gpu-<time>.json (``--out``: also there, rewritten after each method, so
a run cut short keeps what it measured) and prints markdown tables.

Usage:
    python bench/bench_gpu.py                      # the table (needs a GPU with >= 40 GB)
    python bench/bench_gpu.py --rows 90 --methods c d e f   # whole images for the engine's variants
    python bench/bench_gpu.py --tiny               # smoke run on any device (tiny model, 8x8 tokens)
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch
from bench_generation import make_prompts
from bench_results import machine, save_result

from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM, Emu3VisionVQConfig, Emu3VisionVQModel
from emu3_hf.generation import RowUpdate, generate_image_tokens, sequence_length, token_ids_from_config
from emu3_hf.generation.quantization import quantize_weights, weight_bytes
from emu3_hf.generation.transformers_recipe import generate_with_transformers
from emu3_hf.utils.atomic import atomic_file

METHODS = {
    "a": "(a) BAAI recipe, transformers generate, emu3-hf model",
    "b": "(b) BAAI recipe, transformers native Emu3",
    "c": "(c) emu3-hf engine, eager",
    "d": "(d) engine, compiled decode step (CUDA graphs)",
    "e": "(e) engine, compiled + speculative Jacobi decoding",
    "f": "(f) engine, 4-bit weights (torchao int4 tinygemm, or bitsandbytes nf4)",
}


def lm_config(tiny: bool) -> Emu3LMConfig:
    """BAAI's Emu3-Gen (8B) LM config, or a tiny one with the same special-id layout."""
    if tiny:
        t = 2000
        sizes = dict(vocab_size=t + 211 + 512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)  # fmt: skip
    else:
        t = 151643  # Qwen's text ids, then 208 specials (BAAI's vocabulary: 184622 = 151854 + 32768)
        sizes = dict(vocab_size=184622, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=9216)  # fmt: skip
    return Emu3LMConfig(
        **sizes, rope_theta=1e6, pad_token_id=t, bos_token_id=t + 206, eos_token_id=t + 207, img_token_id=t + 208,
        boi_token_id=t + 209, eoi_token_id=t + 210, eol_token_id=t + 203, eof_token_id=t + 204,
        attn_implementation="sdpa",
    )  # fmt: skip


def vq_config(tiny: bool) -> Emu3VisionVQConfig:
    if tiny:
        return Emu3VisionVQConfig(codebook_size=512, embed_dim=4, z_channels=4, ch=32, ch_mult=[1, 1, 1, 1],
                                  num_res_blocks=1, attn_resolutions=[3])  # fmt: skip
    return Emu3VisionVQConfig()  # BAAI's Emu3-VisionTokenizer: codebook 32768, ch 256, ch_mult [1, 2, 2, 4]


def build_lm(config: Emu3LMConfig, device: torch.device, dtype: torch.dtype) -> Emu3LMForCausalLM:
    """Random weights (normal, std initializer_range) built straight on ``device`` in ``dtype``."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return Emu3LMForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, gib: float) -> float:
    """Bytes per second of a device-to-device copy (read + write counted), best of 5."""
    source = torch.empty(int(gib * 2**30), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(5):
        synchronize(device)
        start = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    del source, target
    return 2 * gib * 2**30 / best


def bandwidth_floor(lm, prompt_len: int, side: int, batch: int, bandwidth: float) -> float:
    """Seconds per image if each decode step only read the weights it needs (decoder + visual rows of the head)
    and the KV cache so far, at ``bandwidth``; one token per step, CFG doubling the rows."""
    config, ids = lm.config, token_ids_from_config(lm.config)
    head = lm.get_output_embeddings().weight
    weights = weight_bytes(lm.model) - weight_bytes(lm.model.embed_tokens)
    weights += head.shape[1] * ids.codebook_size * head.element_size()
    head_dim = config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * head.element_size()
    steps = sequence_length(side, side) - 4  # tokens fed after the prefill
    kv_total = kv_per_token * 2 * batch * sum(prompt_len + s for s in range(steps))
    return (steps * weights + kv_total) / bandwidth / batch


def run_engine(lm, ids, pos, neg, rows, side, **options):
    """The engine on a ``side`` x ``side`` image, stopped once ``rows`` rows are done (whole-image shapes)."""

    def stop_after_rows(progress):
        return RowUpdate(stop=min(progress.rows_done) >= rows)

    return generate_image_tokens(lm, pos, negative_input_ids=neg, height=side, width=side, top_k=2048,
                                 generator=torch.Generator(pos.device).manual_seed(0), token_ids=ids,
                                 callback=stop_after_rows if rows < side else None, **options)  # fmt: skip


def run_recipe(model, ids, pos, neg, rows, width):
    torch.manual_seed(0)
    return generate_with_transformers(model, pos, negative_input_ids=neg, height=rows, width=width, top_k=2048,
                                      token_ids=ids)


def time_method(fn, device, row_counts: list[int]) -> dict:
    """One untimed run of the fewest rows (compiles, fills allocator caches: every row count has the whole image's
    shapes), then each row count timed once; peak memory of the largest."""
    out = {}
    fn(min(row_counts))
    for rows in row_counts:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        fn(rows)
        synchronize(device)
        out[rows] = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"seconds": out, "peak_bytes": peak}


def extrapolate(seconds: dict[int, float], side: int) -> float:
    (r1, t1), (r2, t2) = sorted(seconds.items())[0], sorted(seconds.items())[-1]
    if r1 == r2 or r2 == side:
        return t2 * side / r2
    return t1 + (t2 - t1) / (r2 - r1) * (side - r1)


def tokens_per_pass(lm, fn) -> float:
    calls: list[int] = []
    handle = lm.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        steps = fn().generated_ids.shape[1]
    finally:
        handle.remove()
    return steps / (len(calls) - 1)


def vq_decode_seconds(device, dtype, tiny: bool, side: int) -> dict:
    torch.manual_seed(0)
    with torch.device(device):
        vq = Emu3VisionVQModel(vq_config(tiny)).eval().to(dtype)
    codes = torch.randint(0, vq.config.codebook_size, (1, side, side), device=device)
    with torch.no_grad():
        vq.decode(codes)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        start = time.perf_counter()
        image = vq.decode(codes)
        synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"seconds": seconds, "pixels": list(image.shape[-2:]), "peak_bytes": peak}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny model and VQ, 8x8 tokens, any device")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--side", type=int, default=None, help="image side in tokens (default 90; 8 with --tiny)")
    parser.add_argument("--rows", type=int, nargs="+", default=None,
                        help="rows timed per method (default 2 6; 2 4 with --tiny); one value = side: whole images")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--window", type=int, default=16, help="draft tokens per pass for (e)")
    parser.add_argument("--four-bit", choices=["torchao", "torchao-eager", "bnb"], default="torchao",
                        help="how (f) quantizes: torchao int4 compiled (default) or eager, or bitsandbytes nf4")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a saved (partial) record")
    parser.add_argument("--single-batch", nargs="*", default=[], choices=list(METHODS),
                        help="methods measured at the first of --batches only (device time is short)")
    parser.add_argument("--out", type=Path, default=None, help="also write the record here, after every method")
    parser.add_argument("--copy-gib", type=float, default=None, help="tensor size for the copy bandwidth (GiB)")
    args = parser.parse_args(argv)
    args.side = args.side or (8 if args.tiny else 90)
    args.rows = args.rows or ([2, 4] if args.tiny else [2, 6])
    args.copy_gib = args.copy_gib or (0.0625 if args.tiny else 2.0)
    if any(r < 1 or r > args.side for r in args.rows):
        parser.error(f"--rows must lie in [1, {args.side}], got {args.rows}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        state = json.loads(args.report.read_text())
        return report(state, save=False)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("The 8B table needs a CUDA device; run with --tiny for a smoke test elsewhere.")
    config = lm_config(args.tiny)
    settings = {**vars(args), "out": str(args.out), "report": None}
    state = {"machine_start": machine(), "settings": settings, "results": {}, "errors": {}}
    # The cheap measurements first, so a run cut short still has them.
    state["vq_decode"] = vq_decode_seconds(device, dtype, args.tiny, args.side)
    bandwidth = state["copy_bandwidth_bytes_per_s"] = copy_bandwidth(device, args.copy_gib)
    prompt_len = make_prompts(config, 1, args.side)[0].shape[1]
    float_lm = build_lm(config, "meta", dtype)  # the floor counts the float weights' bytes
    state["bandwidth_floor_seconds_per_image"] = {
        b: bandwidth_floor(float_lm, prompt_len, args.side, b, bandwidth) for b in args.batches
    }
    lm = build_lm(config, device, dtype)
    ids = token_ids_from_config(config)
    state["weight_bytes"] = {"float": weight_bytes(lm)}
    print(f"LM: {sum(p.numel() for p in lm.parameters()) / 1e9:.2f}B params, {dtype}, {device}; image {args.side}x"
          f"{args.side} tokens; rows timed {args.rows}; CFG 3.0, top-k 2048 sampling", flush=True)
    write_partial(args, state)

    def measure(key, fn_for_batch):
        for batch in [b for b in args.batches if key not in args.single_batch or b == args.batches[0]]:
            pos, neg = (t.to(device) for t in make_prompts(config, batch, args.side))
            fn = fn_for_batch(pos, neg)
            try:
                with torch.no_grad():
                    record = time_method(fn, device, args.rows)
                    if key == "e":
                        record["tokens_per_pass"] = tokens_per_pass(lm, lambda: run_engine(  # eager: hooks fire
                            lm, ids, pos, neg, max(args.rows), args.side, parallel_decoding="jacobi",
                            parallel_window=args.window, compile_decode=False))
            except Exception as error:  # one method failing must not lose the others' numbers
                state["errors"][f"{key}/{batch}"] = f"{type(error).__name__}: {error}"
                print(f"  batch {batch} {METHODS[key]}: FAILED {type(error).__name__}: {error}", flush=True)
                return
            state["results"].setdefault(key, {})[batch] = record
            print(f"  batch {batch} {METHODS[key]}: {record['seconds']}", flush=True)
            write_partial(args, state)

    def engine(model, **options):
        return lambda pos, neg: lambda rows: run_engine(model, ids, pos, neg, rows, args.side, **options)

    cuda = device.type == "cuda"
    for key in [k for k in args.methods if k != "f"]:  # (f) quantizes `lm` in place: it comes last
        if key == "a":
            measure(key, lambda pos, neg: lambda rows: run_recipe(lm, ids, pos, neg, rows, args.side))
        elif key == "b":  # native transformers: built for this method only, released after it
            native = native_model(lm, args.tiny, device, dtype)
            measure(key, lambda pos, neg: lambda rows: run_recipe(native, ids, pos, neg, rows, args.side))
            del native
            gc.collect()
        elif key == "c":
            measure(key, engine(lm, compile_decode=False))
        elif key == "d":
            measure(key, engine(lm, compile_decode=True))
        elif key == "e":
            measure(key, engine(lm, parallel_decoding="jacobi", parallel_window=args.window, compile_decode=cuda))
        if cuda:
            torch.cuda.empty_cache()
    if "f" in args.methods:
        lm = four_bit(lm, args, device)
        measure("f", engine(lm, compile_decode=args.four_bit == "torchao"))  # bnb layers and torchao-eager: eager
    state["weight_bytes"]["final"] = weight_bytes(lm)
    state["machine_end"] = machine()
    report(state, out=args.out)


def write_record(path: Path | None, record: dict) -> None:
    """Write ``record`` as JSON to ``path`` (``--out``; nothing when None), atomically."""
    if path:
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=2, default=str) + "\n")


def write_partial(args, state: dict) -> None:
    """Rewrite ``--out`` with what is measured so far (a run cut short keeps it)."""
    write_record(args.out, {**state, "partial": True})


def native_model(lm, tiny: bool, device, dtype):
    from emu3_hf.conversion import convert_baai_to_native

    with torch.device("meta"):
        vq = Emu3VisionVQModel(vq_config(tiny))
    vq = vq.to_empty(device=device).to(dtype)  # unused by the recipe; only its codebook size matters
    native = convert_baai_to_native(lm, vq).eval()
    native.config._attn_implementation = "sdpa"
    return native


def four_bit(lm, args, device):
    """(f)'s model: torchao int4 (in place), or bitsandbytes nf4 through transformers' ``quantization_config``
    (random weights saved to a temporary folder and loaded back, the way users load a checkpoint)."""
    if args.four_bit.startswith("torchao"):
        return quantize_weights(lm, "int4", group_size=32 if args.tiny else 128)
    import tempfile

    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        lm.save_pretrained(folder)
        return Emu3LMForCausalLM.from_pretrained(folder, quantization_config=quantization,
                                                 device_map=str(device)).eval()  # fmt: skip


def report(state: dict, out: Path | None = None, save: bool = True) -> None:
    """Print the markdown table of a finished (or partial, ``--report``) record; save it unless re-reporting."""
    settings, results = state["settings"], state["results"]
    side, rows, batches = settings["side"], settings["rows"], settings["batches"]
    rows_note = "measured" if max(rows) == side else f"extrapolated from {rows} rows"
    table = ["| method | " + " | ".join(f"batch {b} s/image" for b in batches)
             + " | peak GiB (batch 1) | tokens/pass | |", "|---|" + "---|" * (len(batches) + 3)]  # fmt: skip
    summary = {}
    for key in [k for k in METHODS if k in results]:
        per_batch = {int(b): extrapolate({int(n): t for n, t in r["seconds"].items()}, side) / int(b)
                     for b, r in results[key].items()}  # fmt: skip
        summary[key] = per_batch
        first = results[key][min(results[key], key=int)]
        peak = f"{first['peak_bytes'] / 2**30:.1f}" if first["peak_bytes"] else "-"
        tpp = f"{first['tokens_per_pass']:.2f}" if "tokens_per_pass" in first else "1"
        cells = [f"{per_batch[b]:.1f}" if b in per_batch else "-" for b in batches]
        table.append(f"| {METHODS[key]} | " + " | ".join(cells) + f" | {peak} | {tpp} | {rows_note} |")
    floors = {int(b): t for b, t in state["bandwidth_floor_seconds_per_image"].items()}
    bandwidth = state["copy_bandwidth_bytes_per_s"]
    table.append("| bandwidth floor, one token per step | " + " | ".join(f"{floors[b]:.1f}" for b in batches)
                 + f" | | 1 | copy bandwidth {bandwidth / 1e9:.0f} GB/s |")  # fmt: skip
    print("\n" + "\n".join(table))
    vq = state["vq_decode"]
    print(f"\nVQ decode of a {side}x{side}-token image -> {vq['pixels']} pixels: {vq['seconds']:.3f} s"
          + (f", peak {vq['peak_bytes'] / 2**30:.1f} GiB" if vq["peak_bytes"] else ""))
    weights = state.get("weight_bytes", {})
    print("weights (GiB): " + ", ".join(f"{k} {v / 2**30:.2f}" for k, v in weights.items()))
    for where, error in state.get("errors", {}).items():
        print(f"FAILED {where}: {error}")
    if not save:
        return
    record = {**state, "seconds_per_image": summary}
    write_record(out, record)
    print(f"result: {save_result('gpu', record)}")


if __name__ == "__main__":
    main()
