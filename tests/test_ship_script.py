"""scripts/ship_embedded_model.py stores the shipped pipeline's weights in float16; they still load and compute in
float32, equal to the float32 weights rounded to float16."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "tests" / "fixtures" / "baai-tiny-pipeline"


def _script():
    spec = importlib.util.spec_from_file_location("ship_embedded_model", ROOT / "scripts" / "ship_embedded_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_half_stored_weights_load_in_float32_as_the_rounded_originals(tmp_path):
    from emu3_hf.pipelines import Emu3Pipeline

    folder = Path(shutil.copytree(PIPELINE, tmp_path / "pipe"))
    original = Emu3Pipeline.from_pretrained(PIPELINE)
    _script().store_weights_in_float16(folder)
    assert (folder / "model" / "model.safetensors").stat().st_size < 0.6 * (
        PIPELINE / "model" / "model.safetensors"
    ).stat().st_size
    halved = Emu3Pipeline.from_pretrained(folder)
    for name in ("model", "vq_model"):
        before, after = getattr(original, name).state_dict(), getattr(halved, name).state_dict()
        assert before.keys() == after.keys()
        for key, value in before.items():
            assert after[key].dtype == value.dtype, key  # computed in the config's float32
            expected = value.half().to(value.dtype) if value.is_floating_point() else value
            assert torch.equal(after[key], expected), key


def test_it_refuses_a_component_whose_config_would_load_it_in_float16(tmp_path):
    folder = Path(shutil.copytree(PIPELINE, tmp_path / "pipe"))
    config = json.loads((folder / "vq_model" / "config.json").read_text())
    (folder / "vq_model" / "config.json").write_text(json.dumps({**config, "dtype": "float16"}))
    before = (folder / "model" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match='must say "dtype": "float32"'):
        _script().store_weights_in_float16(folder)
    assert (folder / "model" / "model.safetensors").read_bytes() == before  # checked before anything is rewritten
