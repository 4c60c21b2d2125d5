"""The embedded model (``emu3_hf.tiny_world.EMU3_TINY``) does its job: loose floors on the tiny world's analyzer.

These are floors, not the quality table (BENCHMARKS.md has that, from ``emu3 tiny-world eval`` on every test and
validation prompt once: 104 captions, 80 held-out pairs, 36 clips, 90 pink prompts): they exist so that a broken
engine, grammar, tokenizer, VQ or adapter loader cannot pass CI. The model decodes greedily by default (its
generation_config.json), so each score is one deterministic number; measured on the shipped weights (run tw4k: the
stage-1d VQ with canonical grids, the 2 M LM finished by stage 2c, its pink adapter): all five 0.94 (32 training
captions), held-out pairs all five 0.94 (16), captions 1.00 (32 clean training images), clips direction 1.00 and
background 1.00 (12 training clips), pink all five 0.00 -> 1.00 with the adapter (15 prompts), and with it the 32
training captions all five 0.94, colour 1.00.
"""

from __future__ import annotations

import pytest
import torch

from emu3_hf.tiny_world import EMU3_TINY, EMU3_TINY_PINK_LORA, analyze_image, make_splits, parse_caption
from emu3_hf.tiny_world.evaluate import score_captions, score_text_to_image, score_videos

SPLITS = make_splits()
TRAIN = list(SPLITS.images["train"])


@pytest.fixture(scope="module")
def pipe():
    from emu3_hf.pipelines import Emu3Pipeline

    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_the_embedded_model_is_a_small_shipped_pipeline_folder_with_a_card():
    files = [p for p in EMU3_TINY.rglob("*") if p.is_file()]
    assert (EMU3_TINY / "model_index.json").is_file() and (EMU3_TINY / "README.md").is_file()
    assert sum(p.stat().st_size for p in files) < 20e6
    assert (EMU3_TINY_PINK_LORA / "adapter_config.json").is_file()


def test_its_weights_are_stored_in_float16_and_computed_in_float32(pipe):
    from safetensors import safe_open

    for name in ("model", "vq_model"):
        with safe_open(str(EMU3_TINY / name / "model.safetensors"), framework="pt") as f:
            stored = {f.get_slice(key).get_dtype() for key in f.keys()}
        assert "F16" in stored and "F32" not in stored, (name, stored)  # (integer buffers stay integers)
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {torch.float32}


def test_it_draws_what_the_prompt_asks(pipe):
    assert pipe.recommended_sampling() == {"guidance_scale": 1.0, "do_sample": False}
    report = score_text_to_image(pipe, TRAIN[::13][:32], seed=0, batch_size=16)
    assert report["count"] == 32 and report["all"] >= 0.8, report


def test_it_composes_held_out_pairs_it_never_saw(pipe):
    report = score_text_to_image(pipe, list(SPLITS.images["heldout"][::5]), seed=0, batch_size=16)
    assert report["count"] == 16 and report["all"] >= 0.6, report


def test_it_captions_images(pipe):
    from emu3_hf.pipelines import Emu3ChatPipeline

    chat = Emu3ChatPipeline(**pipe.components)
    chat.set_progress_bar_config(disable=True)
    report = score_captions(chat, TRAIN[1::13][:32], seed=0, batch_size=16)
    assert report["count"] == 32 and report["exact"] == report["clean"] >= 0.85, report


def test_it_makes_clips_that_move_the_right_way(pipe):
    from emu3_hf.pipelines import Emu3VideoPipeline

    video = Emu3VideoPipeline(**pipe.components)
    video.set_progress_bar_config(disable=True)
    clips = list(SPLITS.videos["train"])[::6][:12]
    report = score_videos(video, clips, seed=0, batch_size=12)
    assert report["direction"] >= 0.8 and report["background"] >= 0.8, report


def test_the_pink_adapter_teaches_pink_and_unloads(pipe):
    pink, others = list(SPLITS.images["lora"][::6]), TRAIN[::13][:32]
    before = score_text_to_image(pipe, pink, seed=0, batch_size=16)
    pipe.load_lora_weights(EMU3_TINY_PINK_LORA, adapter_name="pink")
    try:
        after = score_text_to_image(pipe, pink, seed=0, batch_size=16)
        kept = score_text_to_image(pipe, others, seed=0, batch_size=16)  # the other colours survive the adapter
    finally:
        pipe.unload_lora_weights()
    unloaded = score_text_to_image(pipe, pink, seed=0, batch_size=16)
    assert before["all"] <= 0.3 and after["all"] >= 0.8 and after["color"] >= 0.8, (before, after)
    assert kept["color"] >= 0.8 and kept["all"] >= 0.8, kept
    assert unloaded == before  # greedy decoding: unloading gives back the base model exactly


def test_the_readme_command_draws_the_prompt_with_the_default_model(tmp_path):
    """`emu3 generate` with no --model uses the embedded model, draws the README's prompt (a training caption) right,
    and its file is the pipeline's own output."""
    import numpy as np
    from PIL import Image

    from emu3_cli import main

    prompt = "a small red circle in the top left corner on a black background"
    out = tmp_path / "out.png"
    assert main(["generate", prompt, "-o", str(out), "--seed", "0", "--quiet"]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape == (64, 64, 3)
    from emu3_hf.pipelines import Emu3Pipeline

    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
    pipe.set_progress_bar_config(disable=True)
    again = pipe(prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="np").images[0]
    assert np.array_equal((again * 255).round().astype(np.uint8), image)
    assert analyze_image(image).spec == parse_caption(prompt)
