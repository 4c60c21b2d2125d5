"""The embedded model's recipe, stage 1 (the VQ): its data, a short run that resumes, and the reconstruction score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emu3_hf import Emu3VisionVQModel
from emu3_hf.tiny_world import LORA_COLOR, make_splits
from emu3_hf.tiny_world.recipe import train_tiny_vq, vq_training_specs
from emu3_hf.tiny_world.vq_reports import vq_reconstruction_report


def test_the_vq_sees_train_and_pink_and_nothing_held_out():
    images, videos = vq_training_specs()
    splits = make_splits()
    for specs, table in ((images, splits.images), (videos, splits.videos)):
        assert set(table["train"]) | set(table["lora"]) == set(specs)
        for name in ("validation", "test", "heldout"):
            assert not set(table[name]) & set(specs), name
        assert any(spec.color == LORA_COLOR for spec in specs)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Both phases (images, then images + clips from phase 1's VQ): a run cut after phase 2's step-2 checkpoint and
    started again finishes with the uninterrupted run's weights, without running phase 1 again."""
    import shutil

    args = dict(image_steps=2, clip_steps=3, save_steps=1, image_batch_size=2, video_batch_size=1,
                show_progress=False)  # fmt: skip
    whole = Emu3VisionVQModel.from_pretrained(train_tiny_vq(tmp_path / "whole", **args))
    assert whole.config.codebook_size == 1024
    phases = [json.loads((tmp_path / "whole" / sub / "training_config.json").read_text()) for sub in ("images", ".")]
    assert [len(p["history"]) for p in phases] == [2, 3]
    assert [p["config"]["video_batch_size"] for p in phases] == [0, 1]
    assert phases[1]["config"]["model"] == str(tmp_path / "whole" / "images")
    shutil.copytree(tmp_path / "whole" / "images", tmp_path / "cut" / "images")
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    resumed = Emu3VisionVQModel.from_pretrained(train_tiny_vq(tmp_path / "cut", **args))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    settings = [json.loads((tmp_path / run / "training_config.json").read_text())["config"] for run in ("whole", "cut")]
    assert [s["resume_from_checkpoint"] for s in settings] == [None, "latest"]
    with pytest.raises(ValueError, match="image_steps must be >= 1"):
        train_tiny_vq(tmp_path / "bad", image_steps=0)
    assert not (tmp_path / "bad").exists()


class _Codec(torch.nn.Module):
    """A stand-in VQ: 'codes' are the pixels themselves; decode returns them, or a flat gray image."""

    def __init__(self, exact: bool):
        super().__init__()
        self.exact = exact
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode(self, pixels):
        return pixels

    def decode(self, codes):
        return codes if self.exact else torch.zeros_like(codes)


@pytest.mark.parametrize("exact", [True, False])
def test_the_reconstruction_report_reads_clips_back_with_the_analyzer(exact):
    report = vq_reconstruction_report(_Codec(exact), "validation", batch_size=8, kind="video")
    assert set(report) == {"shape", "color", "background", "direction", "all", "count"}
    assert report.pop("count") == len(make_splits().videos["validation"])
    assert all(value == (1.0 if exact else 0.0) for key, value in report.items() if key != "background")
    with pytest.raises(ValueError, match="kind must be 'image' or 'video'"):
        vq_reconstruction_report(_Codec(exact), kind="audio")


@pytest.mark.parametrize("exact", [True, False])
def test_the_reconstruction_report_reads_images_back_with_the_analyzer(exact):
    report = vq_reconstruction_report(_Codec(exact), "validation")
    specs = make_splits().images["validation"]
    assert set(report) == {"shape", "color", "background", "size", "position", "all", "count"}
    assert report.pop("count") == len(specs)
    if exact:  # a lossless codec: the analyzer reads every clean render back exactly
        assert all(value == 1.0 for value in report.values())
    else:  # a flat image has no shape, so no image is read back right
        assert report["all"] == 0.0 and report["color"] == 0.0
        assert np.isclose(report["background"], np.mean([s.background == "gray" for s in specs]))


