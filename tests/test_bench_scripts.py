"""The GPU benchmark script parses its arguments, runs its --tiny smoke mode on the CPU and writes one JSON record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[1] / "bench"


@pytest.fixture()
def bench_gpu(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_gpu
    import bench_results

    monkeypatch.setattr(bench_results, "RESULTS", tmp_path)
    return bench_gpu


def test_arguments_and_defaults(bench_gpu):
    args = bench_gpu.parse_args([])
    assert (args.side, args.rows, args.batches, args.methods) == (90, [2, 6], [1, 4], list("abcdef"))
    tiny = bench_gpu.parse_args(["--tiny", "--methods", "c", "e"])
    assert (tiny.side, tiny.rows, tiny.methods) == (8, [2, 4], ["c", "e"])
    with pytest.raises(SystemExit):
        bench_gpu.parse_args(["--rows", "91"])


def test_real_config_is_baai_8b(bench_gpu):
    config = bench_gpu.lm_config(tiny=False)
    lm = bench_gpu.build_lm(config, torch.device("meta"), torch.bfloat16)  # shapes only, no memory
    assert 8.0e9 < sum(p.numel() for p in lm.parameters()) < 8.6e9
    assert (config.visual_token_offset, config.codebook_size) == (151854, 32768)
    floor = bench_gpu.bandwidth_floor(lm, 30, 90, 1, 3e12)  # ~15 GB a step at 3 TB/s, 8189 steps: ~40 s
    assert 35 < floor < 50


def test_tiny_smoke_run_writes_a_record(bench_gpu, tmp_path, capsys):
    bench_gpu.main(["--tiny", "--methods", "c", "e", "--batches", "1", "--device", "cpu"])
    (record,) = [json.loads(p.read_text()) for p in tmp_path.glob("gpu-*.json")]
    assert set(record["seconds_per_image"]) == {"c", "e"}
    assert record["vq_decode"]["pixels"] == [64, 64]
    assert "| (e) engine, compiled + speculative Jacobi decoding |" in capsys.readouterr().out

