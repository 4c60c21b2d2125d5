"""Properties of the one vision-token grammar (processing/layout.py), over random grids, codes and streams.

What the writer writes, the parser reads back; what the engine's schedule generates, the processor parses back to
the engine's own codes; BAAI's per-token prefix rule allows exactly what the schedule forces; and no stream of ids,
however malformed, makes the parser raise anything but a ValueError that explains itself.
"""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu3_hf.generation.grammar import SAMPLE, VisionGrammar, fed_length, sequence_length
from emu3_hf.processing.layout import (
    SpecialIds,
    VisionSegment,
    frames_template,
    parse_vision_block,
    split_segments,
    vision_block_ids,
)
from emu3_hf.processing.prefix_rules import BaaiPrefixRules

SPECIAL = SpecialIds(bos=1, eos=2, pad=0, img=3, boi=4, eoi=5, eol=6, eof=7, visual_offset=20, codebook_size=50)
HEADER = [10, 11, 12]  # stands for the text "h*w"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

grids = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6))  # (T, h, w)


def _codes(draw, t, h, w):
    values = draw(st.lists(st.integers(0, SPECIAL.codebook_size - 1), min_size=t * h * w, max_size=t * h * w))
    return torch.tensor(values).view(t, h, w)


@FAST
@given(st.data(), grids)
def test_written_blocks_parse_back_to_their_codes(data, grid):
    codes = _codes(data.draw, *grid)
    block = vision_block_ids(codes, SPECIAL, HEADER)
    (segment,) = split_segments(block, SPECIAL)
    assert isinstance(segment, VisionSegment) and not segment.repaired
    assert torch.equal(segment.codes, codes)
    t, h, w = grid
    assert len(frames_template(SPECIAL, h, w, t)) + 2 == sequence_length(h, w, t)  # + EOI, EOS


@FAST
@given(st.data(), st.lists(grids, min_size=1, max_size=3))
def test_what_the_schedule_generates_the_processor_parses_to_the_same_codes(data, rows):
    frames = rows[0][0]  # one frame count per batch (the engine's contract)
    heights, widths = [r[1] for r in rows], [r[2] for r in rows]
    grammar = VisionGrammar.build(SPECIAL, heights, widths, num_frames=frames)
    sampled = grammar.forced == SAMPLE
    fake = torch.randint(0, SPECIAL.codebook_size, grammar.forced.shape, generator=torch.Generator().manual_seed(
        data.draw(st.integers(0, 2**31))))
    generated = torch.where(sampled, fake + SPECIAL.visual_offset, grammar.forced)  # what the engine would emit
    codes = grammar.codes_from_tokens(generated)  # (B, T, Hmax, Wmax)
    for b, (h, w) in enumerate(zip(heights, widths)):
        stream = [SPECIAL.boi, *HEADER, SPECIAL.img, *generated[b].tolist()]  # ... EOI EOS pad...
        (segment, tail) = split_segments(stream, SPECIAL)
        assert torch.equal(segment.codes, codes[b, :, :h, :w])
        assert tail[0] == SPECIAL.eos and set(tail[1:]) <= {SPECIAL.pad}


@FAST
@given(st.integers(1, 6), st.integers(3, 8))
def test_baai_prefix_rule_allows_exactly_what_the_schedule_forces(h, w):
    """For widths >= 3 (below, BAAI's modulo test fires before its EOF/EOI/EOS tests: test_engine covers that)."""
    schedule = VisionGrammar.build(SPECIAL, [h], [w]).forced[0].tolist()
    prompt = [SPECIAL.bos, 30, SPECIAL.boi, *HEADER, SPECIAL.img]
    rules, sequence = BaaiPrefixRules(SPECIAL, [h], [w]), list(prompt)
    for forced in schedule:
        allowed = rules(0, torch.tensor(sequence))
        if forced == SAMPLE:
            assert allowed == list(range(SPECIAL.visual_offset, SPECIAL.visual_offset + SPECIAL.codebook_size))
            sequence.append(SPECIAL.visual_offset)
        else:
            assert allowed == [forced]
            sequence.append(forced)


ids = st.integers(0, SPECIAL.visual_offset + SPECIAL.codebook_size + 5)  # every special, visual, and beyond


@settings(max_examples=400, deadline=None)
@given(st.lists(ids, max_size=60), st.booleans())
def test_no_stream_raises_anything_but_a_clear_value_error(stream, strict):
    for parse in (lambda: split_segments(stream, SPECIAL, strict=strict),
                  lambda: parse_vision_block(stream, SPECIAL, strict=strict)):
        try:
            out = parse()
        except ValueError as err:
            assert str(err)
            continue
        segments = out if isinstance(out, list) else [out]
        for seg in segments:
            if isinstance(seg, VisionSegment):  # repaired or not, a grid of valid codes
                assert seg.codes.dim() == 3 and seg.codes.numel() > 0
                assert ((seg.codes >= 0) & (seg.codes < SPECIAL.codebook_size)).all()


@FAST
@given(st.data(), grids)
def test_truncated_generations_decode_by_the_repair_rule(data, grid):
    """A generation cut anywhere inside its frames decodes with strict=False (or says why not), never crashes."""
    codes = _codes(data.draw, *grid)
    block = vision_block_ids(codes, SPECIAL, HEADER)[:-1]  # no EOI: the generation was cut
    cut = data.draw(st.integers(len(HEADER) + 2, len(block)))
    try:
        segments = split_segments(block[:cut], SPECIAL, strict=False)
    except ValueError as err:
        assert "no complete row" in str(err) or "empty" in str(err)
        return
    (segment,) = segments
    t, h, w = segment.codes.shape
    # the documented rule: the grid is the first frame's (a cut first frame keeps only its complete rows)
    assert w == codes.shape[2] and h <= codes.shape[1] and t <= codes.shape[0]
    assert torch.equal(segment.codes[0], codes[0, :h])  # the rows that were generated are kept as they were
    if t > 1:
        assert h == codes.shape[1] and torch.equal(segment.codes[: t - 1], codes[: t - 1])


@FAST
@given(st.integers(1, 3), st.lists(st.tuples(st.integers(1, 5), st.integers(1, 6)), min_size=1, max_size=4))
def test_fed_length_is_the_step_of_the_last_sampled_token(t, rows):
    """The KV budget is checked with fed_length before the schedule exists: it must be what the schedule feeds."""
    heights, widths = [h for h, _ in rows], [w for _, w in rows]
    grammar = VisionGrammar.build(SPECIAL, heights, widths, t)
    last_sample = int(torch.nonzero((grammar.forced == SAMPLE).any(0)).max())
    assert fed_length(heights, widths, t) == grammar.feed_until == last_sample
