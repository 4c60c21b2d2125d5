"""The GPU training check (bench/bench_gpu_train.py) runs its --tiny dry run on the CPU: a pipeline folder with random
weights, one process per method, one JSON record; methods the machine cannot run are recorded with their error."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).parents[1] / "bench"


def test_tiny_dry_run_records_lora_steps_and_refused_methods(tmp_path):
    out = tmp_path / "train.json"
    command = [sys.executable, str(BENCH / "bench_gpu_train.py"), "--tiny", "--methods", "lora", "qlora",
               "--steps", "2", "--pictures", "2", "--folder", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    lora, qlora = record["methods"]
    assert lora["method"] == "lora" and "error" not in lora, lora
    assert lora["steps"] == 2 and len(lora["losses"]) == 2 and all(math.isfinite(x) for x in lora["losses"])
    # the 8x8-token pictures make sequences of 8 rows of 9 tokens (8 codes + EOL) plus the prompt and the markers
    assert lora["tokens"] >= 2 * 2 * 8 * 9 and lora["tokens_per_s"] > 0 and lora["train_seconds"] > 0
    assert lora["peak_memory_gib"] > 0
    if not torch.cuda.is_available():
        assert "CUDA" in qlora["error"]
