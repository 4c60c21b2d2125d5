"""What emu3-hf writes and what it agrees to read.

Saves replace a folder's content as a whole (no weight file of a previous save survives, whatever the sharding),
written files and folders get the modes plain ``open()`` / ``mkdir()`` give under the umask, pickled weights are
refused everywhere, and a checkpoint must cover its config exactly.
"""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import emu3_hf
from emu3_hf import Emu3LMForCausalLM, Emu3Tokenizer, Emu3VisionVQModel
from emu3_hf.pipelines import Emu3Pipeline
from emu3_hf.utils import atomic
from emu3_hf.utils.atomic import atomic_file, staged_folder

ASSET = Path(emu3_hf.__file__).parent / "assets" / "emu3-tiny"
CLASSES = {"lm": Emu3LMForCausalLM, "vq": Emu3VisionVQModel}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _shifted(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Change every parameter (so a stale file is told apart from a fresh one); returns the new state dict."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    stale = [k for k in expected if not torch.equal(state[k], expected[k])]
    assert not stale, f"{len(stale)} of {len(expected)} tensors are stale, e.g. {stale[:3]}"


def _shard_size(source: Path, parts: int | None):
    return {} if parts is None else {"max_shard_size": (source / "model.safetensors").stat().st_size // parts}


# ------------------------------------------------------------------------------------------ 1. whole-folder saves
# single file -> shards, shards -> single file, shards -> fewer shards
SHARDINGS = [(None, 4), (4, None), (6, 2)]


@pytest.mark.parametrize("before, after", SHARDINGS)
@pytest.mark.parametrize("kind", ["lm", "vq"])
def test_a_resave_loads_exactly_what_was_saved(kind, before, after, lm_dir, vq_dir, tmp_path):
    source = {"lm": lm_dir, "vq": vq_dir}[kind]
    model = CLASSES[kind].from_pretrained(source)
    folder = tmp_path / "model"
    model.save_pretrained(folder, **_shard_size(source, before))
    assert (folder / "model.safetensors.index.json").is_file() == (before is not None)
    expected = _shifted(model)
    model.save_pretrained(folder, **_shard_size(source, after))
    model.save_pretrained(tmp_path / "fresh", **_shard_size(source, after))  # what this save alone writes
    assert _files(folder) == _files(tmp_path / "fresh")
    _assert_same_state(CLASSES[kind].from_pretrained(folder), expected)


def test_a_pipeline_resave_keeps_user_files_and_drops_stale_weights(tmp_path):
    pipe = Emu3Pipeline.from_pretrained(ASSET)
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    (folder / "README.md").write_text("my notes")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "model" / "pytorch_model.bin").write_bytes(b"old pickle")  # stale weights of any format go too
    for sharding in ({"max_shard_size": 400_000}, {}):  # single file -> shards -> single file
        expected = {name: _shifted(getattr(pipe, name)) for name in ("model", "vq_model")}
        pipe.save_pretrained(folder, **sharding)
        pipe.save_pretrained(tmp_path / "fresh", **sharding)
        assert _files(folder) == sorted(_files(tmp_path / "fresh") + ["README.md", ".git/HEAD"])
        assert (folder / "README.md").read_text() == "my notes"
        loaded = Emu3Pipeline.from_pretrained(folder)
        for name, state in expected.items():
            _assert_same_state(getattr(loaded, name), state)
        shutil.rmtree(tmp_path / "fresh")
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no staging folder left behind


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_staged_folder_replaces_the_content_as_a_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # systems without renameat2
    target = tmp_path / "ckpt"
    for name in ("model.safetensors", "old.bin", "README.md", "config.json", "notes/n.txt", "lm/model.safetensors",
                 "lm/model.safetensors.index.json", "lm/tokenizer.json", "vq/model.safetensors", "vq/old.pt"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(f"old {name}")
    with staged_folder(target) as staging:
        (staging / "model-00001-of-00001.safetensors").write_text("new")  # weights here and in lm/, none in vq/
        (staging / "config.json").write_text("new config")
        (staging / "lm").mkdir()
        (staging / "lm" / "model.safetensors").write_text("new lm")
    assert _files(target) == ["README.md", "config.json", "lm/model.safetensors", "lm/tokenizer.json",
                              "model-00001-of-00001.safetensors", "notes/n.txt", "vq/model.safetensors", "vq/old.pt"]
    assert [(target / n).read_text() for n in ("config.json", "lm/model.safetensors", "notes/n.txt")] == [
        "new config", "new lm", "old notes/n.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_tokenizer_saved_next_to_a_model_keeps_its_weights(lm_dir, tmp_path):
    """transformers' habit: model.save_pretrained(d) then tokenizer.save_pretrained(d) (BAAI's repos hold both)."""
    Emu3LMForCausalLM.from_pretrained(lm_dir).save_pretrained(tmp_path / "lm")
    Emu3Tokenizer.from_pretrained(ASSET / "tokenizer").save_pretrained(tmp_path / "lm")
    with staged_folder(tmp_path / "lm") as staging:  # what save_pretrained_with_code does for the tokenizer
        (staging / "tokenizer_code.py").write_text("# code")
    assert {"model.safetensors", "tokenizer.json", "tokenizer_code.py"} <= set(_files(tmp_path / "lm"))
    _assert_same_state(Emu3LMForCausalLM.from_pretrained(tmp_path / "lm"), load_file(str(lm_dir / "model.safetensors")))


def test_staged_folder_refuses_a_file_before_the_save(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(NotADirectoryError, match="a file of that name exists"):
        with staged_folder(tmp_path / "out"):
            raise AssertionError("the save must not start")


def test_a_conversion_into_an_empty_folder_loads_exactly(tmp_path):
    from emu3_hf.conversion import convert_checkpoint

    output = tmp_path / "baai"
    output.mkdir()
    convert_checkpoint(ASSET, output, "baai", max_shard_size=1_000_000)
    assert len(list((output / "lm").glob("model-*.safetensors"))) > 1
    reference = load_file(str(ASSET / "model" / "model.safetensors"))
    _assert_same_state(Emu3LMForCausalLM.from_pretrained(output / "lm"), reference)


# ------------------------------------------------------------------------------------------ 2. modes under umask
@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_and_folders_get_the_umask_modes(umask, tmp_path):
    with atomic_file(tmp_path / "image.png") as tmp:
        Path(tmp).write_bytes(b"png")
    with staged_folder(tmp_path / "folder") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "file.txt").write_text("x")
    plain = tmp_path / "plain.txt"  # the reference: what open() and mkdir() give
    plain.write_text("x")
    (tmp_path / "plain-dir").mkdir()
    assert _mode(tmp_path / "image.png") == _mode(plain) == 0o666 & ~umask
    assert _mode(tmp_path / "folder") == _mode(tmp_path / "plain-dir") == 0o777 & ~umask
    assert _mode(tmp_path / "folder" / "sub" / "file.txt") == 0o666 & ~umask


def test_a_pipeline_save_gets_the_umask_modes(umask, tmp_path):
    Emu3Pipeline.from_pretrained(ASSET).save_pretrained(tmp_path / "pipe")
    entries = [tmp_path / "pipe", *(tmp_path / "pipe").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): _mode(p) for p in entries}
    want = {str(p.relative_to(tmp_path)): (0o777 if p.is_dir() else 0o666) & ~umask for p in entries}
    assert modes == want


def test_replaced_files_and_folders_keep_their_mode(umask, tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o640)
    with atomic_file(target) as tmp:
        Path(tmp).write_text("new")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    folder.chmod(0o750)
    with staged_folder(folder) as staging:
        (staging / "a.txt").write_text("a")
    assert (_mode(target), _mode(folder), target.read_text()) == (0o640, 0o750, "new")


# ------------------------------------------------------------------------------------------ 3. no pickles
@pytest.fixture
def no_unpickling(monkeypatch):
    """Any attempt to unpickle fails the test: the refusal must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


def _pickled_copy(source: Path, folder: Path, name: str = "pytorch_model.bin") -> Path:
    shutil.copytree(source, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / name)
    weights.unlink()
    return folder


@pytest.mark.parametrize("kind", ["lm", "vq"])
@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt"])
def test_pickled_model_weights_are_refused_before_loading(kind, name, lm_dir, vq_dir, tmp_path, no_unpickling):
    from transformers import AutoModel, AutoModelForCausalLM

    folder = _pickled_copy({"lm": lm_dir, "vq": vq_dir}[kind], tmp_path / kind, name)
    for loader in (CLASSES[kind], AutoModelForCausalLM if kind == "lm" else AutoModel):
        with pytest.raises(ValueError, match=rf"'{folder}' holds its weights as pickle files \({name}\).*safetensors"):
            loader.from_pretrained(folder)


def test_use_safetensors_false_is_refused(lm_dir):
    with pytest.raises(ValueError, match="use_safetensors=False.*safetensors only"):
        Emu3LMForCausalLM.from_pretrained(lm_dir, use_safetensors=False)


@pytest.mark.parametrize("component", ["model", "vq_model"])
def test_a_pipeline_with_pickled_weights_is_refused(component, tmp_path, no_unpickling):
    folder = tmp_path / "pipe"
    shutil.copytree(ASSET, folder)
    shutil.rmtree(folder / component)
    _pickled_copy(ASSET / component, folder / component)
    with pytest.raises(ValueError, match="pickle files.*Convert"):
        Emu3Pipeline.from_pretrained(folder)


def _pickled_adapter(tmp_path: Path) -> Path:
    adapter = tmp_path / "adapter"
    shutil.copytree(Path(emu3_hf.__file__).parent / "assets" / "emu3-tiny-pink-lora", adapter)
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), adapter / "adapter_model.bin")
    weights.unlink()
    return adapter


def test_pickled_adapters_are_refused(tmp_path, no_unpickling):
    from emu3_hf.conversion.lora import convert_lora_adapter

    adapter = _pickled_adapter(tmp_path)
    with pytest.raises(ValueError, match=r"adapter '.*' holds its weights as pickle files \(adapter_model.bin\)"):
        Emu3Pipeline.from_pretrained(ASSET).load_lora_weights(adapter)
    with pytest.raises(ValueError, match=r"pickle files \(adapter_model.bin\).*safetensors"):
        convert_lora_adapter(adapter, tmp_path / "out", "native")
    assert not (tmp_path / "out").exists()


def test_pickled_training_checkpoints_are_refused(tmp_path, no_unpickling):
    from emu3_hf.training.checkpoint import load_checkpoint

    folder = tmp_path / "checkpoint-10"  # what accelerate's save_state writes
    folder.mkdir()
    for name in ("optimizer.bin", "pytorch_model.bin", "random_states_0.pkl"):
        torch.save({}, folder / name)
    with pytest.raises(ValueError, match="training checkpoint .* holds its weights as pickle files"):
        load_checkpoint(folder, torch.nn.Linear(1, 1), None, None, rank=0)


# ------------------------------------------------------------------------------------------ 4. exact coverage
def _with_config(source: Path, folder: Path, **changes) -> Path:
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


LM_CHANGES = [({"num_hidden_layers": 3}, r"missing model\.layers\.2\."),
              ({"num_hidden_layers": 1}, r"unexpected model\.layers\.1\."),
              ({"vocab_size": 2075}, r"reshaped lm_head\.weight \(checkpoint \(2067, 64\), config \(2075, 64\)\)")]
VQ_CHANGES = [({"num_res_blocks": 2}, r"missing decoder\."),
              ({"attn_resolutions": []}, r"unexpected (en|de)coder\..*attn"),
              ({"codebook_size": 512}, r"reshaped quantize\.embedding\.weight \(checkpoint \(256, 4\)")]


@pytest.mark.parametrize("kind, changes, match", [("lm", *c) for c in LM_CHANGES] + [("vq", *c) for c in VQ_CHANGES])
def test_a_checkpoint_that_does_not_cover_its_config_is_refused(kind, changes, match, lm_dir, vq_dir, tmp_path):
    folder = _with_config({"lm": lm_dir, "vq": vq_dir}[kind], tmp_path / kind, **changes)
    with pytest.raises(ValueError, match=rf"weights in '{folder}' do not cover its config.json exactly: .*{match}"):
        CLASSES[kind].from_pretrained(folder)


def test_ignore_mismatched_sizes_keeps_its_meaning_but_not_for_missing_tensors(lm_dir, tmp_path):
    folder = _with_config(lm_dir, tmp_path / "vocab", vocab_size=2075)
    model, info = Emu3LMForCausalLM.from_pretrained(folder, ignore_mismatched_sizes=True, output_loading_info=True)
    assert model.lm_head.weight.shape[0] == 2075 and info["mismatched_keys"]
    layers = _with_config(lm_dir, tmp_path / "layers", num_hidden_layers=3)
    with pytest.raises(ValueError, match="missing model.layers.2"):
        Emu3LMForCausalLM.from_pretrained(layers, ignore_mismatched_sizes=True)


def test_tied_weights_are_not_missing(lm_dir, tmp_path):
    config = Emu3LMForCausalLM.config_class.from_pretrained(lm_dir, tie_word_embeddings=True)
    model = Emu3LMForCausalLM(config)
    model.save_pretrained(tmp_path / "tied")
    assert "lm_head.weight" not in load_file(str(tmp_path / "tied" / "model.safetensors"))
    loaded = Emu3LMForCausalLM.from_pretrained(tmp_path / "tied")
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    _assert_same_state(loaded, model.state_dict())


def test_private_writers_still_give_the_umask_modes(umask, tmp_path):
    """safetensors' save_file creates 0o600 files whatever the umask; what we write through it is not private."""
    from safetensors.torch import save_file

    with atomic_file(tmp_path / "a.safetensors") as tmp:
        save_file({"x": torch.zeros(1)}, tmp)
    with staged_folder(tmp_path / "ckpt") as staging:
        save_file({"x": torch.zeros(1)}, str(staging / "b.safetensors"))
    assert _mode(tmp_path / "a.safetensors") == _mode(tmp_path / "ckpt" / "b.safetensors") == 0o666 & ~umask


def test_a_base_model_reads_a_checkpoint_with_a_head(lm_dir):
    """transformers' convention: AutoModel on a causal-LM checkpoint drops the LM head and nothing else."""
    from emu3_hf import Emu3LMModel

    base = Emu3LMModel.from_pretrained(lm_dir)
    reference = load_file(str(lm_dir / "model.safetensors"))
    _assert_same_state(base, {k.removeprefix("model."): v for k, v in reference.items() if k != "lm_head.weight"})
