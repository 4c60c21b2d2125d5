"""emu3_hf.training: sequences and labels against BAAI's SFT layout, the collator against transformers' own, the VQ
cache, and LoRA / full fine-tuning on BAAI's tiny fixtures (the loss falls, resume is exact, the adapter loads in
the pipeline and in PEFT alike). Multi-process runs (DDP, FSDP2) live in test_training_distributed.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

pytest.importorskip("datasets", reason="training needs `pip install 'emu3-hf[train]'`")

from emu3_hf.training import (  # noqa: E402
    IGNORE_INDEX,
    Emu3DataCollator,
    LengthGroupedBatches,
    TrainConfig,
    example_ids,
    example_loss_on,
    labels_for,
    null_prompt_dropped,
    tokenize_dataset,
    train,
)

COLORS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220), "white": (250, 250, 250)}


def write_image_folder(folder: Path, per_color: int = 2, size: int = 32) -> Path:
    """Solid squares with captions, in the metadata.jsonl folder layout."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, color in COLORS.items():
        for j in range(per_color):
            pixels = np.zeros((size, size, 3), np.uint8)
            pixels[:] = color
            Image.fromarray(pixels).save(folder / f"{name}{j}.png")
            lines.append(json.dumps({"file_name": f"{name}{j}.png", "text": f"a {name} square"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def pipe(make_tiny_pipeline):
    return make_tiny_pipeline()


@pytest.fixture(scope="module")
def processor(pipe):
    return pipe.make_processor()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("train-data") / "squares")


@pytest.fixture(scope="module")
def base_config(lm_dir, vq_dir, tiny_tokenizer_dir, image_folder):
    def config(output_dir, **overrides):
        values = dict(model=str(lm_dir), vq=str(vq_dir), tokenizer=str(tiny_tokenizer_dir), data=str(image_folder),
                      output_dir=str(output_dir), per_device_batch_size=2, learning_rate=1e-2, report_to="none",
                      show_progress=False, lora_rank=8, seed=0)  # fmt: skip
        values.update(overrides)
        return TrainConfig(**values)

    return config


# ------------------------------------------------------------------------------------------------------ sequences
def test_generation_sequence_is_the_pipeline_prompt_then_the_image(processor, pipe):
    codes = torch.randint(0, processor.special.codebook_size, (3, 4), generator=torch.Generator().manual_seed(0))
    example = {"codes": codes.flatten().tolist(), "grid": [0, 3, 4], "text": "a red square"}
    ids, start = example_ids(processor, example)
    prompt = processor(text=["a red square"], mode="G", height=3, width=4, padding=False, return_tensors=None)
    prompt = prompt["input_ids"][0]
    special = processor.special
    # BAAI's SFT sequence: BOS text BOI "h*w" IMG rows (EOL) EOF EOI; what the engine prompts with is its prefix
    assert ids[: len(prompt)] == prompt
    assert ids[-1] == special.eoi and ids[-2] == special.eof and ids[0] == special.bos
    assert ids[start] == special.boi
    assert torch.equal(processor.parse_codes(ids)[0], codes[None])  # (T, h, w)
    rows = ids[len(prompt) : -2]
    assert rows.count(special.eol) == 3 and len(rows) == 3 * 5

    dropped, _ = example_ids(processor, example, drop_prompt=True)
    empty = processor(text=[""], mode="G", height=3, width=4, padding=False, return_tensors=None)["input_ids"][0]
    assert dropped[: len(empty)] == empty and dropped[len(empty) :] == ids[len(prompt) :]


def test_understanding_sequence_is_the_chat_prompt_then_the_answer(processor):
    codes = torch.randint(0, processor.special.codebook_size, (2, 2), generator=torch.Generator().manual_seed(1))
    example = {"codes": codes.flatten().tolist(), "grid": [0, 2, 2], "question": "what colour?", "answer": "red"}
    ids, start = example_ids(processor, example)
    prompt = processor(text=["what colour?"], codes=[codes], mode="U", padding=False, return_tensors=None)
    assert ids[:start] == prompt["input_ids"][0]
    answer = processor.tokenizer("red", add_special_tokens=False)["input_ids"]
    assert ids[start:] == [*answer, processor.special.eos]


def test_labels_keep_exactly_the_chosen_tokens(processor):
    special = processor.special
    codes = torch.arange(6) % special.codebook_size
    gen, gen_start = example_ids(processor, {"codes": codes.tolist(), "grid": [0, 2, 3], "text": "blue"})
    visual = [special.visual_offset <= i < special.visual_offset + special.codebook_size for i in gen]
    labels = labels_for(gen, gen_start, special, "vision")
    assert [label != IGNORE_INDEX for label in labels] == visual and sum(visual) == 6  # BAAI: codebook range only
    assert all(label == i for label, i in zip(labels, gen) if label != IGNORE_INDEX)
    everything = labels_for(gen, gen_start, special, "all")
    assert everything[0] == IGNORE_INDEX and everything[1:] == gen[1:]

    chat, chat_start = example_ids(processor, {"codes": codes.tolist(), "grid": [0, 2, 3], "question": "q?",
                                               "answer": "blue"})  # fmt: skip
    text = labels_for(chat, chat_start, special, "text")
    assert text[:chat_start] == [IGNORE_INDEX] * chat_start and text[chat_start:] == chat[chat_start:]
    with pytest.raises(ValueError, match="loss_on must be one of"):
        labels_for(chat, chat_start, special, "images")
    # "auto" (a mixture of tasks): the answer of an understanding example, the visual tokens of a generation one
    assert example_loss_on("auto", {"question": "q?", "answer": "blue"}) == "text"
    assert example_loss_on("auto", {"text": "blue"}) == "vision" and example_loss_on("all", {"answer": "b"}) == "all"
    with pytest.raises(ValueError, match="resolve 'auto' per example"):
        labels_for(chat, chat_start, special, "auto")


def test_null_prompt_drops_are_reproducible_and_have_the_asked_rate():
    draws = [null_prompt_dropped(7, 2, i, 0.1) for i in range(20000)]
    assert draws == [null_prompt_dropped(7, 2, i, 0.1) for i in range(20000)]
    assert draws != [null_prompt_dropped(7, 3, i, 0.1) for i in range(20000)]
    assert 0.09 < sum(draws) / len(draws) < 0.11
    assert not any(null_prompt_dropped(7, 2, i, 0.0) for i in range(100))


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_like_transformers(tiny_tokenizer, side):
    from transformers import DataCollatorForSeq2Seq

    rng = random.Random(0)
    features = []
    for n in (5, 9, 2):
        ids = [rng.randrange(10, 1000) for _ in range(n)]
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX, *ids[1:]]})
    ours = Emu3DataCollator(tiny_tokenizer.pad_token_id, padding_side=side, pad_to_multiple_of=4)(features)
    tiny_tokenizer.padding_side = side
    try:
        peer = DataCollatorForSeq2Seq(tiny_tokenizer, padding="longest", pad_to_multiple_of=4, return_tensors="pt")
        theirs = peer([{**f, "attention_mask": [1] * len(f["input_ids"])} for f in features])
    finally:
        tiny_tokenizer.padding_side = "left"
    assert ours["input_ids"].shape == (3, 12)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(ours[key], theirs[key]), key
    with pytest.raises(ValueError, match="padding_side"):
        Emu3DataCollator(0, padding_side="middle")


