"""The compiled decode step (engine option compile_decode): one graph, no breaks, the same greedy tokens as eager.

On the CPU it compiles with inductor (~10 s per shape); on CUDA it runs as CUDA graphs (``gpu`` tests).
"""

from __future__ import annotations

import pytest
import torch
from test_engine import _random_case, _run_engine

import emu3_hf
from emu3_hf.generation import build_guidance_batch, decode_step, generate_image_tokens, prefill
from emu3_hf.generation.engine import decode_window, resolve_decoding
from transformers.cache_utils import StaticCache


@pytest.fixture(scope="module")
def lm(lm_dir):
    return emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval()


def _mixed_case(lm):
    """Two prompts x two images each (num_images_per_prompt = 2), mixed sizes, left padding, CFG 3."""
    case = _random_case(0, lm.config)
    case.update(prompts=[case["prompts"][0]] * 2 + [case["prompts"][1]] * 2,
                negatives=[case["negatives"][0]] * 2 + [case["negatives"][1]] * 2,
                heights=[2, 2, 3, 3], widths=[4, 4, 2, 2], guidance_scale=3.0)
    return case


@pytest.mark.parametrize("n", [1, 3])
def test_decode_step_and_window_are_one_graph_without_breaks(lm, ref, n):
    """``torch._dynamo.explain`` over one real decode step (n = 1) or Jacobi window (n = 3) after a prefill into
    the static cache."""
    ids, mask = build_guidance_batch(ref["imggen.pos_input_ids"], None, ref["imggen.neg_input_ids"], None, 3.0,
                                     lm.config.pad_token_id)
    length = ids.shape[1]
    total = length + 8
    cache = StaticCache(config=lm.config, max_cache_len=total)
    with torch.no_grad():
        prefill(lm.model, ids, mask, cache, total)
        slots = torch.arange(total)
        future = slots > length + torch.arange(n)[:, None]  # (n, total): query i sees slots up to length + i
        additive = torch.zeros(2, 1, n, total).masked_fill(future, torch.finfo(torch.float32).min)
        tokens = torch.full((2, n), lm.config.eol_token_id)
        positions = mask.sum(-1, keepdim=True) + torch.arange(n)
        function = decode_step if n == 1 else decode_window
        explanation = torch._dynamo.explain(function)(lm.model, tokens, positions, cache, additive)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_greedy_equals_eager_cfg_mixed_sizes_several_images(lm):
    case = _mixed_case(lm)
    eager = _run_engine(lm, case, do_sample=False, cache_implementation="static", compile_decode=False)
    compiled = _run_engine(lm, case, do_sample=False, compile_decode=True)  # cache None -> static
    assert torch.equal(compiled.generated_ids, eager.generated_ids)
    assert torch.equal(compiled.codes, eager.codes)


@pytest.mark.parametrize("attn", [pytest.param("eager", marks=pytest.mark.slow), "sdpa"])
def test_compiled_reproduces_baai_and_sampling_matches_eager(lm_dir, ref, attn):
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=attn).eval()
    kwargs = dict(negative_input_ids=ref["imggen.neg_input_ids"], height=3, width=4, compile_decode=True)
    out = generate_image_tokens(model, ref["imggen.pos_input_ids"], do_sample=False, **kwargs)
    assert torch.equal(out.sequences, ref["imggen.output_ids"])
    for seed in range(3):  # same seed, same draws: the compiled step computes the same hidden states
        case = _random_case(seed, model.config)
        case["guidance_scale"] = 2.5
        a = _run_engine(model, case, top_k=30, generator=torch.Generator().manual_seed(seed), compile_decode=True)
        b = _run_engine(model, case, top_k=30, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a.generated_ids, b.generated_ids)


def test_defaults_per_device_and_refusals():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decoding(cpu, None, None, None) == ("dynamic", False)
    assert resolve_decoding(cuda, None, None, None) == ("static", True)
    assert resolve_decoding(cuda, "dynamic", None, None) == ("dynamic", False)
    assert resolve_decoding(cpu, "static", None, None) == ("static", False)
    assert resolve_decoding(cpu, None, True, None) == ("static", True)
    # compiled Jacobi windows where a static cache rolls back (transformers >= 5.24), else eager dynamic windows
    from emu3_hf.modeling.transformers_compat import STATIC_CACHE_CAN_CROP

    windows = ("static", True) if STATIC_CACHE_CAN_CROP else ("dynamic", False)
    assert resolve_decoding(cuda, None, None, "jacobi") == windows
    assert resolve_decoding(cpu, None, None, "jacobi") == ("dynamic", False)
    with pytest.raises(ValueError, match="compile_decode=True needs fixed shapes"):
        resolve_decoding(cpu, "dynamic", True, None)
    with pytest.raises(ValueError, match="cache_implementation must be"):
        resolve_decoding(cpu, "paged", None, None)
    with pytest.raises(TypeError, match="compile_decode must be True, False or None"):
        resolve_decoding(cpu, None, "yes", None)


def _sync_events(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
    names = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
    return sum(e.count for e in prof.key_averages() if e.key in names)


@pytest.mark.gpu
def test_cuda_graphs_equal_eager_and_never_sync_per_token(lm_dir, ref):
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval().cuda()
    kwargs = dict(negative_input_ids=ref["imggen.neg_input_ids"].cuda(), do_sample=False)
    out = generate_image_tokens(model, ref["imggen.pos_input_ids"].cuda(), height=3, width=4, **kwargs)  # default
    assert torch.equal(out.sequences.cpu(), ref["imggen.output_ids"])
    case = _mixed_case(model)  # CPU tensors: the engine moves them to the model's device
    eager = _run_engine(model, case, do_sample=False, cache_implementation="static", compile_decode=False)
    compiled = _run_engine(model, case, do_sample=False, compile_decode=True)
    assert torch.equal(compiled.generated_ids, eager.generated_ids)
    counts = []
    for side in (3, 6):  # warm up each shape, then count synchronisations of a sampled call
        run = lambda: generate_image_tokens(  # noqa: E731
            model, ref["imggen.pos_input_ids"].cuda(), height=side, width=side, generator=torch.Generator("cuda"),
            negative_input_ids=ref["imggen.neg_input_ids"].cuda(),
        )
        run()
        counts.append(_sync_events(run))
    assert counts[0] == counts[1], counts  # synchronisations do not grow with the number of tokens
