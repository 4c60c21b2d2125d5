"""LoRA adapters between our (= BAAI's) module names and transformers' native Emu3, and merge-lora.

References: PEFT itself (adapters are built, loaded and applied by PEFT), transformers' native
Emu3ForConditionalGeneration on the fixtures' independent native checkpoint, and round trips.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from emu3_hf import Emu3LMForCausalLM
from emu3_cli import main as cli_main
from emu3_hf.conversion import (
    NATIVE_VQ_EXCLUDE,
    BaaiFolders,
    convert_checkpoint,
    convert_lora_adapter,
    merge_lora,
)

TARGETS = ["q_proj", "v_proj", "down_proj", "model.layers.1.mlp.up_proj"]


def _lm(lm_dir):
    return Emu3LMForCausalLM.from_pretrained(lm_dir).eval()


def _native(fixtures_dir):
    from transformers import Emu3ForConditionalGeneration

    return Emu3ForConditionalGeneration.from_pretrained(fixtures_dir / "hf-native").eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 2067, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def adapter(lm_dir, ids, tmp_path_factory):
    """A PEFT adapter on our LM with non-zero B, a full-path target, a rank and an alpha pattern; and its logits."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False,
                        rank_pattern={"model.layers.1.self_attn.q_proj": 2},
                        alpha_pattern={"down_proj": 16})  # fmt: skip
    model = get_peft_model(_lm(lm_dir), config)
    folder = tmp_path_factory.mktemp("lora") / "emu3"
    model.save_pretrained(folder)
    (folder / "README.md").write_text("my adapter\n")
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return folder, logits


