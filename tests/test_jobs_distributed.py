"""A generation job under ``accelerate launch`` with two processes on CPUs (gloo) finishes an interrupted
one-process run and writes exactly the files one uninterrupted process writes: same names, same metadata, same
pixels; process 0 alone reports and writes metadata.jsonl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_jobs import PIPELINE, ROWS, SAMPLING, DiesAfter, Interrupted, metadata  # noqa: E402
from test_training_distributed import DDP_CONFIG, free_port  # noqa: E402

from emu3_hf.jobs import generate_images  # noqa: E402
from emu3_hf.pipelines import Emu3Pipeline  # noqa: E402


def test_two_processes_finish_an_interrupted_run_as_one_process_would(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    pipe = Emu3Pipeline.from_pretrained(PIPELINE)
    run = dict(show_progress=False, seed=5, model=str(PIPELINE), **SAMPLING)
    generate_images(pipe, prompts, tmp_path / "one", batch_size=3, **run)
    with pytest.raises(Interrupted):  # a run killed after its first batch: 2 of 5 images written
        generate_images(DiesAfter(pipe, 1), prompts, tmp_path / "two", batch_size=2, **run)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
               "--main_process_port", str(free_port()), "-m", "emu3_cli", "generate", "--prompts", str(prompts),
               "-o", str(tmp_path / "two"), "--model", str(PIPELINE), "--sample", "--top-k", "40", "--guidance-scale",
               "2", "--seed", "5", "--batch-size", "1", "--quiet"]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("5 images (2 already there)") == 1  # process 0 reports, once
    assert metadata(tmp_path / "two") == metadata(tmp_path / "one")
    for line in metadata(tmp_path / "one"):
        a, b = (np.asarray(Image.open(tmp_path / run_ / line["file_name"])) for run_ in ("one", "two"))
        assert np.array_equal(a, b), line["file_name"]
    assert sorted(p.name for p in Path(tmp_path / "two").iterdir() if not p.name.startswith(".")) == sorted(
        [line["file_name"] for line in metadata(tmp_path / "one")] + ["metadata.jsonl"])
