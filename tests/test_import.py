"""`import emu3_hf` stays light: it registers the Auto classes (needs torch + transformers) and nothing more; the
diffusers pipelines load on first access."""

import subprocess
import sys


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_registers_auto_classes_without_diffusers():
    out = _run(
        "import sys, emu3_hf\n"
        "from transformers import CONFIG_MAPPING\n"
        "print('diffusers' in sys.modules, CONFIG_MAPPING['Emu3'].__name__, CONFIG_MAPPING['Emu3VisionVQ'].__name__)"
    )
    assert out == "False Emu3LMConfig Emu3VisionVQConfig"


def test_pipelines_load_on_first_access():
    out = _run("import emu3_hf\nfrom emu3_hf import Emu3Pipeline\nprint(Emu3Pipeline.__module__, emu3_hf.Emu3ChatPipeline.__name__)")
    assert out == "emu3_hf.pipelines.pipeline_emu3 Emu3ChatPipeline"
    _run("import emu3_hf\ntry:\n    emu3_hf.NoSuchThing\nexcept AttributeError as e:\n    assert 'NoSuchThing' in str(e)")
