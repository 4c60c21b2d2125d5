"""Train a small byte-level BPE vocabulary on a corpus, in the format Emu3's tokenizer reads (tiktoken ranks).

Emu3's text vocabulary is Qwen's byte-level BPE; a small model trained from scratch (such as the embedded model)
wants a vocabulary of a few hundred tokens learnt from its own captions instead. :func:`train_bpe_ranks` learns one
with the ``tokenizers`` library's BPE trainer over the same pre-tokenisation as Qwen (its split pattern, then bytes),
and returns ``{token_bytes: rank}``: the 256 single bytes, then the learnt merges in the order they were learnt.
:func:`~emu3_hf.processing.tokenization_emu3.build_emu3_tokenizer` turns the written file into an
:class:`~emu3_hf.processing.tokenization_emu3.Emu3Tokenizer` with Emu3's special and visual tokens after it, and
tiktoken reads the same file (the tests check that both give the same ids).

Example:
    ```python
    >>> from emu3_hf.processing.bpe import train_bpe_ranks
    >>> from emu3_hf.processing.tokenization_emu3 import build_emu3_tokenizer, write_tiktoken_bpe
    >>> ranks = train_bpe_ranks(["a small red circle", "a large blue square"], vocab_size=300)
    >>> tok = build_emu3_tokenizer(write_tiktoken_bpe(ranks, "/tmp/tiny.tiktoken"), codebook_size=1024)
    >>> tok.convert_ids_to_tokens(tok.encode(" circle")), tok.visual_token_offset == len(ranks) + 211
    (['Ġcircle'], True)
    ```
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE

from .tokenization_emu3 import QWEN_SPLIT_PATTERN, bpe_string_to_bytes

__all__ = ["train_bpe_ranks"]


def train_bpe_ranks(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> dict[bytes, int]:
    """Learn a byte-level BPE of at most ``vocab_size`` tokens (>= 256: every byte is a token) from ``texts``.

    Returns tiktoken ranks ``{token_bytes: rank}``, contiguous from 0: the single bytes first (in byte order), then
    each merged token in the order the trainer learnt it. Training stops early when no pair occurs at least
    ``min_frequency`` times, so a small corpus gets a vocabulary of just the pieces it repeats.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
        raise ValueError(f"vocab_size must be an integer >= 256 (every byte is a token), got {vocab_size!r}.")
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings (a list of captions), not one string.")
    backend = Tokenizer(BPE())
    backend.normalizer = normalizers.NFC()  # as Emu3Tokenizer encodes
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False, special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    backend.train_from_iterator(texts, trainer)
    learnt = sorted(backend.get_vocab().items(), key=lambda item: item[1])  # alphabet first, then merges in order
    merged = [bpe_string_to_bytes(token) for token, _ in learnt if len(bpe_string_to_bytes(token)) > 1]
    ordered = [bytes([b]) for b in range(256)] + merged
    if len(set(ordered)) != len(ordered):
        raise RuntimeError("The BPE trainer returned a duplicated token; this is a bug, please report it.")
    return {token: rank for rank, token in enumerate(ordered)}