def test_length_grouped_batches_are_reproducible_whole_and_shardable():
    lengths = [random.Random(i).randrange(10, 500) for i in range(103)]
    batches = LengthGroupedBatches(lengths, global_batch_size=8, seed=3, group_batches=4)
    epoch0 = batches.epoch(0)
    assert len(epoch0) == len(batches) == 12 and all(len(b) == 8 for b in epoch0)
    flat = [i for b in epoch0 for i in b]
    assert len(set(flat)) == len(flat) == 96
    assert epoch0 == LengthGroupedBatches(lengths, 8, seed=3, group_batches=4).epoch(0)
    assert epoch0 != batches.epoch(1)
    assert list(batches.iterate(0, start=5)) == epoch0[5:]
    # grouping lengths pads less than a plain shuffle
    plain = LengthGroupedBatches(lengths, 8, seed=3, group_batches=0)
    padding = lambda bs: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)  # noqa: E731
    assert padding(epoch0) < padding(plain.epoch(0)) / 2
    # the ranks' shards partition the batch, in rank order
    shards = [LengthGroupedBatches.shard(epoch0[0], rank, 4) for rank in range(4)]
    assert [i for s in shards for i in s] == epoch0[0]
    with pytest.raises(ValueError, match="cannot be split"):
        LengthGroupedBatches.shard(epoch0[0], 0, 3)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        LengthGroupedBatches(lengths[:5], 8)


