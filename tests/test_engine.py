"""The generation engine against BAAI's fixtures, transformers' generate recipe and the naive reference."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import emu3_hf
from emu3_hf.generation import (
    PositionNoise,
    SamplingConfig,
    VisionGrammar,
    SpecialIds,
    token_ids_from_config,
    generate_image_tokens,
    pick_tokens,
    sequence_length,
)
from emu3_hf.generation import engine as engine_module
from emu3_hf.generation.transformers_recipe import BaaiPrefixRules, generate_with_transformers

from engine_reference import VISUAL, layout, reference_generate


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def lm(request, lm_dir):
    return emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=request.param).eval()


@pytest.fixture(scope="module")
def lm_sdpa(lm_dir):
    return emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval()


@pytest.fixture(scope="module")
def ids(lm_sdpa) -> SpecialIds:
    return token_ids_from_config(lm_sdpa.config)


def _prompt(rng: random.Random, cfg, text_len: int, h: int, w: int) -> list[int]:
    """[bos] text [boi] 'h*w' [img] with single-digit tokens ('0' is id 15, '*' is 9 in the Qwen vocabulary)."""
    size = [15 + int(c) for c in str(h)] + [9] + [15 + int(c) for c in str(w)]
    text = [rng.randrange(0, 1600) for _ in range(text_len)]
    return [cfg.bos_token_id, *text, cfg.boi_token_id, *size, cfg.img_token_id]


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _random_case(seed: int, cfg, video: bool = False) -> dict:
    rng = random.Random(seed)
    batch = rng.randint(1, 3)
    heights = [rng.randint(1, 3) for _ in range(batch)]
    widths = [rng.randint(1, 4) for _ in range(batch)]
    prompts = [_prompt(rng, cfg, rng.randint(1, 9), h, w) for h, w in zip(heights, widths)]
    negatives = [_prompt(rng, cfg, rng.randint(0, 5), h, w) for h, w in zip(heights, widths)]
    return dict(
        prompts=prompts,
        negatives=negatives,
        heights=heights,
        widths=widths,
        num_frames=2 if video else 1,
        guidance_scale=rng.choice([1.0, 2.5, 3.0]),
    )


def _run_engine(model, case: dict, **kwargs):
    pad = model.config.pad_token_id
    ids, mask = _left_pad(case["prompts"], pad)
    neg, neg_mask = _left_pad(case["negatives"], pad)
    return generate_image_tokens(
        model,
        ids,
        attention_mask=mask,
        negative_input_ids=neg,
        negative_attention_mask=neg_mask,
        height=torch.tensor(case["heights"]),
        width=case["widths"],
        guidance_scale=case["guidance_scale"],
        num_frames=case["num_frames"],
        **kwargs,
    )


def _run_reference(model, ids, case: dict, **kwargs) -> torch.Tensor:
    return reference_generate(
        model,
        case["prompts"],
        case["negatives"],
        case["heights"],
        case["widths"],
        ids,
        num_frames=case["num_frames"],
        guidance_scale=case["guidance_scale"],
        **kwargs,
    )


# ---- BAAI parity ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_reproduces_baai_image_recipe(lm, ref, cache):
    out = generate_image_tokens(
        lm,
        ref["imggen.pos_input_ids"],
        negative_input_ids=ref["imggen.neg_input_ids"],
        height=3,
        width=4,
        guidance_scale=3.0,
        do_sample=False,
        cache_implementation=cache,
    )
    assert torch.equal(out.sequences, ref["imggen.output_ids"])
    assert torch.equal(out.codes, ref["imggen.codes"][None])
    assert out.image_sizes.tolist() == [[3, 4]]


def test_transformers_recipe_reproduces_baai(lm_sdpa, ref):
    """The transformers-generate recipe (used by the benchmark) is itself faithful to BAAI's output."""
    seqs = generate_with_transformers(
        lm_sdpa,
        ref["imggen.pos_input_ids"],
        negative_input_ids=ref["imggen.neg_input_ids"],
        height=3,
        width=4,
        do_sample=False,
    )
    assert torch.equal(seqs, ref["imggen.output_ids"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_transformers_recipe_mixed_batch(lm_sdpa, seed):
    case = _random_case(seed, lm_sdpa.config)
    # W >= 3: for W in (1, 2) BAAI's rule has a quirk (see test_baai_rule_quirk_for_narrow_grids_is_not_reproduced)
    case.update(guidance_scale=3.0, widths=[w + 2 for w in case["widths"]])
    pad = lm_sdpa.config.pad_token_id
    ids, mask = _left_pad(case["prompts"], pad)
    neg, neg_mask = _left_pad(case["negatives"], pad)
    expected = generate_with_transformers(
        lm_sdpa,
        ids,
        attention_mask=mask,
        negative_input_ids=neg,
        negative_attention_mask=neg_mask,
        height=case["heights"],
        width=case["widths"],
        do_sample=False,
    )
    out = _run_engine(lm_sdpa, case, do_sample=False)
    # transformers stops once every row has its EOS; the engine's schedule has exactly that length.
    assert torch.equal(out.sequences, expected)


def test_prefix_rules_measure_from_first_image_token(ids):
    """BAAI's helper counts from the FIRST img token: here it sits 2 tokens before the end of the prompt."""
    rules = BaaiPrefixRules(ids, [2], [3])
    prompt = torch.tensor([5, ids.img, 7, ids.img])
    expected = layout(2, 3, 1, ids)  # offset o from the first img token <-> layout index o - 1
    for k in range(len(expected) - 2):
        allowed = rules(0, torch.cat([prompt, torch.full((k,), 3)]))
        rule = expected[prompt.numel() + k - 2]
        assert allowed == (rules.visual if rule == VISUAL else [rule])


def test_baai_rule_quirk_for_narrow_grids_is_not_reproduced(ids):
    """BAAI tests `offset % (W+1) == 0` before the EOF/EOI/EOS offsets, so for W = 1 the EOI slot becomes an EOL
    (and for W = 2 the EOS slot). Real grids are wide; the engine follows the intended layout instead."""
    rules = BaaiPrefixRules(ids, [3], [1])
    prompt = torch.tensor([ids.img])
    eoi_offset = (1 + 1) * 3 + 2
    assert rules(0, torch.cat([prompt, torch.full((eoi_offset - 1,), 3)])) == [ids.eol]
    grammar = VisionGrammar.build(ids, [3], [1])
    assert grammar.forced[0, eoi_offset - 1] == ids.eoi


# ---- the fast engine equals the naive reference -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_greedy_equals_naive_reference(lm_sdpa, ids, seed):
    case = _random_case(seed, lm_sdpa.config, video=seed == 3)
    out = _run_engine(lm_sdpa, case, do_sample=False)
    assert torch.equal(out.generated_ids, _run_reference(lm_sdpa, ids, case))


@pytest.mark.parametrize(
    "seed,temperature,top_k,top_p",
    [(0, 1.0, 2048, 1.0), (1, 0.7, 20, 1.0), (2, 1.3, None, 0.8), (3, 1.0, 50, 0.9), (4, 0.9, 7, 0.5)],
)
def test_sampling_equals_naive_reference_under_same_seed(lm_sdpa, ids, seed, temperature, top_k, top_p):
    case = _random_case(seed, lm_sdpa.config, video=seed == 4)
    kwargs = dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)
    out = _run_engine(lm_sdpa, case, generator=torch.Generator().manual_seed(seed), **kwargs)
    expected = _run_reference(lm_sdpa, ids, case, generator=torch.Generator().manual_seed(seed), **kwargs)
    assert torch.equal(out.generated_ids, expected)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_static_cache_equals_dynamic_cache(lm, cache):
    case = _random_case(7, lm.config)
    case["guidance_scale"] = 3.0
    gen = torch.Generator().manual_seed(3)
    out = _run_engine(lm, case, generator=gen, cache_implementation=cache)
    base = _run_engine(lm, case, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out.generated_ids, base.generated_ids)


def test_sampler_matches_the_filtered_distribution():
    """Frequencies of 20000 draws (position-keyed noise over images and steps) follow softmax(top_p(top_k(scores / T))), computed independently."""
    torch.manual_seed(0)
    scores = torch.randn(1, 64) * 2
    config = SamplingConfig(do_sample=True, temperature=0.8, top_k=30, top_p=0.85)
    noise = PositionNoise.from_generator(torch.Generator().manual_seed(1), 2000, 64)  # 2000 images x 10 steps
    draws = pick_tokens(scores.expand(2000, 10, -1), config, noise, torch.arange(10)).flatten()
    scaled = scores[0] / 0.8
    probs = scaled.softmax(-1)
    ranked = probs.argsort(descending=True)[:30]  # top-k
    kept, mass = [], 0.0
    top_k_probs = scaled[ranked].softmax(-1)
    for token, p in zip(ranked.tolist(), top_k_probs.tolist()):
        if mass >= 0.85:
            break
        kept.append(token)
        mass += p
    expected = torch.zeros(64)
    expected[kept] = scaled[kept].softmax(-1)
    observed = torch.bincount(draws, minlength=64).float() / draws.numel()
    assert set(torch.nonzero(observed).flatten().tolist()) <= set(kept)
    assert (observed - expected).abs().sum() / 2 < 0.03  # total variation; ~0.01 expected from 20000 draws


def test_position_noise_is_uniform_and_independent():
    """The hash-based noise behaves like i.i.d. Exp(1): U = exp(-E) over seeds x images x steps x codes fills 64 equal
    bins within a chi-square bound, and neighbouring codes, steps and images are uncorrelated."""
    uniforms = []
    for seed in range(4):
        noise = PositionNoise.from_generator(torch.Generator().manual_seed(seed), 50, 128)
        uniforms.append(torch.exp(-noise.exponential(torch.arange(40))))  # (50 images, 40 steps, 128 codes)
    u = torch.stack(uniforms).double()  # (4, 50, 40, 128)
    assert 0 < float(u.min()) and float(u.max()) < 1
    counts = torch.bincount((u.flatten() * 64).long(), minlength=64).double()
    expected = u.numel() / 64
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat < 120, stat  # 63 degrees of freedom: the 99.99th percentile is ~117
    for dim in (-1, -2, -3, 0):  # codes, steps, images, seeds
        a, b = u.narrow(dim, 0, u.shape[dim] - 1).flatten(), u.narrow(dim, 1, u.shape[dim] - 1).flatten()
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.01
    assert abs(float((-torch.log(u)).mean()) - 1) < 0.01  # Exp(1) has mean 1


def test_same_seed_same_tokens_other_seed_other_tokens(lm_sdpa):
    case = _random_case(5, lm_sdpa.config)
    a = _run_engine(lm_sdpa, case, generator=torch.Generator().manual_seed(11))
    b = _run_engine(lm_sdpa, case, generator=torch.Generator().manual_seed(11))
    c = _run_engine(lm_sdpa, case, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.generated_ids, b.generated_ids)
    assert not torch.equal(a.codes, c.codes)


# ---- structure: one doubled batch, head only at sampling steps, no host sync in the loop ----------------------------


def _record_decoder_batches(model) -> tuple[list[int], object]:
    sizes: list[int] = []
    handle = model.base_model.register_forward_pre_hook(
        lambda mod, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return sizes, handle


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_guidance_runs_one_doubled_batch_and_one_skips_it(lm_sdpa, ref, guidance):
    sizes, handle = _record_decoder_batches(lm_sdpa)
    try:
        out = generate_image_tokens(
            lm_sdpa,
            ref["imggen.pos_input_ids"].repeat(2, 1),
            negative_input_ids=ref["imggen.neg_input_ids"],
            height=3,
            width=4,
            guidance_scale=guidance,
        )
    finally:
        handle.remove()
    grammar = VisionGrammar.build(token_ids_from_config(lm_sdpa.config), 3, 4, batch_size=2)
    assert sizes == [2 if guidance == 1.0 else 4] * (1 + grammar.feed_until)
    assert grammar.feed_until == sequence_length(3, 4) - 5  # the last EOL, EOF, EOI, EOS are never fed
    assert out.codes.shape == (2, 3, 4)


def test_head_runs_only_on_visual_rows_at_sampling_steps(lm_sdpa, ref, monkeypatch):
    shapes = []
    original = engine_module.visual_logits

    def counting(hidden, head, ids):
        logits = original(hidden, head, ids)
        shapes.append(tuple(logits.shape))
        return logits

    monkeypatch.setattr(engine_module, "visual_logits", counting)
    handle = lm_sdpa.lm_head.register_forward_hook(lambda *a: pytest.fail("the full LM head must not run"))
    try:
        generate_image_tokens(
            lm_sdpa, ref["imggen.pos_input_ids"], negative_input_ids=ref["imggen.neg_input_ids"], height=3, width=4
        )
    finally:
        handle.remove()
    assert shapes == [(2, lm_sdpa.config.codebook_size)] * 12  # 3 x 4 visual tokens, nothing at EOL/EOF/EOI/EOS


class _CountHostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_host_reads_do_not_grow_with_the_number_of_tokens(lm_sdpa, cache):
    """`.item()`/`bool()` on a tensor is `_local_scalar_dense`: their count must not depend on the image size."""
    counts = []
    for h, w in [(2, 2), (4, 6)]:
        case = _random_case(1, lm_sdpa.config)
        case.update(heights=[h] * len(case["prompts"]), widths=[w] * len(case["prompts"]), guidance_scale=3.0)
        with _CountHostReads() as mode:
            _run_engine(lm_sdpa, case, generator=torch.Generator().manual_seed(0), cache_implementation=cache)
        counts.append(mode.reads)
    assert counts[0] == counts[1]


def test_callback_fires_once_per_row_with_partial_codes(lm_sdpa):
    case = _random_case(2, lm_sdpa.config, video=True)
    events = []
    out = _run_engine(
        lm_sdpa,
        case,
        generator=torch.Generator().manual_seed(0),
        callback=lambda p: events.append((p.rows_done, p.total_rows, p.codes.clone())),
    )
    total = [2 * h for h in case["heights"]]
    assert events[-1][0] == total and all(e[1] == total for e in events)
    # each callback step completes at least one row of some sequence, and every row of every sequence is reported
    assert sum(len(e[0]) for e in events) >= max(total)
    for done, _, codes in events:
        for b, rows in enumerate(done):
            h, w = case["heights"][b], case["widths"][b]
            flat_final = out.codes[b, :, :h, :w].reshape(-1, w)  # (T*h, w) rows in generation order
            flat_partial = codes[b, :, :h, :w].reshape(-1, w)
            assert torch.equal(flat_partial[:rows], flat_final[:rows])
            assert (flat_partial[rows:] == -1).all()


def test_grammar_matches_the_written_out_layout(ids):
    grammar = VisionGrammar.build(ids, [2, 3, 1], [3, 1, 4], num_frames=2)
    for b, (h, w) in enumerate([(2, 3), (3, 1), (1, 4)]):
        lay = layout(h, w, 2, ids)
        row = grammar.forced[b].tolist()
        assert [VISUAL if x == -1 else x for x in row[: len(lay)]] == lay
        assert all(x == ids.pad for x in row[len(lay) :])


def test_mixed_sizes_are_padded_grids(lm_sdpa):
    case = _random_case(0, lm_sdpa.config)
    case.update(prompts=case["prompts"][:1] * 2, negatives=case["negatives"][:1] * 2, heights=[2, 3], widths=[4, 1])
    out = _run_engine(lm_sdpa, case, generator=torch.Generator().manual_seed(0))
    assert out.codes.shape == (2, 3, 4)
    grids = out.grids()
    assert [tuple(g.shape) for g in grids] == [(2, 4), (3, 1)]
    assert all((g >= 0).all() and (g < lm_sdpa.config.codebook_size).all() for g in grids)
    assert (out.codes[0, 2] == -1).all() and (out.codes[1, :, 1:] == -1).all()
    assert out.generated_ids[1, sequence_length(3, 1) :].eq(lm_sdpa.config.pad_token_id).all()


# ---- clear errors --------------------------------------------------------------------------------------------------


def test_errors_name_the_problem(lm_sdpa, ref):
    pos = ref["imggen.pos_input_ids"]
    with pytest.raises(ValueError, match="negative_input_ids"):
        generate_image_tokens(lm_sdpa, pos, height=3, width=4, guidance_scale=3.0)
    with pytest.raises(ValueError, match="LEFT-padded"):
        generate_image_tokens(
            lm_sdpa, pos, attention_mask=torch.cat([torch.ones(1, 17), torch.zeros(1, 1)], 1).long(),
            height=3, width=4, guidance_scale=1.0,
        )
    with pytest.raises(ValueError, match="negative prompts for 3 prompts"):
        generate_image_tokens(
            lm_sdpa, pos.repeat(3, 1), negative_input_ids=pos.repeat(2, 1), height=3, width=4
        )
    with pytest.raises(ValueError, match="top_p"):
        generate_image_tokens(lm_sdpa, pos, height=3, width=4, guidance_scale=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="one per row"):
        generate_image_tokens(lm_sdpa, pos.repeat(2, 1), height=[3, 3, 3], width=4, guidance_scale=1.0)
    with pytest.raises(ValueError, match="2 generators for 1 rows"):
        generate_image_tokens(lm_sdpa, pos, height=3, width=4, guidance_scale=1.0, generator=[torch.Generator()] * 2)
    with pytest.raises(TypeError, match="torch.Generator or a list"):
        generate_image_tokens(lm_sdpa, pos, height=3, width=4, guidance_scale=1.0, generator=0)
    with pytest.raises(ValueError, match="no img_token_id, .*eol_token_id"):
        from transformers import LlamaConfig

        token_ids_from_config(LlamaConfig(pad_token_id=0))


@pytest.mark.gpu
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_cuda_reproduces_baai_and_takes_a_cpu_generator(lm_dir, ref, cache):
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval().to("cuda")
    kwargs = dict(negative_input_ids=ref["imggen.neg_input_ids"].cuda(), height=3, width=4, cache_implementation=cache)
    out = generate_image_tokens(model, ref["imggen.pos_input_ids"].cuda(), do_sample=False, **kwargs)
    assert torch.equal(out.sequences.cpu(), ref["imggen.output_ids"])
    sampled = generate_image_tokens(
        model, ref["imggen.pos_input_ids"].cuda(), generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert sampled.codes.is_cuda and ((sampled.codes >= 0) & (sampled.codes < 256)).all()
