"""Small-M matrix products on the CPU: why a 2-row (CFG) decode step costs more than two 1-row steps here.

Times ``F.linear(x, W)`` (what ``nn.Linear`` runs) against ``(W @ x.T).T`` and ``x @ W.T.contiguous()`` for
decode-sized inputs (M = 1..8 rows) and the LM shapes of bench/bench_generation.py.

Usage: python bench/bench_cpu_linear.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def timed(fn, reps: int = 200) -> float:
    for _ in range(20):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6  # microseconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("| in -> out | rows | F.linear us | (W @ x.T).T us | x @ W.T (contiguous) us |")
    print("|---|---|---|---|---|")
    for n_in, n_out in ((512, 1408), (1408, 512), (512, 8192)):
        w = torch.randn(n_out, n_in)
        wt = w.t().contiguous()
        for rows in (1, 2, 4, 8):
            x = torch.randn(rows, n_in)
            a = timed(lambda: F.linear(x, w))
            b = timed(lambda: (w @ x.T).T)
            c = timed(lambda: x @ wt)
            print(f"| {n_in} -> {n_out} | {rows} | {a:.0f} | {b:.0f} | {c:.0f} |")


if __name__ == "__main__":
    main()
