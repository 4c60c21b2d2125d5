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
        if "gpu" in item.keywords:
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