def test_stage_two_builds_the_base_pipeline_and_trains_its_lm(tmp_path):
    """The base pipeline's ids agree between tokenizer and LM config, 64x64 images are 8x8 codes, and a few steps of
    the mixture (text-to-image, image-to-text, text-to-video) lower the loss of the fresh LM."""
    from emu3_hf import Emu3Pipeline
    from emu3_hf.tiny_world.recipe import (CAPTION_QUESTION, TINY_GUIDANCE_SCALE, build_base_pipeline,
                                          lm_training_examples, train_pink_lora, train_tiny_lm)
    from emu3_hf.training import tiny_world_vq_config

    torch.manual_seed(0)
    base = build_base_pipeline(Emu3VisionVQModel(tiny_world_vq_config()), tmp_path / "base")
    pipe = Emu3Pipeline.from_pretrained(base)
    tok, config = pipe.tokenizer, pipe.model.config
    assert config.vocab_size == len(tok) and config.visual_token_offset == tok.visual_token_offset
    assert (config.boi_token_id, config.eol_token_id, config.codebook_size) == (tok.boi_token_id, tok.eol_token_id, 1024)
    assert 1.5e6 < sum(p.numel() for p in pipe.model.parameters()) < 3e6  # docs/TINY_WORLD.md's ~2 M LM
    assert tok.convert_ids_to_tokens(tok.encode(CAPTION_QUESTION)) == ["Describe", "Ġthe", "Ġimage", "."]
    pixels = pipe.image_processor(render_like(), return_tensors="pt")["pixel_values"]
    assert tuple(pipe.vq_model.encode(pixels).shape) == (1, 8, 8)

    examples = lm_training_examples(copies=1)
    kinds = {"t2i": 0, "i2t": 0, "t2v": 0}
    for row in examples.select_columns(["text", "question", "video"]).with_format(None):
        kinds["i2t" if row["question"] else "t2v" if row["video"] else "t2i"] += 1
    splits = make_splits()
    assert kinds == {"t2i": len(splits.images["train"]), "i2t": len(splits.images["train"]),
                     "t2v": len(splits.videos["train"])}  # fmt: skip
    result = train_tiny_lm(base, tmp_path / "lm", copies=1, max_steps=4, warmup_steps=1, batch_size=8,
                           show_progress=False)  # fmt: skip
    assert result.losses[-1] < result.losses[0]
    trained = Emu3Pipeline.from_pretrained(tmp_path / "lm")
    assert trained.model.config.num_hidden_layers == 4
    # the trained pipeline keeps the tiny model's recommended guidance, and its calls use it when given none
    assert trained.recommended_sampling() == {"guidance_scale": TINY_GUIDANCE_SCALE, "do_sample": False}
    assert TINY_GUIDANCE_SCALE != 3.0

    # stage 3: a LoRA adapter from pink text-to-image examples only, loadable by the pipeline
    pink = lm_training_examples(copies=2, split="lora", tasks=("text_to_image",)).with_format(None)
    assert len(pink) == 2 * len(splits.images["lora"]) and all(f" {LORA_COLOR} " in text for text in pink["text"])
    from emu3_hf.tiny_world import parse_caption, render_image

    drawn = [np.array_equal(np.asarray(row["image"]), render_image(parse_caption(row["text"]))) for row in pink]
    assert all(drawn)  # the pictures the LM learns to draw are clean renders
    assert all(question is None for question in pink["question"])
    with pytest.raises(ValueError, match="tasks must be a non-empty subset"):
        lm_training_examples(copies=1, tasks=("captions",))
    both = lm_training_examples(copies=1, split=("validation", "test"), tasks=("text_to_image",)).with_format(None)
    wanted = {spec.caption() for name in ("validation", "test") for spec in splits.images[name]}
    assert len(both) == len(wanted) and set(both["text"]) == wanted
    for bad in ("heldout", ("train", "heldout"), ("train", "nope"), ()):
        with pytest.raises(ValueError, match="held-out compositions never train"):
            lm_training_examples(copies=1, split=bad)
    # captions are read off jittered renders, and off clean ones for clean_reads of the copies
    count = len(splits.images["test"])
    for clean_reads in (0, 2):
        reads = lm_training_examples(copies=4, split="test", tasks=("image_to_text",), clean_reads=clean_reads)
        reads = reads.with_format(None)
        clean = [np.array_equal(np.asarray(row["image"]), render_image(parse_caption(row["answer"]))) for row in reads]
        assert len(reads) == 4 * count and clean_reads * count <= sum(clean) < (clean_reads + 1) * count
    with pytest.raises(ValueError, match="clean_reads must be between 0 and the image-to-text copies"):
        lm_training_examples(copies=1, clean_reads=2)
    # a number of copies per task: the mapping's keys are the tasks
    mixed = lm_training_examples({"image_to_text": 3, "text_to_video": 2}, split="test", clean_reads=2)
    mixed = mixed.select_columns(["question", "video"]).with_format(None)
    assert sum(row["question"] is not None for row in mixed) == 3 * count
    assert sum(row["video"] is not None for row in mixed) == 2 * len(splits.videos["test"]) == len(mixed) - 3 * count
    with pytest.raises(ValueError, match="as the keys of `copies`"):
        lm_training_examples({"image_to_text": 1}, tasks=("image_to_text",))
    for bad in ({"image_to_text": 0}, {"text_to_image": 1.5}, {}):
        with pytest.raises(ValueError, match="copies must be integers >= 1|non-empty subset"):
            lm_training_examples(bad)
    with pytest.raises(ValueError, match="clean_reads must be between 0 and the image-to-text copies \\(0\\)"):
        lm_training_examples({"text_to_image": 1}, clean_reads=1)
    from emu3_hf.tiny_world.recipe import LM_SPLITS, _pink_mixture

    # pink examples plus one of each spec the base LM trains on (every base split, never the held-out pairs)
    mixture = _pink_mixture(1, 1, seed=0).with_format(None)["text"]
    base_specs = [spec for name in LM_SPLITS for spec in splits.images[name]]
    assert set(LM_SPLITS) == {"train", "validation", "test"}
    assert len(mixture) == len(splits.images["lora"]) + len(base_specs)
    assert sum(f" {LORA_COLOR} " in text for text in mixture) == len(splits.images["lora"])
    assert set(mixture) - {spec.caption() for spec in splits.images["lora"]} == {spec.caption() for spec in base_specs}
    lora = train_pink_lora(tmp_path / "lm", tmp_path / "pink", copies=1, max_steps=2, warmup_steps=1, batch_size=4,
                           show_progress=False)  # fmt: skip
    assert lora.global_step == 2 and (tmp_path / "pink" / "adapter_model.safetensors").is_file()
    pipe = Emu3Pipeline.from_pretrained(tmp_path / "lm")
    pipe.load_lora_weights(tmp_path / "pink", adapter_name="pink")
    assert pipe.get_active_adapters() == ["pink"]


