"""`import emu3_hf` registers our classes with transformers' Auto classes by plain calls (no import hook) and loads
nothing else heavy: diffusers, peft, datasets and our pipelines, training, conversion and hub code load only when
something needs them. Each check runs in a fresh interpreter, in each order of importing transformers and emu3_hf."""

import subprocess
import sys
from pathlib import Path

import pytest

import emu3_hf
import emu3_hf.modeling
import emu3_hf.processing

FIXTURES = Path(__file__).parent / "fixtures"
# BAAI's tiny random checkpoints: the LM and VQ folders as BAAI lays them out, and as one folder with the tokenizer
# and image processor (scripts/build_random_tiny_pipeline.py); transformers' native layout of the same LM.
BAAI_LM, BAAI_VQ = FIXTURES / "baai-tiny" / "lm", FIXTURES / "baai-tiny" / "vq"
FIXTURE_PIPELINE = FIXTURES / "baai-tiny-pipeline"
NATIVE = FIXTURES / "baai-tiny" / "hf-native"


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Each costs a second or more to import, and `import emu3_hf` needs none of them.
DEFERRED = [
    "diffusers",
    "peft",
    "datasets",
    "emu3_hf.pipelines",
    "emu3_hf.training",
    "emu3_hf.conversion",
    "emu3_hf.hub",
    "emu3_hf.tiny_world",
]


def test_import_loads_none_of_the_heavy_modules_and_installs_no_import_hook():
    out = _run(
        "import sys, emu3_hf\n"
        "hooks = [getattr(h, '__module__', None) or type(h).__module__ for h in sys.meta_path + sys.path_hooks]\n"
        f"print([m for m in {DEFERRED!r} if m in sys.modules], [h for h in hooks if h.startswith('emu3_hf')])"
    )
    assert out == "[] []"  # (torch and friends add their own finders; we add none)


_IMPORTS = {
    "emu3_hf first": "import emu3_hf\nimport transformers\n"
    "from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor\n"
    "from transformers import AutoTokenizer",
    "transformers' Auto classes first": "import transformers\n"
    "from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor\n"
    "from transformers import AutoTokenizer\nimport transformers.modeling_layers\nimport emu3_hf",
}
# Every Auto class resolves BAAI's folders and the embedded model to our classes; transformers' native "emu3" layout
# still loads transformers' own classes.
_LOADS = f"""
import sys, tempfile
from pathlib import Path
import emu3_hf as e
from emu3_hf.tiny_world import EMU3_TINY
from transformers import CONFIG_MAPPING
assert CONFIG_MAPPING["Emu3"] is e.Emu3LMConfig and CONFIG_MAPPING["Emu3VisionVQ"] is e.Emu3VisionVQConfig
root = Path({str(FIXTURE_PIPELINE)!r})
loaded = [
    AutoModelForCausalLM.from_pretrained({str(BAAI_LM)!r}), AutoModel.from_pretrained({str(BAAI_LM)!r}),
    AutoModel.from_pretrained({str(BAAI_VQ)!r}), AutoImageProcessor.from_pretrained({str(BAAI_VQ)!r}),
    AutoTokenizer.from_pretrained(root / "tokenizer"),
    AutoModelForCausalLM.from_pretrained(EMU3_TINY / "model"), AutoModel.from_pretrained(EMU3_TINY / "vq_model"),
    AutoTokenizer.from_pretrained(EMU3_TINY / "tokenizer"), AutoImageProcessor.from_pretrained(EMU3_TINY / "image_processor"),
]
with tempfile.TemporaryDirectory() as d:
    e.Emu3Processor(loaded[3], loaded[4]).save_pretrained(d)
    (Path(d) / "config.json").write_text((root / "model" / "config.json").read_text())
    loaded.append(AutoProcessor.from_pretrained(d))
native = AutoConfig.from_pretrained({str(NATIVE)!r})
print(*(type(x).__name__ for x in loaded), type(native).__module__, "diffusers" in sys.modules)
"""


@pytest.mark.parametrize("order", list(_IMPORTS))
def test_our_folders_load_through_every_auto_class_in_either_import_order(order):
    out = _run(_IMPORTS[order] + _LOADS).splitlines()[-1]
    assert out.split() == [
        "Emu3LMForCausalLM", "Emu3LMModel", "Emu3VisionVQModel", "Emu3VisionVQImageProcessor", "Emu3Tokenizer",
        "Emu3LMForCausalLM", "Emu3VisionVQModel", "Emu3Tokenizer", "Emu3VisionVQImageProcessor",
        "Emu3MultimodalProcessor", "transformers.models.emu3.configuration_emu3", "False",
    ]  # fmt: skip


@pytest.mark.parametrize("package", [emu3_hf, emu3_hf.modeling, emu3_hf.processing], ids=lambda m: m.__name__)
def test_every_public_name_resolves_and_is_listed(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
    assert emu3_hf.Emu3Processor is emu3_hf.Emu3MultimodalProcessor
    with pytest.raises(AttributeError, match="NoSuchThing"):
        package.NoSuchThing  # noqa: B018


def test_pipelines_load_on_first_access():
    out = _run(
        "import emu3_hf\nfrom emu3_hf import Emu3Pipeline\n"
        "print(Emu3Pipeline.__module__, emu3_hf.Emu3ChatPipeline.__name__)"
    )
    assert out == "emu3_hf.pipelines.pipeline_emu3 Emu3ChatPipeline"


def test_register_auto_classes_can_run_again():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    emu3_hf.register_auto_classes()
    assert MODEL_FOR_CAUSAL_LM_MAPPING[emu3_hf.Emu3LMConfig] is emu3_hf.Emu3LMForCausalLM
