"""Vision-token layout: writing blocks from codes and parsing them back, malformed streams included."""

from __future__ import annotations

import pytest
import torch

from emu3_hf import Emu3LMConfig
from emu3_hf.processing.layout import SpecialIds, parse_vision_block, split_segments, vision_block_ids


@pytest.fixture(scope="module")
def special(lm_dir) -> SpecialIds:
    return SpecialIds.from_config(Emu3LMConfig.from_pretrained(lm_dir))


HEADER = [11, 12, 13]  # stand-in ids for the text "h*w"


def test_ids_come_from_the_config(special, ref_json):
    ids = ref_json["token_layout"]["ids"]
    assert (special.bos, special.eos, special.pad) == (ids["bos"], ids["eos"], ids["pad"])
    assert (special.img, special.boi, special.eoi) == (ids["img"], ids["boi"], ids["eoi"])
    assert (special.eol, special.eof, special.visual_offset) == (ids["eol"], ids["eof"], ids["vis0"])
    assert special.codebook_size == ref_json["token_layout"]["codebook_size_K"]


def test_image_block_matches_the_generated_fixture_layout(special, ref):
    """imggen.output_ids holds BAAI's generated [rows + EOL] EOF EOI block after the prompt's [IMG]."""
    codes = ref["imggen.codes"]  # (3, 4)
    block = vision_block_ids(codes, special, HEADER)
    generated = ref["imggen.output_ids"][0, ref["imggen.pos_input_ids"].shape[1] :].tolist()
    assert block[len(HEADER) + 2 :] == generated[:-1]  # BAAI then closes with EOS
    assert generated[-1] == special.eos


@pytest.mark.parametrize("shape", [(3, 4), (1, 5, 2), (3, 2, 6), (2, 1, 1)])
def test_round_trip_codes_to_ids_to_codes(special, shape):
    g = torch.Generator().manual_seed(sum(shape))
    codes = torch.randint(0, special.codebook_size, shape, generator=g)
    ids = [special.bos, 5, 6, *vision_block_ids(codes, special, HEADER), special.eos]
    segments = split_segments(torch.tensor(ids), special)
    assert segments[0] == [special.bos, 5, 6] and segments[2] == [special.eos]
    expected = codes if codes.dim() == 3 else codes[None]
    assert torch.equal(segments[1].codes, expected) and not segments[1].repaired


def test_several_blocks_in_one_sequence(special):
    a, b = torch.zeros(2, 2, dtype=torch.long), torch.ones(1, 3, 1, dtype=torch.long)
    ids = [7, *vision_block_ids(a, special, HEADER), 8, *vision_block_ids(b, special, HEADER)]
    seg = split_segments(ids, special)
    assert seg[0] == [7] and seg[2] == [8]
    assert torch.equal(seg[1].codes, a[None]) and torch.equal(seg[3].codes, b)


def _rows(special, rows, eof=True):
    ids = []
    for r in rows:
        ids += [special.visual_offset + c for c in r] + [special.eol]
    return ids + ([special.eof] if eof else [])


def test_unequal_rows_raise_or_are_repaired(special):
    ids = _rows(special, [[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    with pytest.raises(ValueError, match="unequal lengths"):
        parse_vision_block(ids, special)
    seg = parse_vision_block(ids, special, strict=False)
    assert seg.repaired
    assert seg.codes.tolist() == [[[1, 2, 3], [4, 5, 5], [6, 7, 8]]]


def test_missing_eol_and_eof_are_reported_and_repaired(special):
    ids = _rows(special, [[1, 2], [3, 4]], eof=False) + [special.visual_offset + 9]  # dangling row, no EOF
    with pytest.raises(ValueError, match="not closed"):
        parse_vision_block(ids, special)
    assert parse_vision_block(ids, special, strict=False).codes.tolist() == [[[1, 2], [3, 4]]]


def test_short_last_frame_is_padded_by_repeating_its_last_row(special):
    ids = _rows(special, [[1, 2], [3, 4]]) + _rows(special, [[5, 6]], eof=False)
    seg = parse_vision_block(ids, special, strict=False)
    assert seg.codes.tolist() == [[[1, 2], [3, 4]], [[5, 6], [5, 6]]]


def test_missing_eoi_raises_unless_lenient(special):
    ids = [special.boi, *HEADER, special.img, *_rows(special, [[1, 2]])]
    with pytest.raises(ValueError, match="EOI"):
        split_segments(ids, special)
    assert split_segments(ids, special, strict=False)[0].codes.tolist() == [[[1, 2]]]


def test_foreign_ids_inside_a_block(special):
    ids = [special.visual_offset, special.bos, special.visual_offset + 1, special.eol, special.eof]
    with pytest.raises(ValueError, match="neither a visual token"):
        parse_vision_block(ids, special)
    assert parse_vision_block(ids, special, strict=False).codes.tolist() == [[[0, 1]]]


def test_empty_block_and_missing_img_are_clear_errors(special):
    with pytest.raises(ValueError, match="no complete row"):
        parse_vision_block([special.eof], special, strict=False)
    with pytest.raises(ValueError, match="IMG"):
        split_segments([special.boi, 1, 2], special)


def test_out_of_range_codes_are_rejected_when_writing(special):
    with pytest.raises(ValueError, match="codes must lie"):
        vision_block_ids(torch.tensor([[special.codebook_size]]), special, HEADER)
    with pytest.raises(ValueError, match=r"\(h, w\) or \(T, h, w\)"):
        vision_block_ids(torch.zeros(4, dtype=torch.long), special, HEADER)
