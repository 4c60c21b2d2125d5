"""Jacobi decoding (generation/parallel.py) is exact.

Greedy and sampled (position-keyed noise): token for token equal to sequential decoding for one generator (the engine,
the naive reference, BAAI's fixture), across windows, caches, mixed sizes, videos, guidance, top-k/top-p and row
callbacks; image i of a batch equals its prompt generated alone. The distribution of sampled grids equals the exact
distribution of sequential sampling, enumerated independently from full forward passes, by a chi-square test.
"""

from __future__ import annotations

import math

import pytest
import torch
from engine_reference import reference_generate
from test_engine import _CountHostReads, _random_case, _run_engine

import emu3_hf
from emu3_hf.generation import RowUpdate, generate_image_tokens, sequence_length, token_ids_from_config
from emu3_hf.generation.engine import resolve_decoding
from emu3_hf.generation.grammar import VisionGrammar
from emu3_hf.modeling.transformers_compat import STATIC_CACHE_CAN_CROP

needs_crop = pytest.mark.skipif(not STATIC_CACHE_CAN_CROP, reason="static-cache windows roll back with StaticCache.crop "
                                "(transformers >= 5.24); older releases run them over the dynamic cache")


@pytest.fixture(scope="module")
def lm(lm_dir):
    return emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval()


@pytest.fixture(scope="module")
def ids(lm):
    return token_ids_from_config(lm.config)


def _count_passes(model):
    calls: list[int] = []
    handle = model.base_model.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


# ---- greedy: identical tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 3, 16])
def test_greedy_reproduces_baai_fixture(lm, ref, window):
    out = generate_image_tokens(lm, ref["imggen.pos_input_ids"], negative_input_ids=ref["imggen.neg_input_ids"],
                                height=3, width=4, do_sample=False, parallel_decoding="jacobi", parallel_window=window)
    assert torch.equal(out.sequences, ref["imggen.output_ids"])


@pytest.mark.parametrize("seed", range(6))
def test_greedy_equals_sequential_engine_mixed_sizes_and_videos(lm, seed):
    case = _random_case(seed, lm.config, video=seed in (3, 5))
    sequential = _run_engine(lm, case, do_sample=False)
    for window in (2, 5):
        parallel = _run_engine(lm, case, do_sample=False, parallel_decoding="jacobi", parallel_window=window)
        assert torch.equal(parallel.generated_ids, sequential.generated_ids)
        assert torch.equal(parallel.codes, sequential.codes)


@needs_crop
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_static_cache_windows_equal_sequential_and_dynamic(lm_dir, attn):
    """Fixed-size windows over a StaticCache (rolled back by crop): greedy and sampled tokens equal sequential
    decoding's and the dynamic-cache windows' for the same seed."""
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation=attn).eval()
    for seed in (0, 3, 5):
        case = _random_case(seed, model.config, video=seed == 3)
        static = dict(parallel_decoding="jacobi", parallel_window=3, cache_implementation="static")
        sequential = _run_engine(model, case, do_sample=False)
        assert torch.equal(_run_engine(model, case, do_sample=False, **static).generated_ids, sequential.generated_ids)
        dynamic = _run_engine(model, case, top_k=20, generator=torch.Generator().manual_seed(seed),
                              parallel_decoding="jacobi", parallel_window=3)
        sampled = _run_engine(model, case, top_k=20, generator=torch.Generator().manual_seed(seed), **static)
        assert torch.equal(sampled.generated_ids, dynamic.generated_ids)
        plain = _run_engine(model, case, top_k=20, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(sampled.generated_ids, plain.generated_ids)


@needs_crop
def test_compiled_windows_equal_sequential(lm):
    """One compiled window graph (inductor here, CUDA graphs on a GPU): three prompts of mixed sizes, CFG 3."""
    case = dict(_random_case(5, lm.config), guidance_scale=3.0)
    compiled = _run_engine(lm, case, do_sample=False, parallel_decoding="jacobi", parallel_window=4,
                           compile_decode=True)  # cache None -> static
    assert torch.equal(compiled.generated_ids, _run_engine(lm, case, do_sample=False).generated_ids)


@needs_crop
@pytest.mark.gpu
def test_cuda_graph_windows_reproduce_baai_and_sample(lm_dir, ref):
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval().cuda()
    kwargs = dict(negative_input_ids=ref["imggen.neg_input_ids"].cuda(), height=3, width=4, parallel_decoding="jacobi")
    out = generate_image_tokens(model, ref["imggen.pos_input_ids"].cuda(), do_sample=False, **kwargs)  # CUDA default:
    assert torch.equal(out.sequences.cpu(), ref["imggen.output_ids"])  # compiled windows over the static cache
    sampled = generate_image_tokens(model, ref["imggen.pos_input_ids"].cuda(), generator=torch.Generator("cuda"),
                                    **kwargs)
    assert ((sampled.codes >= 0) & (sampled.codes < model.config.codebook_size)).all()


def test_greedy_equals_sequential_with_eager_attention(lm_dir):
    """Windows of several tokens over a cache go through the backend's mask path for q_len > 1: eager too."""
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="eager").eval()
    for seed in (0, 3, 5):
        case = _random_case(seed, model.config, video=seed == 3)
        sequential = _run_engine(model, case, do_sample=False)
        parallel = _run_engine(model, case, do_sample=False, parallel_decoding="jacobi", parallel_window=3)
        assert torch.equal(parallel.generated_ids, sequential.generated_ids)


