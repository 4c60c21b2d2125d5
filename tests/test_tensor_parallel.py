"""Tensor parallelism of the LM through transformers' own mechanism (the config's ``base_model_tp_plan``, the head's
``_tp_plan``, ``tp_plan="auto"``), under ``torchrun`` with two CPU processes (gloo): every process gets the logits and
the greedy images one process computes alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from packaging import version

from test_training_distributed import free_port  # noqa: E402

PIPELINE = Path(__file__).parent / "fixtures" / "baai-tiny-pipeline"

SCRIPT = """
import json, os, sys, torch
from emu3_hf.modeling.modeling_emu3 import Emu3LMForCausalLM
from emu3_hf.pipelines import Emu3Pipeline

folder = sys.argv[1]
try:
    from transformers.distributed import DistributedConfig
    tp = dict(distributed_config=DistributedConfig(tp_plan="auto"))
except ImportError:  # transformers releases before DistributedConfig take tp_plan directly
    tp = dict(tp_plan="auto")
sharded = Emu3LMForCausalLM.from_pretrained(folder + "/model", **tp)
whole = Emu3LMForCausalLM.from_pretrained(folder + "/model")
ids = torch.tensor([[1806, 17, 300, 42, 9, 1000, 1809]])
with torch.no_grad():
    logits_gap = (sharded(ids).logits - whole(ids).logits).abs().max().item()
call = dict(prompt=["a red circle", "a small blue square"], height=6, width=8, do_sample=False, guidance_scale=2.0,
            output_type="np")
tp_pipe, pipe = Emu3Pipeline.from_pretrained(folder, model=sharded), Emu3Pipeline.from_pretrained(folder)
for p in (tp_pipe, pipe):
    p.set_progress_bar_config(disable=True)
a, b = tp_pipe(**call), pipe(**call)
print(json.dumps(dict(rank=int(os.environ["RANK"]), sharded=type(sharded.model.layers[0].mlp.up_proj.weight).__name__,
                      local_rows=sharded.model.layers[0].mlp.up_proj.weight.to_local().shape[0],
                      rows=whole.model.layers[0].mlp.up_proj.weight.shape[0], logits_gap=logits_gap,
                      same_codes=torch.equal(a.codes, b.codes), same_pixels=bool((a.images == b.images).all()))))
"""


@pytest.mark.skipif(version.parse(transformers.__version__) < version.parse("5.21"),
                    reason="transformers < 5.21 refuses to split an LM head whose vocabulary (2067 here) the TP size "
                           "does not divide ('must be divisible by the tensor parallel size'); 5.21 splits it unevenly")
def test_tp_plan_auto_on_two_processes_equals_one_process(tmp_path):
    script = tmp_path / "tp.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(script), str(PIPELINE)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = sorted((json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")),
                     key=lambda r: r["rank"])  # fmt: skip
    assert [r["rank"] for r in reports] == [0, 1]
    for report in reports:
        assert report["sharded"] == "DTensor" and report["local_rows"] * 2 == report["rows"]  # really split
        assert report["logits_gap"] < 1e-4
        assert report["same_codes"] and report["same_pixels"]
