"""Multi-process training through the documented launch (``accelerate launch --config_file
examples/accelerate/ddp.yaml -m emu3_cli train ...``), here with two processes on CPUs (gloo): DDP and FSDP2
(``--sharding fsdp2``) end where one process with the same global batch ends, and a two-process LoRA run resumed
from its checkpoint ends exactly where the uninterrupted run does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytest.importorskip("datasets", reason="training needs `pip install 'emu3-hf[train]'`")

from test_training import write_image_folder  # noqa: E402

from emu3_hf.training import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DDP_CONFIG = ROOT / "examples" / "accelerate" / "ddp.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, lm_dir, vq_dir, tiny_tokenizer_dir):
    """The tiny LM without attention dropout (so runs with different process counts can match), data, flags."""
    root = tmp_path_factory.mktemp("distributed")
    lm = root / "lm"
    shutil.copytree(lm_dir, lm)
    config = json.loads((lm / "config.json").read_text())
    config["attention_dropout"] = 0.0
    (lm / "config.json").write_text(json.dumps(config))
    data = write_image_folder(root / "data")
    common = ["--vq", str(vq_dir), "--tokenizer", str(tiny_tokenizer_dir), "--report-to", "none", "--quiet",
              "--null-prompt-prob", "0.3", "--seed", "0"]  # fmt: skip
    return {"root": root, "lm": lm, "data": data, "common": common}


def free_port() -> int:
    """A port nobody listens on now (older accelerate releases take --main_process_port 0 literally and hang)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(setup, output: Path, *flags: str) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG), "--main_process_port",
               str(free_port()), "-m", "emu3_cli", "train", str(setup["data"]), "--model", str(setup["lm"]), "-o", str(output),
               *setup["common"], *flags]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("steps; training loss") == 1  # process 0 reports, once
    assert json.loads((output / "training_config.json").read_text())["num_processes"] == 2  # the yaml's count


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):  # the shards of one model folder
        out.update(load_file(str(file)))
    return out


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ddp_and_fsdp2_end_where_one_process_ends(setup, vq_dir, tiny_tokenizer_dir, mode):
    """Full: every weight; LoRA: the adapter, whose random initial A matrices must be the same draw on every rank
    (fully_shard keeps each rank's own shard, where DDP broadcasts rank 0's)."""
    root = setup["root"] / mode
    lora = mode == "lora"
    single = train(model=str(setup["lm"]), vq=str(vq_dir), tokenizer=str(tiny_tokenizer_dir), data=str(setup["data"]),
                   output_dir=str(root / "single"), lora=lora, lora_rank=4, lora_dropout=0.0, per_device_batch_size=4,
                   max_steps=3, learning_rate=1e-2 if lora else 1e-3, null_prompt_prob=0.3, report_to="none",
                   show_progress=False, seed=0)  # fmt: skip
    flags = ["--batch-size", "2", "--max-steps", "3"]  # 2 per process x 2 = 4
    flags += ["--lora-rank", "4", "--lora-dropout", "0", "--lr", "1e-2"] if lora else ["--full", "--lr", "1e-3"]
    launch(setup, root / "ddp", *flags)
    launch(setup, root / "fsdp2", *flags, "--sharding", "fsdp2")
    expected = weights(Path(single.output_dir) / ("" if lora else "model"))
    assert len(expected) > 10
    for run in ("ddp", "fsdp2"):
        got = weights(root / run / ("" if lora else "model"))
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], atol=2e-5, rtol=0, msg=f"{run}: {name}")
        record = json.loads((root / run / "training_config.json").read_text())
        torch.testing.assert_close(torch.tensor(record["losses"]), torch.tensor(single.losses), atol=1e-5, rtol=0)


def test_two_process_lora_resumes_exactly(setup):
    root = setup["root"]
    lora = ["--batch-size", "1", "--max-steps", "4", "--save-steps", "2", "--lr", "1e-2", "--lora-dropout", "0.1",
            "--lora-rank", "4", "--sharding", "fsdp2"]  # fmt: skip
    launch(setup, root / "lora", *lora)
    assert (root / "lora" / "checkpoint-2" / "trainable.safetensors").is_file()
    launch(setup, root / "lora-resumed", *lora, "--resume", str(root / "lora" / "checkpoint-2"),
           "--cache-dir", str(root / "lora" / "vq-cache"))  # fmt: skip
    expected = load_file(str(root / "lora" / "adapter_model.safetensors"))
    got = load_file(str(root / "lora-resumed" / "adapter_model.safetensors"))
    assert got.keys() == expected.keys() and len(expected) > 0
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    first = json.loads((root / "lora" / "training_config.json").read_text())["losses"]
    assert json.loads((root / "lora-resumed" / "training_config.json").read_text())["losses"] == first
