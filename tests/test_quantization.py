"""Weight-only quantization (generation/quantization.py) against the float model.

The quantized model must compute exactly the float model whose weights are its dequantized weights (the kernels do
what the stored numbers say), each weight must lie within half a quantization step of the original (checked from
the original weights alone), and int8 generation must keep the float model's greedy tokens on BAAI's fixture.
"""

from __future__ import annotations

import sys

import pytest
import torch
from test_engine import _random_case, _run_engine

import emu3_hf
from emu3_hf.generation import generate_image_tokens
from emu3_hf.generation.quantization import quantize_weights, weight_bytes

pytest.importorskip("torchao", reason="quantization needs torchao (pip install 'emu3-hf[quant]')")


def _load(lm_dir):
    return emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval()


def _dequantized_copy(quantized, lm_dir):
    """A float model holding the quantized model's weights, dequantized (independent of torchao's matmuls)."""
    model = _load(lm_dir)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, torch.nn.Linear) and hasattr(module.weight, "dequantize"):
                model.get_submodule(name).weight.copy_(module.weight.dequantize().float())
    return model


@pytest.fixture(scope="module")
def int8_lm(lm_dir):
    return quantize_weights(_load(lm_dir), "int8")


def test_int8_keeps_the_greedy_tokens_of_baai_fixture(int8_lm, ref):
    out = generate_image_tokens(int8_lm, ref["imggen.pos_input_ids"], negative_input_ids=ref["imggen.neg_input_ids"],
                                height=3, width=4, do_sample=False)
    assert torch.equal(out.sequences, ref["imggen.output_ids"])
    assert type(int8_lm.lm_head.weight).__name__ == "Int8Tensor"  # the head too: the engine slices its visual rows


def test_int4_leaves_the_head_by_default(lm_dir):
    model = quantize_weights(_load(lm_dir), "int4", group_size=32)
    assert type(model.lm_head.weight) is torch.nn.Parameter
    assert hasattr(model.model.layers[0].mlp.down_proj.weight, "dequantize")


@pytest.mark.parametrize("weights,group", [("int8", None), ("int4", 32)])
def test_quantized_model_is_its_dequantized_float_model(lm_dir, weights, group):
    quantized = quantize_weights(_load(lm_dir), weights, group_size=group or 128, include_head=True)
    reference = _dequantized_copy(quantized, lm_dir)
    ids = torch.randint(0, 1600, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)
    case = _random_case(3, quantized.config)  # and the engine generates what that float model generates
    assert torch.equal(_run_engine(quantized, case, do_sample=False).generated_ids,
                       _run_engine(reference, case, do_sample=False).generated_ids)


@pytest.mark.parametrize("weights,levels,group", [("int8", 255, None), ("int4", 15, 32)])
def test_each_weight_is_within_half_a_step(lm_dir, weights, levels, group):
    """Symmetric quantization: step = max|w| / (levels / 2) over a row (int8) or a group of `group` columns (int4),
    so |w - dequantized(w)| <= max|w| / levels."""
    original = _load(lm_dir)
    quantized = quantize_weights(_load(lm_dir), weights, group_size=group or 128, include_head=True)
    for name, module in original.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        w = module.weight.detach()
        blocks = w.reshape(w.shape[0], -1, group or w.shape[1])  # (out, groups, group size)
        bound = blocks.abs().amax(-1, keepdim=True) / levels * (1 + 1e-3) + 1e-7
        error = (blocks - quantized.get_submodule(name).weight.dequantize().float().reshape(blocks.shape)).abs()
        assert (error <= bound).all(), f"{name}: max excess {float((error - bound).max())}"


def test_int8_stores_a_quarter_of_the_float32_bytes(lm_dir, int8_lm):
    float_model = _load(lm_dir)
    layers_float, layers_int8 = weight_bytes(float_model.model.layers), weight_bytes(int8_lm.model.layers)
    linears = [m for m in float_model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    norms = layers_float - sum(m.weight.numel() * 4 for m in linears)  # RMSNorm weights stay float32
    expected = sum(m.weight.numel() + m.out_features * 4 for m in linears) + norms  # int8 values + a scale per row
    assert layers_int8 == pytest.approx(expected, rel=0.02)
    assert weight_bytes(int8_lm) < weight_bytes(float_model)
    assert weight_bytes(float_model) == sum(p.numel() * 4 for p in float_model.parameters()) + sum(
        b.numel() * b.element_size() for b in float_model.buffers())


def test_int8_with_the_compiled_decode_step_equals_int8_eager(int8_lm):
    case = _random_case(0, int8_lm.config)
    case["guidance_scale"] = 3.0
    eager = _run_engine(int8_lm, case, do_sample=False)
    compiled = _run_engine(int8_lm, case, do_sample=False, compile_decode=True)
    assert torch.equal(compiled.generated_ids, eager.generated_ids)


def test_errors_name_the_problem(lm_dir, monkeypatch):
    with pytest.raises(ValueError, match="weights must be 'int8' or 'int4', got 'fp4'"):
        quantize_weights(_load(lm_dir), "fp4")
    with pytest.raises(ValueError, match=r"group_size=48 does not divide the input size\(s\) \[64, 128\]"):
        quantize_weights(_load(lm_dir), "int4", group_size=48)
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # as if torchao were not installed
    with pytest.raises(ImportError, match=r"emu3-hf\[quant\]"):
        quantize_weights(_load(lm_dir), "int8")


@pytest.mark.gpu
def test_cuda_int4_and_bitsandbytes_generate_close_to_bf16(lm_dir, ref):
    kwargs = dict(negative_input_ids=ref["imggen.neg_input_ids"].cuda(), height=3, width=4, do_sample=False)
    bf16 = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, dtype=torch.bfloat16).eval().cuda()
    ids = ref["imggen.pos_input_ids"].cuda()
    with torch.no_grad():
        logits = bf16(ids).logits.float()
    int4 = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, dtype=torch.bfloat16).eval().cuda()
    models = {"int4": quantize_weights(int4, "int4", group_size=32)}
    try:
        from transformers import BitsAndBytesConfig

        pytest.importorskip("bitsandbytes")
        models["bnb-nf4"] = emu3_hf.Emu3LMForCausalLM.from_pretrained(
            lm_dir, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16),
            device_map="cuda").eval()
    except pytest.skip.Exception:
        pass
    for name, model in models.items():
        out = generate_image_tokens(model, ids, **kwargs)
        assert out.codes.shape == (1, 3, 4) and ((out.codes >= 0) & (out.codes < 256)).all(), name
        with torch.no_grad():
            error = (model(ids).logits.float() - logits).abs().mean() / logits.std()
        assert error < 0.5, f"{name}: mean logit error {float(error):.3f} of the logits' spread"


def test_a_pipeline_runs_the_quantized_lm(make_tiny_pipeline, lm_dir):
    """README's recipe: `pipe.model = quantize_weights(pipe.model, "int8")`; the pipeline then generates what the
    same pipeline does with the dequantized float weights."""
    pipe, reference = make_tiny_pipeline(), make_tiny_pipeline()
    pipe.model = quantize_weights(pipe.model, "int8")
    reference.model = _dequantized_copy(pipe.model, lm_dir)
    assert pipe.components["model"] is pipe.model
    args = dict(height=8, width=8, do_sample=False, output_type="latent")
    assert torch.equal(pipe("a red circle", **args).codes, reference("a red circle", **args).codes)
    assert weight_bytes(pipe.model) < weight_bytes(reference.model)