# ------------------------------------------------------------------------------------------------------- VQ cache
def test_cache_holds_the_vq_codes_and_resumes(processor, image_folder, tmp_path, monkeypatch):
    cached = tokenize_dataset(image_folder, processor, tmp_path / "cache", batch_size=3, chunk_size=3,
                              show_progress=False)  # fmt: skip
    assert len(cached) == 8 and sorted(p.name for p in (tmp_path / "cache").glob("chunk-*")) == [
        "chunk-00000", "chunk-00001", "chunk-00002"]  # fmt: skip
    lines = [json.loads(line) for line in (image_folder / "metadata.jsonl").read_text().splitlines()]
    for row, line in zip(cached, lines):
        with Image.open(image_folder / line["file_name"]) as image:
            expected = processor.encode_images([image.convert("RGB")])[0]  # one image at a time
        t, h, w = row["grid"]
        assert t == 0 and (h, w) == tuple(expected.shape) and row["codes"] == expected.flatten().tolist()
        assert row["text"] == line["text"]

    calls = []
    encode = type(processor.vq_model).encode
    monkeypatch.setattr(type(processor.vq_model), "encode", lambda self, x, *a, **k: calls.append(len(x)) or
                        encode(self, x, *a, **k))  # fmt: skip
    again = tokenize_dataset(image_folder, processor, tmp_path / "cache", batch_size=3, chunk_size=3,
                             show_progress=False)  # fmt: skip
    assert calls == [] and again["codes"] == cached["codes"]  # a second run reuses every chunk

    import shutil

    shutil.rmtree(tmp_path / "cache" / "chunk-00001")  # as if killed while tokenizing the second chunk
    resumed = tokenize_dataset(image_folder, processor, tmp_path / "cache", batch_size=3, chunk_size=3,
                               show_progress=False)  # fmt: skip
    assert sum(calls) == 3 and resumed["codes"] == cached["codes"]


def test_cache_refuses_other_data(processor, image_folder, tmp_path):
    tokenize_dataset(image_folder, processor, tmp_path / "cache", chunk_size=4, show_progress=False)
    other = write_image_folder(tmp_path / "other", per_color=1)
    with pytest.raises(ValueError, match="holds codes of other examples"):
        tokenize_dataset(other, processor, tmp_path / "cache", chunk_size=4, show_progress=False)
    weight = next(processor.vq_model.parameters())
    original = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.01)  # another VQ
    try:
        with pytest.raises(ValueError, match="another VQ"):
            tokenize_dataset(image_folder, processor, tmp_path / "cache", chunk_size=4, show_progress=False)
    finally:
        with torch.no_grad():
            weight.copy_(original)


@pytest.mark.parametrize(
    ("line", "error", "match"),
    [
        ('{"text": "x"}', ValueError, "needs a `file_name`"),
        ('{"file_name": "missing.png", "text": "x"}', FileNotFoundError, "does not exist"),
        ('{"file_name": "red0.png"}', ValueError, "give `text`"),
        ("not json", ValueError, "not JSON"),
    ],
)
def test_bad_metadata_is_named(processor, image_folder, tmp_path, line, error, match):
    import shutil

    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(image_folder / "red0.png", folder / "red0.png")
    (folder / "metadata.jsonl").write_text(line + "\n")
    with pytest.raises(error, match=match):
        tokenize_dataset(folder, processor, tmp_path / "cache", show_progress=False)