@pytest.mark.parametrize("seed", [1, 4])
def test_greedy_equals_naive_reference(lm, ids, seed):
    case = _random_case(seed, lm.config)
    out = _run_engine(lm, case, do_sample=False, parallel_decoding="jacobi", parallel_window=4)
    expected = reference_generate(lm, case["prompts"], case["negatives"], case["heights"], case["widths"], ids,
                                  guidance_scale=case["guidance_scale"])
    assert torch.equal(out.generated_ids, expected)


def _uniform_model(lm_dir):
    """The tiny LM with a zero final norm: every hidden state is 0, so every distribution is uniform (greedy: code 0,
    ties going to the first index). Drafts drawn from any computed distribution are then always right."""
    model = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval()
    with torch.no_grad():
        model.model.norm.weight.zero_()
    return model


def test_right_drafts_are_accepted_a_whole_window_per_pass(lm_dir, ref):
    model = _uniform_model(lm_dir)
    window, (h, w) = 4, (3, 5)
    grammar = VisionGrammar.build(token_ids_from_config(model.config), h, w, batch_size=1)
    calls, handle = _count_passes(model)
    try:
        out = generate_image_tokens(model, ref["imggen.pos_input_ids"], negative_input_ids=ref["imggen.neg_input_ids"],
                                    height=h, width=w, do_sample=False, parallel_decoding="jacobi",
                                    parallel_window=window)
    finally:
        handle.remove()
    # the prefill settles step 0; then each pass feeds `window` tokens and settles all of them (drafts are code 0)
    assert len(calls) == 1 + math.ceil(grammar.feed_until / window)
    assert out.generated_ids.shape[1] == sequence_length(h, w)
    assert (out.codes == 0).all()


def test_fewer_forward_passes_and_one_host_read_per_pass(lm):
    case = _random_case(1, lm.config)
    for h, w in [(2, 3), (4, 6)]:
        case.update(heights=[h] * len(case["prompts"]), widths=[w] * len(case["prompts"]), guidance_scale=3.0)
        calls, handle = _count_passes(lm)
        try:
            with _CountHostReads() as mode:
                _run_engine(lm, case, do_sample=False, parallel_decoding="jacobi", parallel_window=6)
        finally:
            handle.remove()
        assert len(calls) < sequence_length(h, w) - 4  # fewer passes than sequential decoding's 1 + fed tokens
        # the loop reads how far the slowest row got once per pass; transformers' sdpa mask builder may read once
        # more for some window shapes; 2 reads before the loop (the grammar sizes, the padding check)
        assert mode.reads <= 2 * len(calls) + 2


