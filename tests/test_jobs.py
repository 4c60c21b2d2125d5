"""Batch jobs (emu3_hf.jobs): every image equals its prompt generated alone with the seed its metadata records;
batch size and resume point change nothing; the folder reads back with datasets' imagefolder; other settings or
other prompts into the same folder are refused before any model is loaded; captions; the CLI; the Hub push."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emu3_cli import main as cli_main
from emu3_hf.jobs import caption_images, generate_images, image_seed, push_job_to_hub, read_prompts
from emu3_hf.jobs.generate import ImageJob
from emu3_hf.pipelines import Emu3ChatPipeline, Emu3Pipeline

PIPELINE = Path(__file__).parent / "fixtures" / "baai-tiny-pipeline"  # random tiny weights: sampling varies
SAMPLING = dict(do_sample=True, top_k=40, guidance_scale=2.0)
ROWS = [
    {"prompt": "a red circle", "seed": 7, "num_images": 2},
    {"prompt": "a small blue square on a gray background", "height": 8, "width": 4},
    {"prompt": "wide", "ratio": "2:1", "negative_prompt": "blurry"},
    {"prompt": "a green triangle"},
]


@pytest.fixture(scope="module")
def pipe():
    pipe = Emu3Pipeline.from_pretrained(PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def metadata(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_image_seed_is_the_documented_hash():
    digest = hashlib.sha256(b"emu3-job:5:3:1").digest()
    assert image_seed(5, 3, 1) == int.from_bytes(digest[:8], "big") % 2**63
    assert len({image_seed(0, r, k) for r in range(50) for k in range(4)}) == 200


def test_each_image_is_its_prompt_alone_with_the_recorded_seed(pipe, prompts, tmp_path):
    result = generate_images(pipe, prompts, tmp_path / "out", batch_size=3, show_progress=False, seed=11, **SAMPLING)
    assert (result.made, result.skipped, result.total) == (5, 0, 5)
    lines = metadata(tmp_path / "out")
    assert [line["file_name"] for line in lines] == ["000000-0.png", "000000-1.png", "000001-0.png", "000002-0.png",
                                                     "000003-0.png"]  # fmt: skip
    assert [line["seed"] for line in lines] == [7, 8, image_seed(11, 1, 0), image_seed(11, 2, 0), image_seed(11, 3, 0)]
    sf = pipe.spatial_factor
    assert [(line["height"], line["width"]) for line in lines[2:4]] == [(8, 4), (2 * sf, 5 * sf)]  # 2:1 over area 48
    assert lines[3]["negative_prompt"] == "blurry" and lines[0]["negative_prompt"].startswith("lowres")
    for line in lines:
        alone = pipe(line["text"], negative_prompt=line["negative_prompt"], height=line["height"], width=line["width"],
                     generator=torch.Generator().manual_seed(line["seed"]), **SAMPLING).images[0]  # fmt: skip
        assert np.array_equal(pixels(tmp_path / "out" / line["file_name"]), np.asarray(alone)), line["file_name"]
    assert not np.array_equal(pixels(tmp_path / "out" / "000000-0.png"), pixels(tmp_path / "out" / "000000-1.png"))


class Interrupted(Exception):
    pass


class DiesAfter:
    """The pipeline, killed at its n-th call (an interrupted run)."""

    def __init__(self, pipe, calls: int):
        self.pipe, self.calls = pipe, calls

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.calls -= 1
        if self.calls < 0:
            raise Interrupted
        return self.pipe(*args, **kwargs)


def test_batch_size_and_resume_point_change_no_image(pipe, prompts, tmp_path):
    run = dict(show_progress=False, seed=3, model="tiny", **SAMPLING)
    generate_images(pipe, prompts, tmp_path / "one", batch_size=1, **run)
    with pytest.raises(Interrupted):
        generate_images(DiesAfter(pipe, 1), prompts, tmp_path / "resumed", batch_size=2, **run)
    assert not (tmp_path / "resumed" / "metadata.jsonl").exists()
    done = sorted(p.name for p in (tmp_path / "resumed").glob("*.png"))
    assert done == ["000000-0.png", "000000-1.png"]
    (tmp_path / "resumed" / "000000-1.png").unlink()  # lost: remade
    result = generate_images(pipe, prompts, tmp_path / "resumed", batch_size=4, **run)
    assert (result.made, result.skipped) == (4, 1)
    assert metadata(tmp_path / "one") == metadata(tmp_path / "resumed")
    for line in metadata(tmp_path / "one"):
        name = line["file_name"]
        assert np.array_equal(pixels(tmp_path / "one" / name), pixels(tmp_path / "resumed" / name))
    assert generate_images(pipe, prompts, tmp_path / "one", batch_size=4, **run).made == 0


def test_imagefolder_reads_the_folder_back(pipe, prompts, tmp_path):
    datasets = pytest.importorskip("datasets")
    generate_images(pipe, prompts, tmp_path / "out", show_progress=False, seed=0, **SAMPLING)
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "out"), split="train")
    assert len(ds) == 5
    lines = {line["text"] + str(line["image_index"]): line for line in metadata(tmp_path / "out")}
    for example in ds:
        line = lines[example["text"] + str(example["image_index"])]
        assert example["seed"] == line["seed"]
        assert np.array_equal(np.asarray(example["image"]), pixels(tmp_path / "out" / line["file_name"]))


def test_other_settings_or_other_prompts_are_refused_before_loading(pipe, prompts, tmp_path):
    out = tmp_path / "out"
    generate_images(pipe, ["a cat", "a dog"], out, show_progress=False, seed=0, model="tiny", **SAMPLING)
    with pytest.raises(ValueError, match="other settings.*top_k: 40 then, 41 now"):
        ImageJob.plan(["a cat", "a dog"], out, seed=0, model="tiny", **{**SAMPLING, "top_k": 41})
    with pytest.raises(ValueError, match="other settings.*seed: 0 then, 1 now"):
        ImageJob.plan(["a cat", "a dog"], out, seed=1, model="tiny", **SAMPLING)
    with pytest.raises(ValueError, match="000001-0.png was made for another row.*'a dog' then, 'a bird' now"):
        generate_images(pipe, ["a cat", "a bird"], out, show_progress=False, seed=0, model="tiny", **SAMPLING)
    assert generate_images(pipe, ["a cat", "a dog", "a bird"], out, show_progress=False, seed=0, model="tiny",
                           **SAMPLING).made == 1  # appending prompts extends the job  # fmt: skip
    assert len(metadata(out)) == 3


@pytest.mark.parametrize("line, match", [
    ('{"prompt": "a", "colour": 1}', r"line 1: unknown keys \['colour'\]"),
    ('{"prompt": "a", "ratio": "9:1"}', "line 1: ratio '9:1' is more elongated"),
    ('{"prompt": "a", "height": 8}', "line 1: give both `height` and `width`"),
    ('{"prompt": ""}', "line 1: `prompt` must be a non-empty string"),
    ('{"prompt": "a", "seed": -1}', r"line 1: `seed` must be an int >= 0"),
    ('{"prompt": "a", "num_images": 1.5}', "line 1: `num_images` must be a positive int"),
    ('prompt: a', "line 1: not JSON"),
])  # fmt: skip
def test_bad_prompt_rows_name_the_line(tmp_path, line, match):
    path = tmp_path / "p.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=match):
        read_prompts(path)


def test_text_files_and_datasets_give_the_same_rows(tmp_path):
    (tmp_path / "p.txt").write_text("a red circle\n\n  a blue square \n")
    rows = read_prompts(tmp_path / "p.txt")
    assert [(r.index, r.prompt) for r in rows] == [(0, "a red circle"), (1, "a blue square")]
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"caption": ["a red circle", "a blue square"]}).save_to_disk(tmp_path / "ds")
    assert [r.prompt for r in read_prompts(tmp_path / "ds")] == ["a red circle", "a blue square"]
    with pytest.raises(ValueError, match="no column 'prompt'"):
        read_prompts(tmp_path / "ds", column="prompt")
    with pytest.raises(ValueError, match="holds no prompt"):
        (tmp_path / "empty.txt").write_text("\n")
        read_prompts(tmp_path / "empty.txt")


def test_cli_prompts_job_equals_the_python_api(pipe, prompts, tmp_path, capsys):
    args = ["generate", "--prompts", str(prompts), "--model", str(PIPELINE), "--sample", "--top-k", "40",
            "--guidance-scale", "2", "--seed", "4", "--batch-size", "2", "--quiet"]  # fmt: skip
    assert cli_main([*args, "-o", str(tmp_path / "cli")]) == 0
    assert "5 images (0 already there)" in capsys.readouterr().out
    generate_images(pipe, prompts, tmp_path / "api", show_progress=False, seed=4, model=str(PIPELINE), **SAMPLING)
    assert metadata(tmp_path / "cli") == metadata(tmp_path / "api")
    for line in metadata(tmp_path / "api"):
        name = line["file_name"]
        assert np.array_equal(pixels(tmp_path / "cli" / name), pixels(tmp_path / "api" / name))
    assert cli_main([*args[:-1], "-o", str(tmp_path / "cli"), "--top-k", "41"]) == 2  # refused, nothing mixed in
    assert "other settings" in capsys.readouterr().err
    for argv in (["generate", "a cat", "--prompts", str(prompts), "-o", "x"], ["generate", "-o", "x"],
                 ["caption", "--images", str(tmp_path)]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2


def test_caption_job_equals_each_image_alone_and_resumes(pipe, tmp_path):
    chat = Emu3ChatPipeline.from_pretrained(PIPELINE)
    chat.set_progress_bar_config(disable=True)
    generate_images(pipe, ["a cat", "a dog", "a bird"], tmp_path / "imgs", show_progress=False, height=6, width=8)
    out = tmp_path / "captions.jsonl"
    result = caption_images(chat, tmp_path / "imgs", out, batch_size=1, max_new_tokens=5, show_progress=False)
    assert (result.made, result.total) == (3, 3)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["file_name"] for line in lines] == ["000000-0.png", "000001-0.png", "000002-0.png"]
    for line in lines:
        image = Image.open(tmp_path / "imgs" / line["file_name"]).convert("RGB")
        assert line["text"] == chat("Describe the image.", images=image, max_new_tokens=5).text[0]
    assert caption_images(chat, tmp_path / "imgs", out, max_new_tokens=5, show_progress=False).made == 0
    with pytest.raises(ValueError, match="max_new_tokens: 5 then, 6 now"):
        caption_images(chat, tmp_path / "imgs", out, max_new_tokens=6, show_progress=False)
    with pytest.raises(ValueError, match="must end in .jsonl"):
        caption_images(chat, tmp_path / "imgs", tmp_path / "captions.txt")


def test_push_uploads_the_folder_as_a_dataset_repo(pipe, tmp_path, monkeypatch):
    from test_hub_fakehub import FakeHub, serving

    out = tmp_path / "out"
    generate_images(pipe, ["a cat", "a dog"], out, show_progress=False, height=6, width=8)
    with pytest.raises(ValueError, match="no metadata.jsonl"):
        push_job_to_hub(tmp_path, "me/shapes", token="hf_fake")
    with serving(FakeHub(), monkeypatch) as hub:
        push_job_to_hub(out, "me/shapes", token="hf_fake", private=True)
        created = hub.created["me/shapes"]
        assert created["type"] == "dataset"
        assert created.get("visibility") == "private" or created.get("private") is True  # huggingface_hub 1.x / 0.x
        files = hub.repos["me/shapes"].files
        assert sorted(files) == ["000000-0.png", "000001-0.png", "README.md", "metadata.jsonl"]  # no hidden state
        assert files["000001-0.png"] == (out / "000001-0.png").read_bytes()
        assert files["metadata.jsonl"] == (out / "metadata.jsonl").read_bytes()
        assert b"task_categories:\n- text-to-image" in files["README.md"]
        assert any("/api/datasets/me/shapes/commit/" in path for _, path in hub.requests)


def test_cli_caption_job_equals_the_python_api(pipe, tmp_path, capsys):
    generate_images(pipe, ["a cat", "a dog"], tmp_path / "imgs", show_progress=False, height=6, width=8)
    args = ["caption", "--images", str(tmp_path / "imgs"), "--model", str(PIPELINE), "--max-new-tokens", "4", "--quiet"]
    assert cli_main([*args, "-o", str(tmp_path / "cli.jsonl"), "--batch-size", "2"]) == 0
    assert "2 captions (0 already there)" in capsys.readouterr().out
    chat = Emu3ChatPipeline.from_pretrained(PIPELINE)
    caption_images(chat, tmp_path / "imgs", tmp_path / "api.jsonl", model=str(PIPELINE), max_new_tokens=4,
                   batch_size=1, show_progress=False)  # fmt: skip
    assert (tmp_path / "cli.jsonl").read_text() == (tmp_path / "api.jsonl").read_text()
    assert cli_main([*args, "-o", str(tmp_path / "cli.txt")]) == 2
    assert "must end in .jsonl" in capsys.readouterr().err


def test_caption_job_reads_a_datasets_image_column(pipe, tmp_path):
    datasets = pytest.importorskip("datasets")
    generate_images(pipe, ["a cat", "a dog"], tmp_path / "imgs", show_progress=False, height=6, width=8)
    images = [Image.open(tmp_path / "imgs" / f"00000{i}-0.png").convert("RGB") for i in range(2)]
    ds = datasets.Dataset.from_dict({"picture": images}, features=datasets.Features({"picture": datasets.Image()}))
    ds.save_to_disk(tmp_path / "ds")
    chat = Emu3ChatPipeline.from_pretrained(PIPELINE)
    chat.set_progress_bar_config(disable=True)
    with pytest.raises(ValueError, match=r"no image column among \['image'\].*--column"):
        caption_images(chat, tmp_path / "ds", tmp_path / "c.jsonl", show_progress=False)
    caption_images(chat, tmp_path / "ds", tmp_path / "c.jsonl", column="picture", max_new_tokens=4, show_progress=False)
    lines = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [line["file_name"] for line in lines] == ["row-0", "row-1"]
    for line, image in zip(lines, images):
        assert line["text"] == chat("Describe the image.", images=image, max_new_tokens=4).text[0]


def test_a_size_the_vq_cannot_make_is_refused_before_any_image(pipe, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat"}\n{"prompt": "a dog", "height": 7, "width": 8}\n')
    with pytest.raises(ValueError, match="Prompt row 1 .*height 7 and width 8 must be multiples of .* 2"):
        generate_images(pipe, prompts, tmp_path / "out", show_progress=False)
    assert not list((tmp_path / "out").glob("*.png"))


def test_cli_video_job_clips_equal_each_prompt_alone(tmp_path, capsys):
    from emu3_hf.pipelines import Emu3VideoPipeline
    from emu3_hf.utils.video_export import export_to_gif, load_video

    (tmp_path / "p.txt").write_text("a clip\na square moving right\n")
    args = ["video", "--prompts", str(tmp_path / "p.txt"), "-o", str(tmp_path / "clips"), "--model", str(PIPELINE),
            "--height", "8", "--width", "12", "--num-frames", "8", "--fps", "4", "--sample", "--top-k", "20",
            "--guidance-scale", "1", "--quiet"]  # fmt: skip
    assert cli_main(args) == 0
    assert "2 videos (0 already there)" in capsys.readouterr().out
    lines = metadata(tmp_path / "clips")
    assert [(line["file_name"], line["num_frames"], line["fps"]) for line in lines] == [
        ("000000-0.gif", 8, 4), ("000001-0.gif", 8, 4)]  # fmt: skip
    pipe = Emu3VideoPipeline.from_pretrained(PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    for line in lines:
        alone = pipe(line["text"], num_frames=8, height=8, width=12, do_sample=True, top_k=20, guidance_scale=1.0,
                     generator=torch.Generator().manual_seed(line["seed"])).frames[0]  # fmt: skip
        export_to_gif(alone, tmp_path / "alone.gif", fps=4)
        written, expected = load_video(tmp_path / "clips" / line["file_name"]), load_video(tmp_path / "alone.gif")
        assert len(written) == 8
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(written, expected))
    assert cli_main([*args, "--fps", "5"]) == 2  # other settings: refused