def _mixed_rows(processor, image_folder):
    """Two images and two already tokenized rows (an image grid and a clip grid) in one dataset."""
    import datasets

    with Image.open(image_folder / "red0.png") as image:
        red = image.convert("RGB")
    with Image.open(image_folder / "blue0.png") as image:
        blue = image.convert("RGB")
    size = processor.vq_model.config.codebook_size
    return datasets.Dataset.from_dict({
        "image": [red, None, blue, None],
        "codes": [None, list(range(16)), None, [size - 1] * 32],
        "grid": [None, [0, 4, 4], None, [2, 4, 4]],
        "text": ["a red square", "made-up codes", "a blue square", "a made-up clip"],
    })  # fmt: skip


def test_already_tokenized_rows_are_kept_and_the_images_encoded(processor, image_folder, tmp_path):
    rows = _mixed_rows(processor, image_folder)
    cached = tokenize_dataset(rows, processor, tmp_path / "cache", batch_size=2, show_progress=False)
    for row, source in zip(cached, rows):
        if source["codes"] is None:
            expected = processor.encode_images([source["image"]])[0]
            assert row["grid"] == [0, *expected.shape] and row["codes"] == expected.flatten().tolist()
        else:
            assert row["grid"] == source["grid"] and row["codes"] == source["codes"]
        assert row["text"] == source["text"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(codes=[None, list(range(15)), None, [0] * 32]), "needs 16 codes, got 15"),
        (dict(codes=[None, [-1] * 16, None, [0] * 32]), r"must lie in \[0, "),
        (dict(grid=[None, [4, 4], None, [2, 4, 4]]), r"grid must be \[T, h, w\]"),
        (dict(image=["red", None, None, None]), "has codes and an image"),
        (dict(codes=[None, list(range(16)), None, None], grid=[None, [0, 4, 4], None, None]), "Row 3 has no image"),
    ],
)
def test_bad_tokenized_rows_are_named_before_any_encoding(processor, image_folder, tmp_path, monkeypatch, change,
                                                          match):  # fmt: skip
    import datasets

    rows = _mixed_rows(processor, image_folder).to_dict()
    if "image" in change:  # a red square where row 1 already has codes
        change = dict(image=[rows["image"][0], rows["image"][0], rows["image"][2], None])
    rows.update(change)
    calls = []
    monkeypatch.setattr(type(processor.vq_model), "encode", lambda self, *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=match):
        tokenize_dataset(datasets.Dataset.from_dict(rows), processor, tmp_path / "cache", show_progress=False)
    assert calls == []
    no_grid = datasets.Dataset.from_dict({k: v for k, v in _mixed_rows(processor, image_folder).to_dict().items()
                                          if k != "grid"})  # fmt: skip
    with pytest.raises(ValueError, match="needs a `grid` column"):
        tokenize_dataset(no_grid, processor, tmp_path / "cache2", show_progress=False)


# ------------------------------------------------------------------------------------------------------- training
def vision_loss(lm, processor, folder: Path) -> float:
    """The mean next-token loss on the visual tokens of every captioned image in ``folder`` (an independent build
    of BAAI's SFT sequences from the processor's public pieces)."""
    lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    special, losses = processor.special, []
    for line in lines:
        with Image.open(folder / line["file_name"]) as image:
            codes = processor.encode_images([image.convert("RGB")])[0]
        h, w = codes.shape
        prompt = processor(text=[line["text"]], mode="G", height=h, width=w, padding=False, return_tensors=None)
        block = processor.vision_prompt_ids(codes)  # BOI "h*w" IMG rows EOF EOI
        ids = torch.tensor([*prompt["input_ids"][0], *block[block.index(special.img) + 1 :]])
        assert torch.equal(processor.parse_codes(ids.tolist())[0], codes[None])
        labels = torch.where(special.is_visual(ids), ids, IGNORE_INDEX)
        with torch.no_grad():
            losses.append(float(lm(input_ids=ids[None], labels=labels[None]).loss))
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def lora_run(base_config, tmp_path_factory):
    output = tmp_path_factory.mktemp("lora-run")
    config = base_config(output, max_steps=40, save_steps=10, lora_dropout=0.1, null_prompt_prob=0.3)
    return config, train(config)