@pytest.mark.parametrize("seed", range(5))
def test_sampled_jacobi_equals_sequential_for_one_generator(lm, ids, seed):
    """The same draws, not only the same distribution: CFG, top-k/top-p, temperature, mixed sizes, a video."""
    case = _random_case(seed, lm.config, video=seed == 3)
    sampling = dict(temperature=[1.0, 0.8, 1.3, 1.0, 0.9][seed], top_k=[2048, 20, None, 50, 7][seed],
                    top_p=[1.0, 1.0, 0.8, 0.9, 0.5][seed])
    run = lambda **kw: _run_engine(lm, case, generator=torch.Generator().manual_seed(seed), **sampling, **kw)  # noqa: E731
    sequential = run()
    for window in (2, 5, 16):
        assert torch.equal(run(parallel_decoding="jacobi", parallel_window=window).generated_ids,
                           sequential.generated_ids)
    if seed in (1, 2):  # and both equal the naive reference's draws from the documented noise function
        expected = reference_generate(lm, case["prompts"], case["negatives"], case["heights"], case["widths"], ids,
                                      guidance_scale=case["guidance_scale"], do_sample=True,
                                      generator=torch.Generator().manual_seed(seed), **sampling)
        assert torch.equal(sequential.generated_ids, expected)


def test_image_i_of_a_batch_equals_its_prompt_alone(lm):
    """A list of generators: row i equals prompt i generated alone with generator i, sequential or parallel; one
    generator: the same seed gives the same images, the next call on it other images."""
    case = _random_case(5, lm.config)
    assert len(case["prompts"]) > 1 and len(set(zip(case["heights"], case["widths"]))) > 1  # mixed sizes
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(len(case["prompts"]))]  # noqa: E731
    batch = _run_engine(lm, case, generator=gens(), top_k=30, parallel_decoding="jacobi", parallel_window=4)
    for i, grid in enumerate(batch.grids()):
        alone = {**case, **{k: case[k][i : i + 1] for k in ("prompts", "negatives", "heights", "widths")}}
        for mode in (None, "jacobi"):
            out = _run_engine(lm, alone, generator=torch.Generator().manual_seed(10 + i), top_k=30,
                              parallel_decoding=mode, parallel_window=3)
            assert torch.equal(out.grids()[0], grid)
    generator = torch.Generator().manual_seed(7)
    first, second = (_run_engine(lm, case, generator=generator, top_k=30) for _ in range(2))
    assert torch.equal(first.codes, _run_engine(lm, case, generator=torch.Generator().manual_seed(7), top_k=30).codes)
    assert not torch.equal(first.codes, second.codes)


# ---- row callbacks: the same events and steering as sequential decoding -------------------------------------------


def _steering_case(lm):
    case = _random_case(2, lm.config)
    case.update(prompts=case["prompts"][:1] * 2, negatives=case["negatives"][:1] * 2, heights=[3, 2], widths=[4, 3],
                guidance_scale=3.0)
    return case


@pytest.mark.parametrize("cache", ["dynamic", pytest.param("static", marks=needs_crop)])
@pytest.mark.parametrize("what", ["observe", "edit", "guidance", "stop"])
def test_row_callbacks_steer_like_sequential_decoding(lm, what, cache):
    case = _steering_case(lm)

    def make_callback(events):
        def callback(progress):
            events.append((progress.step, progress.rows_done, progress.codes.clone(), progress.guidance_scale))
            if progress.rows_done[0] != 1:
                return None
            if what == "edit":
                codes = progress.codes.clone()
                codes[:, 0, 0, :2] = 7
                return RowUpdate(codes=codes)
            if what == "guidance":
                return RowUpdate(guidance_scale=1.5)
            return RowUpdate(stop=what == "stop")

        return callback

    seq_events, par_events = [], []
    sequential = _run_engine(lm, case, do_sample=False, callback=make_callback(seq_events))
    parallel = _run_engine(lm, case, do_sample=False, callback=make_callback(par_events),
                           parallel_decoding="jacobi", parallel_window=5, cache_implementation=cache)
    assert torch.equal(parallel.generated_ids, sequential.generated_ids)
    assert len(par_events) == len(seq_events) > 0
    for (s1, r1, c1, g1), (s2, r2, c2, g2) in zip(seq_events, par_events):
        assert (s1, r1, g1) == (s2, r2, g2) and torch.equal(c1, c2)
    if what != "observe":  # the steering changed the output
        assert not torch.equal(sequential.generated_ids, _run_engine(lm, case, do_sample=False).generated_ids)


# ---- sampling: the same distribution --------------------------------------------------------------------------------


