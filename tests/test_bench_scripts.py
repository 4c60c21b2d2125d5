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



def test_rows_are_the_first_rows_of_the_whole_image(bench_gpu):
    """A method timed on N rows runs the whole image's request and stops: its tokens are the full image's first."""
    config = bench_gpu.lm_config(tiny=True)
    lm = bench_gpu.build_lm(config, torch.device("cpu"), torch.float32)
    ids = bench_gpu.token_ids_from_config(config)
    pos, neg = bench_gpu.make_prompts(config, 1, 8)
    with torch.no_grad():
        whole = bench_gpu.run_engine(lm, ids, pos, neg, 8, 8, compile_decode=False).generated_ids
        two = bench_gpu.run_engine(lm, ids, pos, neg, 2, 8, compile_decode=False).generated_ids
    assert two.shape[1] == 2 * 9 and torch.equal(two, whole[:, : two.shape[1]])  # 2 rows of 8 codes + EOL


def test_a_failing_method_keeps_the_others_and_the_record_reports_again(bench_gpu, tmp_path, capsys, monkeypatch):
    real = bench_gpu.run_engine

    def no_graphs(*args, **options):
        if options.get("compile_decode"):
            raise RuntimeError("no graphs today")
        return real(*args, **options)

    monkeypatch.setattr(bench_gpu, "run_engine", no_graphs)
    out = tmp_path / "partial.json"
    bench_gpu.main(["--tiny", "--methods", "d", "c", "--batches", "1", "--device", "cpu", "--out", str(out)])
    record = json.loads(out.read_text())
    assert set(record["results"]) == {"c"} and "no graphs today" in record["errors"]["d/1"]
    capsys.readouterr()
    bench_gpu.main(["--report", str(out)])
    printed = capsys.readouterr().out
    assert "| (c) emu3-hf engine, eager |" in printed and "FAILED d/1: RuntimeError: no graphs today" in printed