def test_lora_training_lowers_the_loss_and_loads_everywhere(lora_run, make_tiny_pipeline, processor, image_folder):
    from peft import PeftModel

    config, result = lora_run
    assert result.global_step == 40 and len(result.losses) == 40
    out = Path(result.output_dir)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "training_config.json"} <= {
        p.name for p in out.iterdir()}  # fmt: skip
    assert json.loads((out / "training_config.json").read_text())["config"]["lora_rank"] == 8

    pipe = make_tiny_pipeline()
    before = vision_loss(pipe.model, processor, image_folder)
    pipe.load_lora_weights(out)
    after = vision_loss(pipe.model, processor, image_folder)
    # untrained, the model guesses about uniformly over its vocabulary; trained, it gives the right codes several
    # times that probability (in this 64-wide LM, LoRA cannot rescale the normed hidden state: it learns slowly)
    uniform = np.log(pipe.model.config.vocab_size)
    assert before > uniform - 0.5 and after < uniform - 1.0, (before, after, uniform)
    assert min(result.grad_norms) > 0.05, result.grad_norms  # LoRA gradients do not vanish (BAAI Emu3 issue 63)

    # PEFT reads the same adapter: its model gives the pipeline's logits
    peft_model = PeftModel.from_pretrained(make_tiny_pipeline().model, out).eval()
    ids = torch.tensor([[processor.special.bos, 100, 200, processor.special.boi]])
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, pipe.model(input_ids=ids).logits)


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(lora_run, base_config, tmp_path):
    config, result = lora_run
    out = Path(result.output_dir)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]  # the last 2
    resumed = train(base_config(tmp_path / "resumed", max_steps=40, save_steps=10, lora_dropout=0.1,
                                null_prompt_prob=0.3, resume_from_checkpoint=str(out / "checkpoint-20"),
                                cache_dir=str(out / "vq-cache")))  # fmt: skip
    assert resumed.losses == result.losses  # the history is restored and the remaining steps repeat exactly
    expected = load_file(str(out / "adapter_model.safetensors"))
    got = load_file(str(Path(resumed.output_dir) / "adapter_model.safetensors"))
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_full_fine_tuning_exports_a_pipeline_with_a_lower_loss(base_config, tmp_path, make_tiny_pipeline,
                                                               processor, image_folder):  # fmt: skip
    from emu3_hf.pipelines import Emu3Pipeline

    result = train(base_config(tmp_path / "full", lora=False, max_steps=20, learning_rate=1e-2))
    trained = Emu3Pipeline.from_pretrained(result.output_dir)
    base = make_tiny_pipeline()
    before, after = vision_loss(base.model, processor, image_folder), vision_loss(trained.model, processor, image_folder)
    # below the uniform guess over the codebook alone: it learned which tokens come, and which of them
    assert before > np.log(base.model.config.vocab_size) - 0.5 and after < np.log(processor.special.codebook_size) - 1
    for name, tensor in base.vq_model.state_dict().items():  # the VQ is not trained
        assert torch.equal(trained.vq_model.state_dict()[name], tensor), name
    assert (Path(result.output_dir) / "model_index.json").is_file()