@torch.no_grad()
def _exact_grid_distribution(model, ids, prompt, negative, h, w, scale, top_k) -> dict[tuple[int, ...], float]:
    """P(codes) of sequential sampling for one prompt, by enumerating every code sequence with non-zero probability:
    full forward passes (no cache) over prompt + sequence, guidance on full-vocabulary log-softmax, top-k, softmax."""
    layout = []
    for _ in range(h):
        layout += [None] * w + [ids.eol]
    visual = slice(ids.visual_offset, ids.visual_offset + ids.codebook_size)

    def next_probs(ids_so_far):
        cond = model(torch.tensor([prompt + ids_so_far])).logits[0, -1].float().log_softmax(-1)
        uncond = model(torch.tensor([negative + ids_so_far])).logits[0, -1].float().log_softmax(-1)
        scores = (uncond + scale * (cond - uncond))[visual]
        kth = scores.topk(top_k).values[-1]
        return scores.masked_fill(scores < kth, float("-inf")).softmax(-1)

    table = {(): (1.0, [])}  # codes so far -> (probability, ids generated so far)
    for slot in layout:
        grown = {}
        for codes, (p, sequence) in table.items():
            if slot is not None:  # a forced id: the probability does not change
                grown[codes] = (p, sequence + [slot])
                continue
            probs = next_probs(sequence)
            for code in torch.nonzero(probs).flatten().tolist():
                grown[codes + (code,)] = (p * float(probs[code]), sequence + [ids.visual_offset + code])
        table = grown
    return {codes: p for codes, (p, _) in table.items()}


def _chi_square_p_value(counts: dict, exact: dict, total: int) -> float:
    """Goodness of fit of observed grid counts to the exact probabilities; cells expected < 5 pooled."""
    big = [k for k, p in exact.items() if p * total >= 5]
    observed = [counts.get(k, 0) for k in big]
    expected = [exact[k] * total for k in big]
    rest_obs, rest_exp = total - sum(observed), total - sum(expected)
    if rest_exp >= 1:
        observed.append(rest_obs)
        expected.append(rest_exp)
    elif rest_obs > 0:
        return 0.0  # grids the exact distribution rules out
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, expected))
    dof = len(expected) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2)))


@pytest.mark.parametrize("grid,window", [((1, 3), 2), ((2, 2), 3)])
def test_sampled_grids_follow_the_sequential_distribution(lm, ids, grid, window):
    h, w = grid
    case = _random_case(4, lm.config)
    prompt, negative = case["prompts"][0], case["negatives"][0]
    exact = _exact_grid_distribution(lm, ids, prompt, negative, h, w, scale=3.0, top_k=3)
    assert abs(sum(exact.values()) - 1) < 1e-5
    runs = 1500  # one batch of identical prompts: its rows are independent draws
    pos, neg = torch.tensor([prompt] * runs), torch.tensor([negative] * runs)
    results = {}
    for mode in (None, "jacobi"):
        out = generate_image_tokens(lm, pos, negative_input_ids=neg, height=h, width=w, guidance_scale=3.0, top_k=3,
                                    generator=torch.Generator().manual_seed(123), parallel_decoding=mode,
                                    parallel_window=window)
        grids = [tuple(g.flatten().tolist()) for g in out.codes]
        counts = {k: sum(1 for g in grids if g == k) for k in set(grids)}
        results[mode] = _chi_square_p_value(counts, exact, runs)
    assert results[None] > 1e-3, "plain sampling itself does not match the enumerated distribution"
    assert results["jacobi"] > 1e-3, f"speculative Jacobi decoding changed the distribution: p = {results['jacobi']}"


def test_per_row_generators_are_reproducible(lm):
    case = _random_case(5, lm.config)
    gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(len(case["prompts"]))]  # noqa: E731
    a = _run_engine(lm, case, generator=gens(), top_k=30, parallel_decoding="jacobi", parallel_window=4)
    b = _run_engine(lm, case, generator=gens(), top_k=30, parallel_decoding="jacobi", parallel_window=4)
    assert torch.equal(a.generated_ids, b.generated_ids)
    grids = a.grids()
    assert all(((g >= 0) & (g < lm.config.codebook_size)).all() for g in grids)


# ---- clear errors ---------------------------------------------------------------------------------------------------


