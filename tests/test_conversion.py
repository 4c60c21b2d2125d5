"""BAAI <-> transformers-native conversion: against the fixtures' native copy, and lossless round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from emu3_hf import Emu3LMForCausalLM, Emu3VisionVQConfig, Emu3VisionVQModel
from emu3_hf.conversion import (
    convert_baai_to_native,
    convert_native_to_baai,
    native_config_from_baai,
    vq_key_to_baai,
    vq_key_to_native,
)


@pytest.fixture(scope="module")
def baai(lm_dir, vq_dir):
    return Emu3LMForCausalLM.from_pretrained(lm_dir).eval(), Emu3VisionVQModel.from_pretrained(vq_dir).eval()


@pytest.fixture(scope="module")
def native(baai):
    return convert_baai_to_native(*baai)


def test_converted_weights_equal_the_fixture_native_checkpoint(native, fixtures_dir):
    from transformers import Emu3ForConditionalGeneration

    reference = Emu3ForConditionalGeneration.from_pretrained(fixtures_dir / "hf-native").state_dict()
    ours = native.state_dict()
    assert set(ours) == set(reference)
    for key, value in reference.items():
        assert torch.equal(ours[key], value), key


def test_converted_config_equals_the_fixture_native_config(native, fixtures_dir):
    expected = json.loads((fixtures_dir / "hf-native" / "config.json").read_text())
    assert native.config.vocabulary_map == expected["vocabulary_map"]
    assert native.config.image_token_id == expected["image_token_id"]
    vq = native.config.vq_config.to_dict()
    for key, value in expected["vq_config"].items():
        if key != "model_type":
            assert vq[key] == value, key
    text = native.config.text_config.to_dict()
    for key, value in expected["text_config"].items():
        assert text[key] == value, key


def test_native_model_reproduces_baai_logits_and_codes(native, ref):
    with torch.no_grad():
        logits = native(input_ids=ref["lm.batch0.input_ids"]).logits
        codes = native.model.vqmodel.encode(ref["vq.image.pixel_values"], torch.tensor([[16, 24]] * 2))
    torch.testing.assert_close(logits, ref["lm.batch0.logits"], atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.stack(list(codes.image_tokens)), ref["vq.image.codes"])


def test_round_trip_back_to_baai_is_lossless(baai, native, lm_dir, vq_dir, ref):
    lm, vq = convert_native_to_baai(native)
    for model, folder in ((lm, lm_dir), (vq, vq_dir)):
        original = load_file(str(folder / "model.safetensors"))
        state = model.state_dict()
        assert set(state) == set(original)
        for key, value in original.items():
            assert torch.equal(state[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(lm(ref["lm.batch2.input_ids"]).logits, ref["lm.batch2.logits"], atol=1e-5, rtol=1e-5)
        assert torch.equal(vq.encode(ref["vq.video.pixel_values"]), ref["vq.video.codes"])
    assert lm.config.eol_token_id == baai[0].config.eol_token_id
    assert lm.config.visual_token_offset == baai[0].config.visual_token_offset


def test_vq_key_maps_are_inverse_bijections(vq_dir):
    keys = list(load_file(str(vq_dir / "model.safetensors")))
    native = [vq_key_to_native(k) for k in keys]
    assert len(set(native)) == len(keys)
    assert [vq_key_to_baai(k) for k in native] == keys


def test_unrepresentable_vq_attention_widths_raise(baai):
    lm, _ = baai
    vq_config = Emu3VisionVQConfig(codebook_size=64, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[0, 1])
    with pytest.raises(ValueError, match="cannot be represented natively"):
        native_config_from_baai(lm.config, vq_config)