def test_held_out_loss_is_reported(base_config, tmp_path):
    result = train(base_config(tmp_path / "eval", max_steps=2, eval_fraction=0.25, eval_steps=1))
    assert sorted(result.eval_losses) == [1, 2] and all(np.isfinite(v) for v in result.eval_losses.values())


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"lora_rank": 0}, ValueError, "lora_rank must be > 0"),
        ({"loss_on": "pixels"}, ValueError, "loss_on must be one of"),
        ({"data": "/nowhere/at/all"}, FileNotFoundError, "does not exist"),
        ({"vq": None}, ValueError, "not a pipeline folder"),
        ({"lora": False, "use_dora": True}, ValueError, "LoRA options"),
        ({"eval_fraction": 0.2, "eval_data": "."}, ValueError, "not both"),
        ({"lora_targets": ["q_proj", "nonexistent_proj"]}, ValueError, "name no linear layer"),
        ({"data": "BROKEN"}, FileNotFoundError, "missing.png does not exist"),
    ],
)
def test_bad_settings_fail_before_any_model_loads(base_config, tmp_path, overrides, error, match):
    if overrides.get("data") == "BROKEN":
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "metadata.jsonl").write_text('{"file_name": "missing.png", "text": "x"}\n')
        overrides = {"data": str(tmp_path / "broken")}
    with pytest.raises(error, match=match):
        train(base_config(tmp_path / "bad", max_steps=1, **overrides))
    assert not (tmp_path / "bad").exists()  # nothing written: no VQ cache, no logs, no adapter


def test_emu3_train_command(lm_dir, vq_dir, tiny_tokenizer_dir, image_folder, tmp_path, capsys):
    from emu3_cli import main

    code = main(["train", str(image_folder), "--model", str(lm_dir), "--vq", str(vq_dir), "--tokenizer",
                 str(tiny_tokenizer_dir), "-o", str(tmp_path / "cli"), "--max-steps", "2", "--batch-size", "2",
                 "--lora-rank", "4", "--report-to", "none", "--quiet"])  # fmt: skip
    assert code in (0, None)
    assert "2 steps; training loss" in capsys.readouterr().out
    config = json.loads((tmp_path / "cli" / "adapter_config.json").read_text())
    assert config["r"] == 4

    # --resume latest: continue from the newest checkpoint in the output folder
    args = ["train", str(image_folder), "--model", str(lm_dir), "--vq", str(vq_dir), "--tokenizer",
            str(tiny_tokenizer_dir), "-o", str(tmp_path / "again"), "--batch-size", "2", "--report-to", "none",
            "--quiet", "--save-steps", "1"]  # fmt: skip
    assert main([*args, "--max-steps", "2"]) in (0, None)
    assert (tmp_path / "again" / "checkpoint-1").is_dir()
    capsys.readouterr()
    assert main([*args, "--max-steps", "3", "--resume", "latest"]) in (0, None)
    assert "3 steps; training loss" in capsys.readouterr().out
    assert main(["train", str(image_folder), "--model", str(lm_dir), "-o", str(tmp_path / "x"), "--lora-rank",
                 "0"]) == 2  # fmt: skip
    assert "lora_rank must be > 0" in capsys.readouterr().err


def test_clips_and_questions_train_in_their_own_layouts(base_config, processor, tmp_path):
    """A folder of GIF clips (text-to-video) and one of image questions (understanding, loss on the answer)."""
    from emu3_hf.utils.video_export import export_to_gif

    clips = tmp_path / "clips"
    clips.mkdir()
    lines = []
    for name, rgb in COLORS.items():
        frames = []
        for t in range(8):  # a dark bar moving right (distinct frames: GIF writers drop repeated ones)
            pixels = np.full((32, 32, 3), rgb, np.uint8)
            pixels[:, 4 * t : 4 * t + 4] = 0
            frames.append(Image.fromarray(pixels))
        export_to_gif(frames, clips / f"{name}.gif")
        lines.append(json.dumps({"file_name": f"{name}.gif", "text": f"a bar crossing a {name} square"}))
    (clips / "metadata.jsonl").write_text("\n".join(lines))
    cached = tokenize_dataset(clips, processor, tmp_path / "clip-cache", show_progress=False)
    t, h, w = cached[0]["grid"]
    assert t == 2 and len(cached[0]["codes"]) == t * h * w  # 8 frames / temporal factor 4
    ids, _ = example_ids(processor, cached[0])
    assert torch.equal(processor.parse_codes(ids)[0], torch.tensor(cached[0]["codes"]).view(t, h, w))
    assert ids.count(processor.special.eof) == 2
    result = train(base_config(tmp_path / "video", data=str(clips), max_steps=2))
    assert result.global_step == 2 and all(np.isfinite(result.losses))

    questions = write_image_folder(tmp_path / "qa", per_color=1)
    rows = [json.loads(line) for line in (questions / "metadata.jsonl").read_text().splitlines()]
    (questions / "metadata.jsonl").write_text("\n".join(
        json.dumps({"file_name": r["file_name"], "question": "what colour is it?", "answer": r["text"].split()[1]})
        for r in rows))  # fmt: skip
    result = train(base_config(tmp_path / "chat", data=str(questions), loss_on="text", max_steps=2))
    assert result.global_step == 2 and all(np.isfinite(result.losses))