@pytest.fixture(scope="module")
def native_adapter(adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-native") / "native"
    assert convert_lora_adapter(adapter[0], out, to="native") == out
    return out


def _same_adapter(a, b) -> None:
    state_a, state_b = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert set(state_a) == set(state_b) and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert json.loads((a / "adapter_config.json").read_text()) == json.loads((b / "adapter_config.json").read_text())
    with safe_open(str(a / "adapter_model.safetensors"), "pt") as fa:
        with safe_open(str(b / "adapter_model.safetensors"), "pt") as fb:
            assert fa.metadata() == fb.metadata() == {"format": "pt"}
    assert (a / "README.md").read_text() == (b / "README.md").read_text()


def test_native_adapter_names_and_metadata(adapter, native_adapter):
    source = json.loads((adapter[0] / "adapter_config.json").read_text())
    config = json.loads((native_adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(["q_proj", "v_proj", "down_proj",
                                                       "model.text_model.layers.1.mlp.up_proj"])  # fmt: skip
    assert config["rank_pattern"] == {"model.text_model.layers.1.self_attn.q_proj": 2}
    assert config["alpha_pattern"] == {"down_proj": 16}
    assert config["exclude_modules"] == NATIVE_VQ_EXCLUDE  # q/v_proj would also select the native VQ's attention
    assert config["auto_mapping"]["base_model_class"] == "Emu3ForConditionalGeneration"
    unchanged = {k: v for k, v in source.items() if k not in ("target_modules", "rank_pattern", "exclude_modules",
                                                              "auto_mapping")}  # fmt: skip
    assert {k: config[k] for k in unchanged} == unchanged
    keys = load_file(str(native_adapter / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.model.text_model.layers.") for k in keys)
    assert keys["base_model.model.model.text_model.layers.1.self_attn.q_proj.lora_A.weight"].shape[0] == 2


def test_round_trip_is_bit_exact(adapter, native_adapter, tmp_path):
    back = convert_lora_adapter(native_adapter, tmp_path / "back", to="baai")  # BAAI's names are ours
    _same_adapter(adapter[0], back)
    again = convert_lora_adapter(back, tmp_path / "again", to="native")
    _same_adapter(native_adapter, again)


def test_converted_adapter_gives_our_logits_on_transformers_native_model(native_adapter, adapter, ids, fixtures_dir):
    peft_native = PeftModel.from_pretrained(_native(fixtures_dir), native_adapter)
    adapted = {n for n, _ in peft_native.named_modules() if n.endswith(".lora_A")}
    assert len(adapted) == 7 and not any("vqmodel" in n for n in adapted)
    with torch.no_grad():
        logits = peft_native(input_ids=ids).logits
    torch.testing.assert_close(logits, adapter[1], atol=1e-5, rtol=1e-5)


def test_adapter_trained_on_native_model_converts_to_ours(fixtures_dir, lm_dir, ids, tmp_path):
    torch.manual_seed(1)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["o_proj", "gate_proj", "lm_head"], init_lora_weights=False)
    native = get_peft_model(_native(fixtures_dir), config)
    native.save_pretrained(tmp_path / "native")
    with torch.no_grad():
        expected = native(input_ids=ids).logits
    convert_lora_adapter(tmp_path / "native", tmp_path / "ours", to="emu3")
    converted = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert converted.get("exclude_modules") is None  # o_proj / gate_proj / lm_head never name a VQ module
    ours = PeftModel.from_pretrained(_lm(lm_dir), tmp_path / "ours")
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-5)


def test_adapter_conversion_refuses_what_it_cannot_carry(adapter, native_adapter, tmp_path):
    with pytest.raises(ValueError, match="already uses native module names"):
        convert_lora_adapter(native_adapter, tmp_path / "x", to="native")
    with pytest.raises(ValueError, match="must be 'emu3'"):
        convert_lora_adapter(adapter[0], tmp_path / "x", to="gguf")
    listed = tmp_path / "listed"
    shutil.copytree(adapter[0], listed)
    config = json.loads((listed / "adapter_config.json").read_text())
    (listed / "adapter_config.json").write_text(json.dumps({**config, "exclude_modules": ["o_proj"]}))
    with pytest.raises(ValueError, match="exclude_modules is a list"):
        convert_lora_adapter(listed, tmp_path / "x", to="native")
    regex = tmp_path / "regex"
    shutil.copytree(adapter[0], regex)
    pattern = {r"model\.layers\.1\..*q_proj": 2}
    (regex / "adapter_config.json").write_text(json.dumps({**config, "rank_pattern": pattern}))
    with pytest.raises(ValueError, match="has rank 4 instead of 2"):
        convert_lora_adapter(regex, tmp_path / "x", to="native")
    vq = tmp_path / "vq"
    shutil.copytree(native_adapter, vq)
    state = load_file(str(vq / "adapter_model.safetensors"))
    state["base_model.model.model.vqmodel.encoder.middle_block.attn_1.q_proj.lora_A.weight"] = torch.zeros(2, 32)
    save_file(state, str(vq / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="belongs to the native VQ"):
        convert_lora_adapter(vq, tmp_path / "x", to="emu3")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="never loaded"):
        convert_lora_adapter(tmp_path / "pickled", tmp_path / "x", to="native")
    assert not (tmp_path / "x").exists()


def test_merge_into_a_baai_lm_folder(adapter, native_adapter, lm_dir, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(lm_dir, base)
    (base / "notes.txt").write_text("kept")
    merged = merge_lora(base, adapter[0], tmp_path / "merged")
    files = {p.name: p.read_bytes() for p in merged.iterdir() if p.name != "model.safetensors"}
    assert files == {p.name: p.read_bytes() for p in base.iterdir() if p.name != "model.safetensors"}
    with torch.no_grad():
        logits = _lm(merged)(input_ids=torch.arange(3)[None]).logits
        expected = PeftModel.from_pretrained(_lm(base), adapter[0])(input_ids=torch.arange(3)[None]).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # A native-named adapter is renamed on the way in and gives the same merged weights.
    merge_lora(base, native_adapter, tmp_path / "merged2")
    a, b = load_file(str(merged / "model.safetensors")), load_file(str(tmp_path / "merged2" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    untouched = load_file(str(lm_dir / "model.safetensors"))
    assert torch.equal(a["model.norm.weight"], untouched["model.norm.weight"])
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(a[q_proj], untouched[q_proj])


def test_merge_lora_cli_into_a_pipeline_folder(adapter, lm_dir, vq_dir, tiny_tokenizer_dir, ids, tmp_path, capsys):
    from emu3_hf.pipelines import Emu3Pipeline

    pipe_dir = convert_checkpoint(BaaiFolders(lm_dir, vq_dir, tiny_tokenizer_dir), tmp_path / "pipe", "pipeline").output
    assert cli_main(["merge-lora", str(pipe_dir), str(adapter[0]), str(tmp_path / "merged"),
                     "--max-shard-size", "500KB"]) == 0  # fmt: skip
    assert str(tmp_path / "merged") in capsys.readouterr().out
    for part in ("vq_model", "tokenizer", "image_processor"):
        for path in (pipe_dir / part).iterdir():
            assert (tmp_path / "merged" / part / path.name).read_bytes() == path.read_bytes()
    assert len(list((tmp_path / "merged" / "model").glob("model-*.safetensors"))) > 1
    pipe = Emu3Pipeline.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(pipe.model(input_ids=ids).logits, adapter[1], atol=1e-5, rtol=1e-5)


def test_merge_refuses_foreign_adapters_and_bases(adapter, lm_dir, fixtures_dir, tmp_path, capsys):
    other = tmp_path / "other"
    config = json.loads((adapter[0] / "adapter_config.json").read_text())
    shutil.copytree(adapter[0], other)
    state = load_file(str(other / "adapter_model.safetensors"))
    state = {k.replace(".layers.1.", ".layers.7."): v for k, v in state.items()}  # a deeper model's adapter
    save_file(state, str(other / "adapter_model.safetensors"))
    targets = {"target_modules": ["q_proj", "v_proj", "down_proj"], "rank_pattern": {}}
    (other / "adapter_config.json").write_text(json.dumps({**config, **targets}))
    with pytest.raises(ValueError, match="made for another model"):
        merge_lora(lm_dir, other, tmp_path / "m")
    assert cli_main(["merge-lora", str(fixtures_dir / "hf-native"), str(adapter[0]), str(tmp_path / "m")]) == 2
    assert "Convert it first" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_merge_names_the_first_module_whose_shapes_do_not_fit(adapter, lm_dir, tmp_path, capsys):
    """An adapter for a wider LM: one short message naming the adapter, the module and both shapes."""
    wide = tmp_path / "wide"
    shutil.copytree(adapter[0], wide)
    state = load_file(str(wide / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    rank, width = state[key].shape
    state[key] = torch.zeros(rank, width + 8)  # the only module that does not fit
    save_file(state, str(wide / "adapter_model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError) as caught:
        merge_lora(lm_dir, wide, tmp_path / "m")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    assert str(wide) in message and "model.layers.0.self_attn.q_proj" in message
    assert f"({rank}, {width + 8})" in message and f"in={width}" in message
    assert cli_main(["merge-lora", str(lm_dir), str(wide), str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("emu3:")]  # the rest is transformers' load bar
    assert len(errors) == 1 and "model.layers.0.self_attn.q_proj" in errors[0] and "size mismatch" not in err, err
    assert not (tmp_path / "m").exists()


def test_a_missing_adapter_folder_is_named_as_missing(lm_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="no-such-lora'?: no such folder"):
        merge_lora(lm_dir, tmp_path / "no-such-lora", tmp_path / "m")
    assert cli_main(["convert-lora", str(tmp_path / "no-such-lora"), "--to", "native", "-o", str(tmp_path / "n")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "n").exists()


def test_convert_lora_cli(adapter, tmp_path, capsys):
    assert cli_main(["convert-lora", str(adapter[0]), "--to", "native", "-o", str(tmp_path / "n")]) == 0
    assert cli_main(["convert-lora", str(tmp_path / "n"), "--to", "emu3", "-o", str(tmp_path / "back")]) == 0
    _same_adapter(adapter[0], tmp_path / "back")
    assert cli_main(["convert-lora", str(adapter[0]), "--to", "native", "-o", str(tmp_path / "n")]) == 2
    assert "already exists" in capsys.readouterr().err
