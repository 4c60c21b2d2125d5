"""Training's bad-input battery and `emu3 train`'s user experience: the whole input (data rows, files, captions,
resume point, output folder, model location) is checked before a model loads, a refused run leaves the output folder
absent or unchanged; `emu3 train` defaults to the shipped model, documents every default, reports a smoothed loss,
and writes an adapter card whose snippet runs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("datasets", reason="training needs `pip install 'emu3-hf[train]'`")

import emu3_cli  # noqa: E402
from emu3_cli import main as cli_main  # noqa: E402
from emu3_hf.cli_train import config_from_args  # noqa: E402
from emu3_hf.tiny_world import EMU3_TINY  # noqa: E402
from emu3_hf.training import TrainConfig, train  # noqa: E402
from emu3_hf.training import config as config_module  # noqa: E402
from emu3_hf.training import trainer as trainer_module  # noqa: E402
from emu3_hf.training.trainer import TrainResult  # noqa: E402


def _squares(folder: Path, lines: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (name, rgb) in enumerate([("red", (230, 20, 20)), ("blue", (30, 40, 220))] * 2):
        pixels = np.zeros((16, 16, 3), np.uint8)
        pixels[4:12, 4:12] = rgb
        Image.fromarray(pixels).save(folder / f"{name}{i}.png")
        rows.append({"file_name": f"{name}{i}.png", "text": f"a {name} square"})
    rows += lines or []
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("the model was loaded before the input was checked")

    monkeypatch.setattr(trainer_module, "_load_pipeline", refuse)


def _config(data, out, **kw) -> TrainConfig:
    values = dict(model=str(EMU3_TINY), data=str(data), output_dir=str(out), max_steps=1, report_to="none",
                  show_progress=False)  # fmt: skip
    return TrainConfig(**{**values, **kw})


@pytest.mark.parametrize("row, error, match", [
    ({"file_name": "notes.txt", "text": "x"}, ValueError, r"line 5: .*notes.txt is not a readable image"),
    ({"file_name": "cut.png", "text": "x"}, ValueError, r"line 5: .*cut.png is not a readable image"),
    ({"file_name": "notes.mp4", "text": "x"}, ValueError, r"line 5: .*notes.mp4 is not a readable video"),
    ({"file_name": "red0.png", "text": ""}, ValueError, r"line 5: `text` is empty .*--null-prompt-prob"),
    ({"file_name": "red0.png", "text": "   "}, ValueError, r"line 5: `text` is empty"),
    ({"file_name": "red0.png", "question": "what?", "answer": " "}, ValueError, r"line 5: `answer` is empty"),
    ({"file_name": "red0.png", "text": 3}, TypeError, r"line 5: `text` must be a string"),
    (["red0.png", "a list"], ValueError, r"line 5: each line must be a JSON object"),
])  # fmt: skip
def test_bad_rows_are_refused_before_the_model_loads(no_loading, tmp_path, row, error, match):
    data = _squares(tmp_path / "data", [row])
    (data / "notes.txt").write_text("a text file, not an image\n" * 20)
    shutil.copy(data / "notes.txt", data / "notes.mp4")
    png = (data / "red0.png").read_bytes()
    (data / "cut.png").write_bytes(png[: len(png) // 2])
    if isinstance(row, dict) and row["file_name"].endswith(".mp4"):
        pytest.importorskip("av")
    with pytest.raises(error, match=match):
        train(_config(data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_blank_captions_in_a_dataset_are_refused(no_loading, tmp_path):
    import datasets

    rows = datasets.Dataset.from_dict({"image": [str(_squares(tmp_path / "d") / "red0.png")] * 2, "text": ["a", ""]})
    with pytest.raises(ValueError, match=r"Row 1: `text` is empty"):
        train(TrainConfig(model=str(EMU3_TINY), data=rows, output_dir=str(tmp_path / "out"), report_to="none"))
    assert not (tmp_path / "out").exists()


def test_resume_and_output_folder_are_checked_first(no_loading, tmp_path):
    data = _squares(tmp_path / "data")
    with pytest.raises(ValueError, match="holds no checkpoint-<step> folder: drop it to start a new run"):
        train(_config(data, tmp_path / "out", resume_from_checkpoint="latest"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "trainer_state.json").write_text("{}")
    with pytest.raises(ValueError, match=r"not a complete training checkpoint: it lacks \['trainable.safetensors'"):
        train(_config(data, tmp_path / "out", resume_from_checkpoint=str(tmp_path / "ckpt")))
    with pytest.raises(ValueError, match="is not a folder; pass a checkpoint-<step> folder or 'latest'"):
        train(_config(data, tmp_path / "out", resume_from_checkpoint=str(tmp_path / "nowhere")))
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(ValueError, match=r"output_dir: .*file is a file, not a folder"):
        train(_config(data, tmp_path / "file"))
    with pytest.raises(ValueError, match=r"output_dir: .* lies under the file"):
        train(_config(data, tmp_path / "file" / "run"))
    with pytest.raises(ValueError, match=r"cache_dir: .*file is a file"):
        train(_config(data, tmp_path / "out", cache_dir=str(tmp_path / "file")))
    assert (tmp_path / "file").read_text() == "keep me" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("field, value, match", [
    ("model", "./no-such-pipeline", "model: ./no-such-pipeline is no folder"),
    ("model", "/tmp/x/y/z/missing", "is no folder"),
    ("vq", "../missing-vq", "vq: ../missing-vq is no folder"),
])  # fmt: skip
def test_a_missing_model_folder_is_named(no_loading, tmp_path, field, value, match):
    data = _squares(tmp_path / "data")
    with pytest.raises(ValueError, match=match):
        train(_config(data, tmp_path / "out", **{field: value}))
    assert not (tmp_path / "out").exists()


def test_a_hub_repo_id_is_left_to_the_hub(tmp_path):
    data = _squares(tmp_path / "data")
    _config(data, tmp_path / "out", model="BAAI/Emu3-Gen").check()  # no folder, but a valid repo id: accepted here


def test_tensorboard_asked_for_but_missing_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "_tensorboard_installed", lambda: False)
    config = _config(_squares(tmp_path / "data"), tmp_path / "out", report_to="tensorboard")
    with pytest.raises(ValueError, match="report_to='tensorboard' needs the tensorboard package"):
        config.check()
    assert TrainConfig(model="m", data="d", output_dir="o").tracker() is None  # auto: nothing without tensorboard
    monkeypatch.setattr(config_module, "_tensorboard_installed", lambda: True)
    assert TrainConfig(model="m", data="d", output_dir="o").tracker() == "tensorboard"
    assert TrainConfig(model="m", data="d", output_dir="o", report_to="none").tracker() is None


def test_cli_train_refusals_exit_2_before_loading(no_loading, tmp_path, capsys):
    data = _squares(tmp_path / "data", [{"file_name": "red0.png", "text": ""}])
    assert cli_main(["train", str(data), "-o", str(tmp_path / "out")]) == 2
    assert "line 5: `text` is empty" in capsys.readouterr().err
    data = _squares(tmp_path / "ok")
    for argv, match in ([["--resume", "latest"], "holds no checkpoint"], [["--model", "missing/x/y"], "is no folder"],
                        [["--vq", str(tmp_path)], "--vq / --tokenizer go with BAAI's LM folder"]):  # fmt: skip
        assert cli_main(["train", str(data), "-o", str(tmp_path / "out"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("emu3: ") and match in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


# ---- emu3 train: defaults, help, report, card -----------------------------------------------------------------------


def _train_parser():
    parser = emu3_cli.build_parser()
    return next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "train" in a.choices).choices[
        "train"]  # fmt: skip


def test_train_defaults_to_the_shipped_model_and_to_trainconfigs_defaults(tmp_path):
    from dataclasses import fields

    args = emu3_cli.build_parser().parse_args(["train", "data", "-o", str(tmp_path / "out")])
    config = config_from_args(args)
    assert config.model == str(EMU3_TINY) and config.vq is None
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for action in _train_parser()._actions:
        if action.dest in defaults and action.dest not in ("model", "data", "output_dir", "lora_targets"):
            assert action.default == defaults[action.dest], action.dest


def test_train_help_explains_every_flag_and_shows_the_defaults():
    parser = _train_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    text = " ".join(parser.format_help().split())
    for expected in ("(default: 1)", "(default: 0.0001)", "(default: 0.05)", "(default: 16)", "(default: 32.0)",
                     "(default: auto)", "OUTPUT_DIR/emu3-train", "the embedded model shipped with emu3-hf"):  # fmt: skip
        assert expected in text, expected
    assert "(default: None)" not in text and "(default: False)" not in text


def test_the_report_gives_the_mean_of_the_last_steps_and_the_held_out_loss():
    losses = list(np.linspace(2.0, 0.05, 30)) + [0.87]  # one noisy last step
    result = TrainResult(Path("out"), 31, losses, {10: 1.5, 31: 0.25})
    tail = losses[-20:]
    assert result.report() == (f"31 steps; training loss {np.mean(tail):.4f} (mean of the last 20 steps); "
                               f"held-out loss 0.2500 (step 31); saved in out")  # fmt: skip
    short = TrainResult(Path("o"), 2, [1.0, 3.0])
    assert short.report() == "2 steps; training loss 2.0000 (mean of the last 2 steps); saved in o"


def test_emu3_train_on_the_shipped_model_reports_and_writes_a_card_that_runs(tmp_path, capsys):
    """A short LoRA run of the embedded model through the CLI: the logging line, the closing report (equal to the
    mean of the recorded losses), and the adapter card's snippet, executed: load_lora_weights on the real folder."""
    import torch

    from emu3_hf.hub.cards import usage_code
    from emu3_hf.pipelines import Emu3Pipeline

    data, out = _squares(tmp_path / "data"), tmp_path / "run"
    code = cli_main(["train", str(data), "-o", str(out), "--max-steps", "3", "--batch-size", "2", "--lora-rank", "4",
                     "--eval-fraction", "0.25", "--report-to", "none", "--quiet", "--lr", "1e-3"])  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    record = json.loads((out / "training_config.json").read_text())
    mean = np.mean(record["losses"][-20:])
    held_out = record["eval_losses"]["3"]
    assert lines[0] == "not logging (--report-to none)"
    assert lines[-1] == (f"3 steps; training loss {mean:.4f} (mean of the last 3 steps); held-out loss "
                         f"{held_out:.4f} (step 3); saved in {out}")  # fmt: skip

    snippet = usage_code((out / "README.md").read_text())
    assert f'pipe.load_lora_weights("{out.resolve()}")' in snippet and "local/" not in snippet
    scope: dict = {}
    exec(snippet, scope)  # the card's own code, as written
    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(out)
    expected = pipe("a red square", output_type="tokens").images
    assert torch.equal(scope["codes"], expected)  # the snippet's pipeline carries the trained adapter
    assert scope["logits"].shape[-1] == pipe.model.config.vocab_size
