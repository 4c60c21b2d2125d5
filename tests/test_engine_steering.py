"""Steering the engine: one generator per row, and a row callback that edits codes, changes guidance or stops.

Each behaviour is checked against the naive reference generator (tests/engine_reference.py), which restates it in
the plainest way: every row alone, every step a full forward, edits written straight into the id lists.
"""

import pytest
import torch
from engine_reference import reference_generate
from test_engine import _left_pad, _prompt, _random_case, _run_engine

import emu3_hf
from emu3_hf.generation import RowUpdate, generate_image_tokens, token_ids_from_config


@pytest.fixture(scope="module")
def lm(lm_dir):
    return emu3_hf.Emu3LMForCausalLM.from_pretrained(lm_dir).eval()


@pytest.fixture(scope="module")
def ids(lm):
    return token_ids_from_config(lm.config)


def _uniform_case(lm, batch: int = 2, height: int = 3, width: int = 4) -> dict:
    import random

    rng = random.Random(11)
    cfg = lm.config
    return dict(
        prompts=[_prompt(rng, cfg, 3 + i, height, width) for i in range(batch)],
        negatives=[_prompt(rng, cfg, 1, height, width) for _ in range(batch)],
        heights=[height] * batch,
        widths=[width] * batch,
        num_frames=1,
        guidance_scale=3.0,
    )


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_each_row_with_its_own_generator_equals_that_row_alone(lm, ids, seed):
    case = _random_case(seed, lm.config)
    case["prompts"].append(list(case["prompts"][0]))  # at least two rows, the last one 2x3 (mixed sizes)
    case["negatives"].append(case["negatives"][0])
    case["heights"].append(2)
    case["widths"].append(3)
    seeds = [100 + i for i in range(len(case["prompts"]))]
    batch = _run_engine(lm, case, generator=[torch.Generator().manual_seed(s) for s in seeds], top_k=30)
    for row, row_seed in enumerate(seeds):
        alone = {k: v[row : row + 1] if isinstance(v, list) else v for k, v in case.items()}
        expected = reference_generate(lm, alone["prompts"], alone["negatives"], alone["heights"], alone["widths"],
                                      ids, guidance_scale=case["guidance_scale"], do_sample=True, top_k=30,
                                      generator=torch.Generator().manual_seed(row_seed))
        assert torch.equal(batch.generated_ids[row, : expected.shape[1]], expected[0])


def _engine(lm, case, callback, **kwargs):
    pad = lm.config.pad_token_id
    pos, mask = _left_pad(case["prompts"], pad)
    neg, neg_mask = _left_pad(case["negatives"], pad)
    return generate_image_tokens(lm, pos, attention_mask=mask, negative_input_ids=neg,
                                 negative_attention_mask=neg_mask, height=case["heights"][0],
                                 width=case["widths"][0], guidance_scale=case["guidance_scale"], do_sample=False,
                                 callback=callback, **kwargs)


def test_edited_codes_are_kept_and_the_rest_is_generated_from_them(lm, ids):
    case = _uniform_case(lm)
    width = case["widths"][0]

    def edit_first_row(progress):
        if progress.rows_done[0] != 1:
            return None
        codes = progress.codes.clone()  # (B, 1, H, W)
        codes[:, 0, 0] = 7
        return RowUpdate(codes=codes)

    out = _engine(lm, case, edit_first_row)

    def reference_edit(step, generated):
        if step == width:  # the first row's EOL was just written
            for row in generated:
                row[:width] = [ids.visual_offset + 7] * width

    expected = reference_generate(lm, case["prompts"], case["negatives"], case["heights"], case["widths"], ids,
                                  guidance_scale=3.0, edit=reference_edit)
    assert (out.codes[:, 0] == 7).all()
    assert torch.equal(out.generated_ids, expected)
    with pytest.raises(ValueError, match="dynamic"):
        _engine(lm, case, edit_first_row, cache_implementation="static")


def test_a_new_guidance_scale_applies_from_the_next_step(lm, ids):
    case = _uniform_case(lm)
    width = case["widths"][0]
    out = _engine(lm, case, lambda p: {"guidance_scale": 1.0} if p.rows_done[0] == 1 else None)
    expected = reference_generate(lm, case["prompts"], case["negatives"], case["heights"], case["widths"], ids,
                                  guidance_at=lambda step: 3.0 if step <= width else 1.0)
    assert torch.equal(out.generated_ids, expected)
    assert not torch.equal(out.generated_ids, _engine(lm, case, None).generated_ids)  # the change mattered
    one = dict(case, guidance_scale=1.0)
    with pytest.raises(ValueError, match="Cannot switch guidance on"):
        _engine(lm, one, lambda p: {"guidance_scale": 2.0})
    with pytest.raises(ValueError, match="unknown keys"):
        _engine(lm, case, lambda p: {"latents": 1})


def test_stop_returns_what_was_generated(lm):
    case = _uniform_case(lm)
    full = _engine(lm, case, None)
    out = _engine(lm, case, lambda p: RowUpdate(stop=p.rows_done[0] == 2))
    width = case["widths"][0]
    assert out.generated_ids.shape[1] == 2 * (width + 1)
    assert torch.equal(out.generated_ids, full.generated_ids[:, : 2 * (width + 1)])
    assert torch.equal(out.codes[:, :2], full.codes[:, :2]) and (out.codes[:, 2:] == -1).all()