def test_gradient_checkpointing_and_bf16_train_the_same_steps(base_config, tmp_path):
    plain = train(base_config(tmp_path / "plain", max_steps=3, lora_dropout=0.0))
    checkpointed = train(base_config(tmp_path / "ckpt", max_steps=3, lora_dropout=0.0, gradient_checkpointing=True))
    torch.testing.assert_close(torch.tensor(checkpointed.losses), torch.tensor(plain.losses), atol=1e-5, rtol=0)
    from accelerate.state import AcceleratorState

    # accelerate fixes one mixed-precision setting per process; its own tests reset it like this between runs
    AcceleratorState._reset_state()
    try:
        bf16 = train(base_config(tmp_path / "bf16", max_steps=3, lora_dropout=0.0, mixed_precision="bf16"))
    finally:
        AcceleratorState._reset_state()
    torch.testing.assert_close(torch.tensor(bf16.losses), torch.tensor(plain.losses), atol=0.1, rtol=0)


@pytest.mark.parametrize("variant", ["use_dora", "use_rslora"])
def test_dora_and_rslora_adapters_are_saved_as_such(base_config, tmp_path, variant):
    result = train(base_config(tmp_path / variant, max_steps=2, **{variant: True}))
    assert json.loads((Path(result.output_dir) / "adapter_config.json").read_text())[variant] is True


def test_tensorboard_gets_the_losses(base_config, tmp_path):
    pytest.importorskip("tensorboard")
    result = train(base_config(tmp_path / "tb", max_steps=2, logging_steps=1, report_to="tensorboard"))
    assert list(Path(result.output_dir).rglob("events.out.tfevents.*"))


def test_a_run_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(base_config, tmp_path):
    """SIGKILL in the middle of writing checkpoint-2 (after some of its files exist): checkpoint-1 stays whole,
    checkpoint-2 is absent, and `resume_from_checkpoint="latest"` finishes the run as if nothing happened."""
    import signal
    import subprocess
    import sys
    import textwrap

    config = base_config(tmp_path / "killed", max_steps=3, save_steps=1, lora_dropout=0.0).to_dict()
    script = textwrap.dedent(f"""
        import json, os, signal
        import emu3_hf.training.checkpoint as checkpoint
        from emu3_hf.training import TrainConfig, train
        real, calls = checkpoint.save_file, []
        def save_then_die(*args, **kwargs):
            real(*args, **kwargs)
            calls.append(1)
            if len(calls) == 5:  # checkpoint-1 wrote 3 files; checkpoint-2 has written 2
                os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.save_file = save_then_die
        train(TrainConfig(**json.loads({json.dumps(json.dumps(config))})))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    out = tmp_path / "killed"
    assert (out / "checkpoint-1" / "trainer_state.json").is_file() and not (out / "checkpoint-2").exists()
    partial = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert partial and all(name.startswith(".checkpoint-2.") and name.endswith(".partial") for name in partial)

    resumed = train(base_config(out, max_steps=3, save_steps=1, lora_dropout=0.0, resume_from_checkpoint="latest"))
    whole = train(base_config(tmp_path / "whole", max_steps=3, save_steps=1, lora_dropout=0.0))
    assert resumed.losses == whole.losses
    expected = load_file(str(Path(whole.output_dir) / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    assert all(torch.equal(got[name], expected[name]) for name in expected)
