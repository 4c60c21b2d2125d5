"""``processor.decode`` takes token ids only: anything else is a ValueError naming it, in strict and repair modes."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import emu3_hf
from emu3_hf import Emu3Tokenizer, Emu3VisionVQImageProcessor
from emu3_hf.processing import Emu3MultimodalProcessor
from emu3_hf.processing.layout import VisionSegment, split_segments, vision_block_ids

ASSET = Path(emu3_hf.__file__).parent / "assets" / "emu3-tiny"
TOKENIZER = Emu3Tokenizer.from_pretrained(ASSET / "tokenizer")
PROCESSOR = Emu3MultimodalProcessor(Emu3VisionVQImageProcessor.from_pretrained(ASSET / "image_processor"), TOKENIZER)
VOCAB = len(TOKENIZER)  # the reference: every id the tokenizer can name
SPECIAL = PROCESSOR.special


def _valid_stream(codes: torch.Tensor) -> list[int]:
    header = TOKENIZER.encode(f"{codes.shape[0]}*{codes.shape[1]}", add_special_tokens=False)
    text = TOKENIZER.encode("a cat", add_special_tokens=False)
    return [SPECIAL.bos, *text, *vision_block_ids(codes, SPECIAL, header), SPECIAL.eos]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("bad", [-1, -(2**40), VOCAB, 10**6, 2**70])
def test_out_of_range_ids_are_a_value_error_naming_them(bad, strict):
    stream = _valid_stream(torch.zeros(2, 3, dtype=torch.long))
    stream.insert(3, bad)
    for ids in (stream, torch.tensor(stream) if abs(bad) < 2**62 else stream):
        with pytest.raises(ValueError, match=rf"ids\[3\] = {bad} is not a token id: .*\[0, {VOCAB}\)"):
            PROCESSOR.decode(ids, strict=strict)
        with pytest.raises(ValueError, match=rf"ids\[3\] = {bad}"):
            PROCESSOR.decode(ids, strict=strict, skip_special_tokens=True)
        with pytest.raises(ValueError, match=rf"ids\[3\] = {bad}"):
            PROCESSOR.parse_codes(ids, strict=strict)


@pytest.mark.parametrize("ids", [torch.zeros(2, 3, dtype=torch.long), torch.tensor([1.0, 2.0]), torch.tensor([True]),
                                 [1, 2.5], [1, "2"], [1, None], [True, 2], "123", 7])  # fmt: skip
def test_malformed_ids_are_a_value_error(ids):
    with pytest.raises(ValueError, match="ids"):
        PROCESSOR.decode(ids)


def test_numpy_and_tensor_ids_decode_like_a_list():
    codes = torch.arange(6).view(2, 3) % SPECIAL.codebook_size
    stream = _valid_stream(codes)
    expected = PROCESSOR.decode(stream)
    for ids in (torch.tensor(stream), np.array(stream), torch.tensor(stream, dtype=torch.int32)):
        out = PROCESSOR.decode(ids)
        assert out[0] == expected[0] and torch.equal(out[1], expected[1]) and out[2] == expected[2]
    assert torch.equal(out[1][0], codes)


ids = st.integers(-3, VOCAB + 3) | st.sampled_from([SPECIAL.boi, SPECIAL.img, SPECIAL.eol, SPECIAL.eof, SPECIAL.eoi])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ids, max_size=40), st.booleans())
def test_decode_raises_only_value_errors_and_always_for_foreign_ids(stream, strict):
    foreign = [i for i in stream if not 0 <= i < VOCAB]
    try:
        out = PROCESSOR.decode(stream, strict=strict)
    except ValueError as err:
        if foreign:
            assert f"= {foreign[0]} is not a token id" in str(err)
        else:  # a malformed stream: the same error as the grammar's own parser gives
            with pytest.raises(ValueError, match=re.escape(str(err))):
                split_segments(stream, SPECIAL, strict=strict)
        return
    assert not foreign, f"{foreign} decoded without an error"
    for chunk in out:
        assert isinstance(chunk, str) or (isinstance(chunk, torch.Tensor) and chunk.dim() == 3)
    assert sum(isinstance(seg, VisionSegment) for seg in split_segments(stream, SPECIAL, strict=strict)) == sum(
        isinstance(chunk, torch.Tensor) for chunk in out)