def render_like():
    from PIL import Image

    from emu3_hf.tiny_world import render_image

    return Image.fromarray(render_image(make_splits().images["test"][0]))


def test_the_cli_reruns_the_whole_recipe_at_reduced_size_and_scores_it(tmp_path, capsys):
    from emu3_cli import main

    out = tmp_path / "run"
    args = ["tiny-world", "train", "-o", str(out), "--vq-image-steps", "2", "--vq-clip-steps", "1", "--vq-decoder-steps", "2",
            "--vq-canonical-steps", "2", "--copies", "1",
            "--lm-max-steps", "3", "--lm-batch-size", "8", "--lora-max-steps", "2", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert (out / "vq" / "config.json").is_file() and (out / "pipeline" / "model_index.json").is_file()
    assert (out / "vq-decoder" / "config.json").is_file()
    # stage 1d's VQ is the pipeline's: its fields are named, reserved from the quantiser, and the LM drew them
    vq_config = json.loads((out / "pipeline" / "vq_model" / "config.json").read_text())
    assert len(vq_config["canonical_fields"]) == 23
    assert set(vq_config["canonical_fields"].values()) <= set(vq_config["reserved_codes"])
    assert (out / "pink-lora" / "adapter_config.json").is_file()
    assert (out / "lm" / "model_index.json").is_file()  # stage 2b; stage 2c (the finish) wrote pipeline/
    printed = capsys.readouterr().out
    assert "LM: 3 steps" in printed and "LM finish: 3 steps" in printed and "LoRA: 2 steps" in printed
    report = tmp_path / "report.json"
    assert main(["tiny-world", "eval", "--model", str(out / "pipeline"), "--images", "3", "--heldout", "0",
                 "--captions", "2", "--videos", "1", "--splits", "train,test", "-o", str(report)]) == 0  # fmt: skip
    # (each of the 2 pictures captioned clean and jittered)
    saved = json.loads(report.read_text())
    assert saved["text_to_image"]["count"] == 3 and saved["captions"]["count"] == 4 and saved["video"]["count"] == 1
    assert saved["settings"]["splits"] == ["train", "test"]
    assert "heldout" not in saved and saved["seconds_per_image"] > 0
    assert main(["tiny-world", "eval", "--model", str(out / "pipeline"), "--lora", str(out / "pink-lora"),
                 "--images", "2", "-o", str(report)]) == 0  # fmt: skip
    saved = json.loads(report.read_text())
    assert [saved[key]["count"] for key in ("pink_before", "pink_after", "others_after")] == [2, 2, 2]
    assert main(["tiny-world", "eval", "--model", str(out / "pipeline"), "--lora", str(out / "vq")]) == 2
    assert "not an adapter folder" in capsys.readouterr().err
    assert main(["tiny-world", "eval", "--model", str(out / "pipeline"), "--splits", "train,heldout"]) == 2
    assert "splits must name one or more of ('train', 'validation', 'test')" in capsys.readouterr().err
    assert main(["tiny-world", "train", "-o", str(tmp_path / "bad"), "--copies", "0"]) == 2
    assert "--copies must be >= 1" in capsys.readouterr().err
    assert main(["tiny-world", "train", "-o", str(tmp_path / "bad"), "--lm-finish-epochs", "-1"]) == 2
    assert "--lm-finish-epochs >= 0" in capsys.readouterr().err
    # a run folder keeps one layout: this one finishes its LM (lm/ holds stage 2b), so it cannot train without stage 2c
    assert main([*args, "--lm-finish-epochs", "0"]) == 2
    assert "finishes its LM in stage 2c" in capsys.readouterr().err
    old = tmp_path / "old-run"  # a run from before stage 2c: pipeline/ is stage 2b's, and there is no lm/
    (old / "pipeline").mkdir(parents=True)
    assert main(["tiny-world", "train", "-o", str(old), "--quiet"]) == 2
    assert "without the finishing stage" in capsys.readouterr().err and not (old / "vq").exists()
    assert not (tmp_path / "bad").exists()


def test_compacting_the_codebook_covers_it_with_evenly_spaced_codes_each_entry_at_its_nearest(tmp_path):
    from emu3_hf.tiny_world.recipe import compact_codebook
    from emu3_hf.training import tiny_world_vq_config

    torch.manual_seed(0)
    vq = Emu3VisionVQModel(tiny_world_vq_config())
    original = vq.quantize.embedding.weight.detach().clone()
    compact = Emu3VisionVQModel.from_pretrained(compact_codebook(vq, tmp_path / "c", num_codes=16))
    assert torch.equal(vq.quantize.embedding.weight, original)  # the given module is left alone
    book = compact.quantize.embedding.weight.detach()
    centres = torch.unique(book, dim=0)
    assert 12 <= len(centres) <= 16
    assert all(any(torch.equal(c, row) for row in original) for c in centres)  # codes are trained entries
    nearest = centres[torch.cdist(original, centres).argmin(1)]
    torch.testing.assert_close(book, nearest, rtol=0, atol=0)
    # Evenly spaced: every entry is nearer its code than any two codes are to each other.
    spacing = torch.cdist(centres, centres) + torch.eye(len(centres)) * 1e9
    assert (original - book).norm(dim=1).max() < spacing.min()
    codes = compact.encode(torch.rand(2, 3, 64, 64) * 2 - 1).flatten().tolist()
    lowest = {tuple(book[i].tolist()): i for i in reversed(range(len(book)))}
    assert all(code == lowest[tuple(book[code].tolist())] for code in codes)  # equal entries: the lowest id wins
    with pytest.raises(ValueError, match="num_codes must be in"):
        compact_codebook(vq, tmp_path / "bad", num_codes=0)
    assert not (tmp_path / "bad").exists()


class _PatchCodec(torch.nn.Module):
    """A stand-in VQ whose code of a cell is its 8 x 8 block's mean colour, optionally plus the whole image's mean
    (a code that sees the whole picture)."""

    spatial_scale_factor = 8

    def __init__(self, local: bool):
        super().__init__()
        self.local = local
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode(self, pixels):
        block = torch.nn.functional.avg_pool2d(pixels, 8)  # (B, 3, 8, 8)
        if not self.local:
            block = block + 10 * pixels.mean((1, 2, 3))[:, None, None, None]
        return block.movedim(1, -1).double() @ torch.tensor([1.0, 1e3, 1e6], dtype=torch.float64)  # one number per cell


@pytest.mark.parametrize("local", [True, False])
def test_the_locality_report_compares_background_codes_of_images_with_their_shapes_elsewhere(local):
    from emu3_hf.tiny_world import iter_image_examples
    from emu3_hf.tiny_world.vq_reports import vq_locality_report

    report = vq_locality_report(_PatchCodec(local), "validation")
    # Independently: each image with the next one of its background; a cell counts when no pixel of it or of its 8
    # neighbours differs from the background, in either image.
    pictures = [np.asarray(image) for image, _ in iter_image_examples("validation", jitter=False, shuffle=False)]
    specs = make_splits().images["validation"]

    def near(pixels):
        shape = (pixels != pixels[0, 0]).any(-1)
        padded = np.pad(shape.reshape(8, 8, 8, 8).any((1, 3)), 1)
        return np.any([padded[dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)], axis=0)

    expected = 0
    for i, spec in enumerate(specs):
        group = [j for j, s in enumerate(specs) if s.background == spec.background]
        j = group[(group.index(i) + 1) % len(group)]
        expected += int((~(near(pictures[i]) | near(pictures[j]))).sum())
    assert report["cells"] == expected > 0
    if local:
        assert report["background_same"] == 1.0
    else:  # the image mean changes with the shape, and with it every code
        assert report["background_same"] < 0.2


def test_the_train_command_defaults_are_the_recipe_constants():
    """emu3_cli cannot import the recipe (the command line answers before torch loads), so its literals are checked."""
    from emu3_cli import build_parser
    from emu3_hf.tiny_world.canonical import VQ_CANONICAL_STEPS
    from emu3_hf.tiny_world.recipe import LM_EPOCHS, LM_FINISH_EPOCHS, VQ_CLIP_STEPS, VQ_DECODER_STEPS, VQ_IMAGE_STEPS

    args = build_parser().parse_args(["tiny-world", "train", "-o", "run"])
    assert args.vq_canonical_steps == VQ_CANONICAL_STEPS
    assert (args.lm_epochs, args.vq_image_steps, args.vq_clip_steps) == (LM_EPOCHS, VQ_IMAGE_STEPS, VQ_CLIP_STEPS)
    assert (args.vq_decoder_steps, args.lm_finish_epochs) == (VQ_DECODER_STEPS, LM_FINISH_EPOCHS)


def test_stage_1c_tunes_the_decoder_on_clean_and_jittered_renders_of_what_the_lm_draws(tmp_path, monkeypatch):
    """tune_tiny_vq_decoder's data: every LM_SPLITS and pink spec, clean and jittered in turn, never a held-out pair;
    its config freezes the encoder side (decoder_only)."""
    import emu3_hf.training as training
    from emu3_hf.tiny_world import render_image, render_video
    from emu3_hf.tiny_world.recipe import LM_SPLITS, tune_tiny_vq_decoder

    seen = {}

    def recorder(config, images=None, videos=None, objective=None):
        seen["config"], seen["images"], seen["videos"], seen["objective"] = config, images, videos, objective
        return type("Result", (), {"output_dir": config.output_dir})()

    monkeypatch.setattr(training, "train_vq", recorder)
    assert tune_tiny_vq_decoder("some-vq", tmp_path / "out", steps=3) == tmp_path / "out"
    assert seen["config"].decoder_only and seen["config"].max_steps == 3 and seen["config"].model == "some-vq"
    assert seen["objective"] is None  # stage 1c draws the encoder's codes only
    splits = make_splits()
    for kind, render, table in (("images", render_image, splits.images), ("videos", render_video, splits.videos)):
        wanted = [spec for name in LM_SPLITS + ("lora",) for spec in table[name]]
        by_caption = {spec.caption(): spec for spec in wanted}
        pairs = [next(seen[kind]) for _ in range(2 * len(wanted))]
        assert {caption for _, caption in pairs} == set(by_caption)  # one epoch each: all of them, nothing else
        assert not {caption for _, caption in pairs} & {spec.caption() for spec in table["heldout"]}
        as_array = (lambda p: np.stack([np.asarray(f) for f in p])) if kind == "videos" else np.asarray
        clean = [np.array_equal(as_array(picture), render(by_caption[caption])) for picture, caption in pairs]
        assert all(clean[0::2]) and sum(clean[1::2]) < len(wanted) // 2, kind  # clean, jittered, clean, ...
    with pytest.raises(ValueError, match="steps must be >= 1"):
        tune_tiny_vq_decoder("some-vq", tmp_path / "bad", steps=0)


def test_stage_2c_finishes_the_lm_on_more_captions_mostly_clean_and_more_clips(tmp_path, monkeypatch):
    """finish_tiny_lm's data: per copy of each LM_SPLITS spec, LM_FINISH_WEIGHTS examples per task, three of the four
    image-to-text reads clean renders, shuffled, nothing held out or pink; a full-training continuation of the given
    pipeline at the finishing learning rate."""
    import emu3_hf.tiny_world.recipe as recipe
    from emu3_hf.tiny_world import parse_caption, render_image

    seen = {}

    def recorder(model, output_dir, data, **settings):
        seen.update(model=model, output_dir=output_dir, data=data, settings=settings)
        return "result"

    monkeypatch.setattr(recipe, "_train_lm", recorder)
    assert recipe.finish_tiny_lm("stage-2b", tmp_path / "out", copies=2, show_progress=False) == "result"
    assert (seen["model"], seen["output_dir"]) == ("stage-2b", tmp_path / "out")
    assert seen["settings"]["learning_rate"] == recipe.LM_FINISH_LR < 2e-3
    assert seen["settings"]["num_epochs"] == recipe.LM_FINISH_EPOCHS and seen["settings"]["seed"] == 1
    assert recipe.LM_FINISH_WEIGHTS == {"text_to_image": 2, "image_to_text": 4, "text_to_video": 2}
    assert recipe.LM_FINISH_CLEAN_READS == 3
    splits = make_splits()
    images = {spec.caption() for name in recipe.LM_SPLITS for spec in splits.images[name]}
    clips = {spec.caption() for name in recipe.LM_SPLITS for spec in splits.videos[name]}
    rows = list(seen["data"].with_format(None))
    draws = [row for row in rows if row["text"] and row["video"] is None]
    reads = [row for row in rows if row["question"]]
    videos = [row["text"] for row in rows if row["video"] is not None]
    assert len(draws) == 4 * len(images) and {row["text"] for row in draws} == images
    assert len(reads) == 8 * len(images) and {row["answer"] for row in reads} == images
    assert len(videos) == 4 * len(clips) and set(videos) == clips
    clean = sum(np.array_equal(np.asarray(row["image"]), render_image(parse_caption(row["answer"]))) for row in reads)
    assert 6 * len(images) <= clean < 7 * len(images)  # three clean reads per copy; a jitter is rarely zero
    kinds = ["read" if row["question"] else "clip" if row["video"] is not None else "draw" for row in rows[:60]]
    assert set(kinds) == {"read", "clip", "draw"}  # shuffled, not one task after another
    with pytest.raises(ValueError, match="copies must be >= 1"):
        recipe.finish_tiny_lm("stage-2b", tmp_path / "bad", copies=0)
