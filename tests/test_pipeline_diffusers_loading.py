"""diffusers' generic entry point, ``DiffusionPipeline.from_pretrained(folder)``, returns Emu3's pipelines.

The reference is our own class loading the same folder: same class, same weights, same generated codes. The
embedded model's folder (written before the registration existed, and not rewritten for it) must load too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline

import emu3_hf
from emu3_hf.pipelines import Emu3ChatPipeline, Emu3Pipeline, Emu3VideoPipeline, register_diffusers_pipelines
from emu3_hf.tiny_world import EMU3_TINY

PROMPT = "a small red circle in the top left corner on a black background"


@pytest.fixture(scope="module")
def embedded():
    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _codes(pipe) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, do_sample=False, guidance_scale=1.0, output_type="tokens").codes


def test_the_shipped_folder_loads_through_diffusers_unchanged(embedded):
    index = json.loads((EMU3_TINY / "model_index.json").read_text())
    assert index["_class_name"] == "Emu3Pipeline"  # the folder as shipped: a bare class name, no code files
    pipe = DiffusionPipeline.from_pretrained(EMU3_TINY)
    assert type(pipe) is Emu3Pipeline
    assert torch.equal(_codes(pipe), _codes(embedded))


@pytest.mark.parametrize("cls", [Emu3Pipeline, Emu3VideoPipeline, Emu3ChatPipeline])
def test_each_saved_pipeline_comes_back_as_its_own_class(embedded, tmp_path, cls):
    cls(**embedded.components).save_pretrained(tmp_path / "pipe")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert type(pipe) is cls
    for name in ("model", "vq_model"):
        ours, theirs = embedded.components[name].state_dict(), getattr(pipe, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_fresh_interpreter_needs_only_the_documented_import(embedded, tmp_path):
    """No test-session state: `import emu3_hf.pipelines`, then diffusers' two lines, in a new process."""
    script = (
        "import sys, torch\n"
        "import emu3_hf.pipelines\n"
        "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained(sys.argv[1])\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        f"codes = pipe({PROMPT!r}, do_sample=False, guidance_scale=1.0, output_type='tokens').codes\n"
        "torch.save({'class': type(pipe).__name__, 'codes': codes}, sys.argv[2])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(emu3_hf.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script, str(EMU3_TINY), str(tmp_path / "out.pt")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["class"] == "Emu3Pipeline"
    assert torch.equal(out["codes"], _codes(embedded))


def test_registration_refuses_what_it_cannot_register():
    with pytest.raises(TypeError, match="DiffusionPipeline subclasses, got"):
        register_diffusers_pipelines(int)
    impostor = type("StableDiffusionPipeline", (DiffusionPipeline,), {})  # a name diffusers owns
    with pytest.raises(ValueError, match="diffusers already defines StableDiffusionPipeline"):
        register_diffusers_pipelines(impostor)
    import diffusers

    assert diffusers.StableDiffusionPipeline is not impostor
    register_diffusers_pipelines()  # idempotent
    assert diffusers.Emu3Pipeline is Emu3Pipeline