def test_errors_name_the_problem(lm, lm_dir, ref):
    pos, neg = ref["imggen.pos_input_ids"], ref["imggen.neg_input_ids"]
    kwargs = dict(negative_input_ids=neg, height=3, width=4)
    with pytest.raises(ValueError, match="parallel_decoding must be None or 'jacobi'"):
        generate_image_tokens(lm, pos, parallel_decoding="zip", **kwargs)
    flex = emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir, attn_implementation="flex_attention").eval()
    with pytest.raises(ValueError, match="attn_implementation='flex_attention' does not take"):
        generate_image_tokens(flex, pos, parallel_decoding="jacobi", cache_implementation="static", **kwargs)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="parallel_window must be an int >= 1"):
            generate_image_tokens(lm, pos, parallel_decoding="jacobi", parallel_window=bad, **kwargs)


@pytest.mark.parametrize("can_crop", [True, False])
def test_windows_default_to_the_dynamic_cache_where_static_cannot_roll_back(lm, ref, monkeypatch, can_crop):
    """On transformers < 5.24 (no StaticCache.crop) Jacobi's device default is eager windows over the dynamic cache,
    an explicit static cache is refused with the fix; where crop exists the CUDA default stays compiled + static."""
    import emu3_hf.generation.engine as engine
    import emu3_hf.generation.parallel as parallel

    monkeypatch.setattr(engine, "STATIC_CACHE_CAN_CROP", can_crop)
    monkeypatch.setattr(parallel, "STATIC_CACHE_CAN_CROP", can_crop)
    cuda = torch.device("cuda")  # only the device type is read
    assert resolve_decoding(cuda, None, None, "jacobi") == (("static", True) if can_crop else ("dynamic", False))
    assert resolve_decoding(cuda, None, None, None) == ("static", True)
    assert resolve_decoding(torch.device("cpu"), None, None, "jacobi") == ("dynamic", False)
    kwargs = dict(negative_input_ids=ref["imggen.neg_input_ids"], height=3, width=4, do_sample=False,
                  parallel_decoding="jacobi")
    if not can_crop:
        with pytest.raises(ValueError, match=r"StaticCache that can be rolled back \(transformers >= 5.24\)"):
            generate_image_tokens(lm, ref["imggen.pos_input_ids"], cache_implementation="static", **kwargs)
    out = generate_image_tokens(lm, ref["imggen.pos_input_ids"], **kwargs)
    assert torch.equal(out.sequences, ref["imggen.output_ids"])


def test_pipelines_take_the_decoding_options(make_tiny_pipeline):
    """The image and video pipelines pass parallel_decoding / compile_decode / cache_implementation to the engine:
    greedy Jacobi decoding gives the sequential codes; a bad value is refused before anything runs."""
    from emu3_hf.pipelines import Emu3VideoPipeline

    pipe = make_tiny_pipeline()
    args = dict(height=8, width=8, do_sample=False, output_type="latent")
    plain = pipe("a red circle", **args).codes
    cache = "static" if STATIC_CACHE_CAN_CROP else None  # None: the installed release's default for windows
    jacobi = pipe("a red circle", parallel_decoding="jacobi", cache_implementation=cache, **args).codes
    assert torch.equal(plain, jacobi)
    sampled = dict(args, do_sample=True)
    seeded = lambda **kw: pipe("a red circle", generator=torch.Generator().manual_seed(3), **sampled, **kw).codes  # noqa: E731
    assert torch.equal(seeded(parallel_decoding="jacobi", parallel_window=3), seeded())
    with pytest.raises(ValueError, match="parallel_decoding"):
        pipe("a red circle", parallel_decoding="zipar", **args)
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match=f"parallel_window must be an int >= 1 .*got {bad}"):
            pipe("a red circle", parallel_decoding="jacobi", parallel_window=bad, **args)
    video = make_tiny_pipeline(Emu3VideoPipeline)
    vargs = dict(height=8, width=8, do_sample=False, output_type="latent", num_frames=8)
    assert torch.equal(video("a ball", **vargs).codes,
                       video("a ball", parallel_decoding="jacobi", parallel_window=5, **vargs).codes)


def test_cli_takes_the_parallel_window():
    from emu3_cli import build_parser

    args = build_parser().parse_args(["generate", "a cat", "-o", "cat.png", "--parallel-decoding", "jacobi",
                                      "--parallel-window", "8"])
    assert (args.parallel_decoding, args.parallel_window) == ("jacobi", 8)
    assert build_parser().parse_args(["video", "a ball", "-o", "b.gif"]).parallel_window is None
