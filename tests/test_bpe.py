"""A BPE vocabulary learnt from captions: tiktoken reads it the same way, every string round-trips, words merge."""

from __future__ import annotations

import random

import pytest

from emu3_hf.processing.bpe import train_bpe_ranks
from emu3_hf.processing.tokenization_emu3 import QWEN_SPLIT_PATTERN, build_emu3_tokenizer, write_tiktoken_bpe
from emu3_hf.tiny_world import iter_image_examples, iter_video_examples

tiktoken = pytest.importorskip("tiktoken")


@pytest.fixture(scope="module")
def captions() -> list[str]:
    images = [caption for _, caption in iter_image_examples("train", jitter=False, shuffle=False)]
    return images + [caption for _, caption in iter_video_examples("train", jitter=False, shuffle=False)]


@pytest.fixture(scope="module")
def learnt(captions, tmp_path_factory):
    ranks = train_bpe_ranks(captions + ["Describe the image."] * 4, vocab_size=400)
    tok = build_emu3_tokenizer(write_tiktoken_bpe(ranks, tmp_path_factory.mktemp("bpe") / "tiny.tiktoken"),
                               codebook_size=1024)  # fmt: skip
    return ranks, tok


def test_ranks_are_bytes_then_merges_and_emu3_specials_follow(learnt):
    ranks, tok = learnt
    assert sorted(ranks.values()) == list(range(len(ranks))) and 256 < len(ranks) <= 400
    assert all(ranks[bytes([b])] == b for b in range(256))
    assert tok.pad_token_id == len(ranks) and tok.visual_token_offset == len(ranks) + 211
    assert len(tok) == len(ranks) + 211 + 1024


def test_every_caption_word_is_one_token_and_tiktoken_agrees(learnt, captions):
    ranks, tok = learnt
    encoding = tiktoken.Encoding("learnt", pat_str=QWEN_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    for caption in captions:
        ids = tok.encode(caption)
        assert ids == encoding.encode(caption)
        assert len(ids) == len(caption.split())  # 'a', then ' small', ' red', ...
    assert tok.encode("Describe the image.") == encoding.encode("Describe the image.")


def test_any_text_round_trips_and_matches_tiktoken(learnt):
    ranks, tok = learnt
    encoding = tiktoken.Encoding("learnt", pat_str=QWEN_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABC.,!?0123456789\n\tépinkü→😀"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        ids = tok.encode(text)
        assert ids == encoding.encode(text), text
        assert tok.decode(ids) == text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 256"):
        train_bpe_ranks(["a"], vocab_size=100)
    with pytest.raises(TypeError, match="iterable of strings"):
        train_bpe_ranks("a small red circle", vocab_size=300)
