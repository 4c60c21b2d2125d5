"""The tiny-world evaluation reads generated outputs with the reference analyzer: perfect and wrong stand-ins."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from emu3_hf.tiny_world import make_splits, render_image, render_video
from emu3_hf.tiny_world.evaluate import (evaluate_lora, evaluate_pipeline, score_captions, score_text_to_image,
                                         score_videos)

SPLITS = make_splits()
BY_CAPTION = {spec.caption(): spec for table in (SPLITS.images, SPLITS.videos) for specs in table.values()
              for spec in specs}  # fmt: skip


class _Painter:
    """Draws exactly what each caption says (``exact``), or the same wrong picture for every caption."""

    def __init__(self, exact: bool):
        self.exact, self.calls = exact, []

    def __call__(self, prompts, height, width, generator, output_type, num_frames=None, **sampling):
        assert (height, width, output_type) == (64, 64, "np") and generator is not None
        self.calls.append(sampling)
        specs = [BY_CAPTION[p] if self.exact else SPLITS.images["test"][0] for p in prompts]
        if num_frames is None:
            return SimpleNamespace(images=np.stack([render_image(s) for s in specs]) / 255.0)
        fixed = SPLITS.videos["test"][0]
        clips = [render_video(s if self.exact else fixed) for s in (BY_CAPTION[p] for p in prompts)]
        return SimpleNamespace(frames=np.stack(clips) / 255.0)


class _Reader:
    def __init__(self, exact: bool):
        self.exact = exact

    def __call__(self, questions, images, max_new_tokens):
        answers = []
        for image in images:
            matches = [c for c, s in BY_CAPTION.items() if c.endswith("background") and " moving " not in c
                       and np.array_equal(render_image(s), np.asarray(image))]  # fmt: skip
            answers.append(matches[0] if self.exact and matches else "a small red circle")
        return SimpleNamespace(text=answers)


@pytest.mark.parametrize("exact", [True, False])
def test_generated_images_and_clips_are_scored_against_their_captions(exact):
    specs = list(SPLITS.images["test"][:12])
    painter = _Painter(exact)
    images = score_text_to_image(painter, specs, seed=0, batch_size=5, guidance_scale=2.0)
    assert images["count"] == 12 and len(painter.calls) == 3 and painter.calls[0] == {"guidance_scale": 2.0}
    clips = score_videos(painter, list(SPLITS.videos["test"][:6]), seed=0, batch_size=4)
    if exact:
        assert images["all"] == 1.0 and clips["all"] == 1.0
    else:  # one fixed picture matches at most the specs that equal it
        same = sum(spec == SPLITS.images["test"][0] for spec in specs)
        assert images["all"] == same / 12 and clips["all"] < 1.0


@pytest.mark.parametrize("exact", [True, False])
def test_captions_must_match_exactly(exact):
    specs = list(SPLITS.images["test"][:6])
    report = score_captions(_Reader(exact), specs, seed=0, batch_size=4)
    assert report["count"] == 6 and report["exact"] == report["clean"] == (1.0 if exact else 0.0)
    assert "jittered" not in report  # one pass: clean renders only


def test_captions_are_read_off_clean_renders_first_then_jittered_ones():
    """The reader knows only clean renders: it gets the first pass right and a jittered picture (almost) never."""
    specs = list(SPLITS.images["test"][:6]) * 3
    report = score_captions(_Reader(True), specs, seed=0, batch_size=4)
    assert report["count"] == 18 and report["clean"] == 1.0 and report["jittered"] < 0.5
    assert report["exact"] == pytest.approx((6 + 12 * report["jittered"]) / 18)


class _LoraPainter(_Painter):
    """Draws what each caption says, except pink shapes, which it draws red unless an adapter is loaded."""

    def __init__(self):
        super().__init__(exact=True)
        self.adapters = []

    def to(self, device):
        return self

    def set_progress_bar_config(self, **kwargs):
        pass

    def load_lora_weights(self, path, adapter_name):
        self.adapters.append(adapter_name)

    def unload_lora_weights(self):
        self.adapters.clear()

    def __call__(self, prompts, **kwargs):
        out = super().__call__(prompts, **kwargs)
        if not self.adapters:
            for i, prompt in enumerate(prompts):
                if " pink " in prompt:
                    out.images[i] = render_image(BY_CAPTION[prompt.replace(" pink ", " red ")]) / 255.0
        return out


def test_the_lora_report_scores_pink_before_and_after_and_the_other_colours_with_the_adapter():
    painter = _LoraPainter()
    report = evaluate_lora(painter, "some/adapter", pink=20, others=10, batch_size=8, device="cpu")
    assert report["pink_before"]["count"] == 20 and report["pink_before"]["color"] == 0.0
    assert report["pink_before"]["shape"] == 1.0  # only the colour was wrong
    assert report["pink_after"]["all"] == 1.0 and report["others_after"] == {**report["others_after"], "all": 1.0}
    assert report["others_after"]["count"] == 10 and painter.adapters == []  # unloaded afterwards


class _Recorder:
    """A stand-in image pipeline that draws each caption exactly and remembers the prompts it was given (and the
    seed and sampling of each call); it decodes greedily unless a call says ``do_sample=True``."""

    def __init__(self):
        self.prompts, self.seeds = [], []

    def recommended_sampling(self):
        return {"guidance_scale": 1.0, "do_sample": False}

    def to(self, device):
        return self

    def set_progress_bar_config(self, **kwargs):
        pass

    def __call__(self, prompts, height, width, generator, output_type="np", **sampling):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        self.prompts += prompts
        self.seeds.append(generator.initial_seed())
        return SimpleNamespace(images=np.stack([render_image(BY_CAPTION[p]) for p in prompts]) / 255.0)


def test_the_report_reads_the_base_splits_it_is_given_and_refuses_any_other():
    captions = {name: {spec.caption() for spec in SPLITS.images[name]} for name in SPLITS.images}
    default = _Recorder()
    report = evaluate_pipeline(default, images=104, heldout=0, captions=0, videos=0, device="cpu")
    assert report["settings"]["splits"] == ["test", "validation"] and report["text_to_image"]["all"] == 1.0
    assert set(default.prompts[:104]) == captions["test"] | captions["validation"]
    chosen = _Recorder()
    report = evaluate_pipeline(chosen, images=20, heldout=5, captions=0, videos=0, splits="train", device="cpu")
    assert report["settings"]["splits"] == ["train"] and report["heldout"]["count"] == 5
    assert set(chosen.prompts[:20]) <= captions["train"] and set(chosen.prompts[20:25]) <= captions["heldout"]
    refused = _Recorder()
    for splits in (("heldout",), ("train", "lora"), ()):
        with pytest.raises(ValueError, match="splits must name one or more of"):
            evaluate_pipeline(refused, splits=splits, device="cpu")
        with pytest.raises(ValueError, match="splits must name one or more of"):
            evaluate_lora(refused, "some/adapter", splits=splits, device="cpu")
    assert refused.prompts == []


def test_each_count_is_the_number_of_distinct_outputs():
    """Greedy decoding: every prompt once, so n is the number of distinct prompts (104 seen captions, 80 held-out
    pairs), never a prompt repeated under another seed."""
    recorder = _Recorder()
    report = evaluate_pipeline(recorder, captions=0, videos=0, batch_size=32, device="cpu")
    scored = recorder.prompts[:184]  # then the timing's warm-up and three calls
    assert len(set(scored)) == len(scored) == 184
    assert report["text_to_image"]["count"] == 104 and report["heldout"]["count"] == 80
    assert report["settings"]["prompts"] == {"text_to_image": 104, "heldout": 80, "captions": 0, "video": 0}
    assert report["settings"]["seeds"] == 1


def test_the_caption_report_counts_one_clean_and_one_jittered_picture_per_spec(monkeypatch):
    from emu3_hf.tiny_world import evaluate

    monkeypatch.setattr(evaluate, "_sibling", lambda pipe, name: _Reader(True))  # the chat pipeline's stand-in
    report = evaluate_pipeline(_Recorder(), images=0, heldout=0, captions=6, videos=0, device="cpu")
    assert report["captions"]["count"] == 12 and report["captions"]["clean"] == 1.0
    assert report["captions"]["jittered"] < 0.5  # the second picture of each spec is a jittered render


def test_seeds_repeat_a_prompt_only_when_sampling():
    greedy = _Recorder()
    with pytest.raises(ValueError, match="seeds=3 with greedy decoding"):
        evaluate_pipeline(greedy, images=4, heldout=0, captions=0, videos=0, seeds=3, device="cpu")
    assert greedy.prompts == []
    sampled = _Recorder()
    report = evaluate_pipeline(sampled, images=4, heldout=0, captions=0, videos=0, seeds=3, batch_size=4,
                               do_sample=True, device="cpu")  # fmt: skip
    assert report["text_to_image"]["count"] == 12 and report["settings"]["seeds"] == 3
    assert sampled.prompts[:12] == sampled.prompts[:4] * 3 and len(set(sampled.seeds[:3])) == 3  # a new seed each


@pytest.mark.parametrize("bad", [{"images": 105}, {"heldout": 81}, {"videos": -1}, {"images": 2.0}, {"seeds": 0}])
def test_counts_beyond_the_distinct_prompts_are_refused_before_any_generation(bad):
    recorder = _Recorder()
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"^{name} must be"):
        evaluate_pipeline(recorder, **{"captions": 0, **bad}, device="cpu")
    assert recorder.prompts == []
