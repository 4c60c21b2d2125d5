"""`import emu3_hf` stays light: every public name loads its module on first access, and each of transformers' Auto
classes gets our classes when transformers imports its module; diffusers, peft, datasets, accelerate, torchao and
``transformers.modeling_utils`` load only when something needs them."""

import subprocess
import sys
from pathlib import Path

import pytest

import emu3_hf
import emu3_hf.modeling
import emu3_hf.processing


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# Each costs a second or more to import, and `import emu3_hf` needs none of them.
# BAAI's tiny random checkpoints as one folder (scripts/build_random_tiny_pipeline.py)
FIXTURE_PIPELINE = Path(__file__).parent / "fixtures" / "baai-tiny-pipeline"

DEFERRED = [
    "diffusers",
    "peft",
    "datasets",
    "accelerate",
    "torchao",
    "transformers.modeling_utils",
    "transformers.processing_utils",
    "transformers.image_processing_utils",
    "emu3_hf.pipelines",
    "emu3_hf.training",
    "emu3_hf.conversion",
    "emu3_hf.hub",
    "emu3_hf.modeling.modeling_emu3",
    "emu3_hf.processing.processing_emu3",
]


def test_import_loads_none_of_the_heavy_modules():
    out = _run(f"import sys, emu3_hf\nprint([m for m in {DEFERRED!r} if m in sys.modules])")
    assert out == "[]"


def test_import_registers_auto_classes_without_diffusers():
    out = _run(
        "import sys, emu3_hf\n"
        "from transformers import CONFIG_MAPPING\n"
        "print('diffusers' in sys.modules, CONFIG_MAPPING['Emu3'].__name__, CONFIG_MAPPING['Emu3VisionVQ'].__name__)"
    )
    assert out == "False Emu3LMConfig Emu3VisionVQConfig"


# Whatever imports transformers' Auto modules, and in whichever order, each one has our classes as soon as its import
# returns; `transformers.modeling_layers` imports AutoModel half way through its own import (the registration must
# wait for it), and so does our own model module.
_ORDERS = {
    "package first": "import emu3_hf\nimport transformers\n"
    "transformers.AutoConfig, transformers.AutoModel, transformers.AutoTokenizer\n"
    "from transformers import AutoImageProcessor, AutoProcessor",
    "auto classes first": "from transformers import AutoConfig, AutoModelForCausalLM, AutoImageProcessor\n"
    "from transformers import AutoProcessor\nimport emu3_hf",
    "a module importing AutoModel mid-import": "import emu3_hf\nimport transformers.modeling_layers",
    "our model class first": "import emu3_hf\nfrom emu3_hf import Emu3LMForCausalLM",
}
_CHECK = """
import sys
from emu3_hf import auto
imported = {m for m in auto._REGISTRATIONS if m in sys.modules}
assert imported and imported == auto._registered, (imported, auto._registered)
import emu3_hf as e
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
assert CONFIG_MAPPING["Emu3"] is e.Emu3LMConfig and CONFIG_MAPPING["Emu3VisionVQ"] is e.Emu3VisionVQConfig
assert MODEL_MAPPING[e.Emu3LMConfig] is e.Emu3LMModel and MODEL_MAPPING[e.Emu3VisionVQConfig] is e.Emu3VisionVQModel
assert MODEL_FOR_CAUSAL_LM_MAPPING[e.Emu3LMConfig] is e.Emu3LMForCausalLM
assert TOKENIZER_MAPPING[e.Emu3LMConfig] is e.Emu3Tokenizer
assert e.Emu3VisionVQImageProcessor in dict(IMAGE_PROCESSOR_MAPPING[e.Emu3VisionVQConfig]).values()
assert PROCESSOR_MAPPING[e.Emu3LMConfig] is e.Emu3MultimodalProcessor
assert auto._FINDER not in sys.meta_path
print("ok")
"""


@pytest.mark.parametrize("order", list(_ORDERS))
def test_each_auto_class_has_our_classes_once_transformers_imports_it(order):
    assert _run(_ORDERS[order] + _CHECK) == "ok"


def test_baai_folders_load_through_auto_classes_in_a_fresh_process():
    out = _run(
        "import sys, tempfile\n"
        "from pathlib import Path\n"
        "import emu3_hf\n"
        "from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor, AutoTokenizer\n"
        f"root = Path({str(FIXTURE_PIPELINE)!r})\n"
        "tok = AutoTokenizer.from_pretrained(root / 'tokenizer')\n"
        "ip = AutoImageProcessor.from_pretrained(root / 'image_processor')\n"
        "lm = AutoModelForCausalLM.from_pretrained(root / 'model')\n"
        "vq = AutoModel.from_pretrained(root / 'vq_model')\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    emu3_hf.Emu3Processor(ip, tok).save_pretrained(d)\n"
        "    (Path(d) / 'config.json').write_text((root / 'model' / 'config.json').read_text())\n"
        "    proc = AutoProcessor.from_pretrained(d)\n"
        "print(*(type(x).__name__ for x in (tok, ip, lm, vq, proc)), 'diffusers' in sys.modules)"
    )
    assert out.splitlines()[-1] == (
        "Emu3Tokenizer Emu3VisionVQImageProcessor Emu3LMForCausalLM Emu3VisionVQModel Emu3MultimodalProcessor False"
    )


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


def test_register_auto_classes_registers_everything_at_once():
    out = _run(
        "import sys, emu3_hf\n"
        "emu3_hf.register_auto_classes()\n"
        "from emu3_hf import auto\n"
        "print(auto._registered == set(auto._REGISTRATIONS), auto._FINDER in sys.meta_path)"
    )
    assert out == "True False"
