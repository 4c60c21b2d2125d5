"""Emu3VideoPipeline (text-to-video, continuation) and Emu3ChatPipeline (understanding) on the tiny fixtures."""

from __future__ import annotations

import json

import PIL.Image
import pytest
import torch
from transformers import TextStreamer

from emu3_hf.generation import generate_image_tokens
from emu3_hf.pipelines import Emu3ChatPipeline, Emu3VideoPipeline


@pytest.fixture(scope="module")
def video_pipe(lm_dir, vq_dir, tiny_tokenizer_dir):
    pipe = Emu3VideoPipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tiny_tokenizer_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def chat(lm_dir, vq_dir, tiny_tokenizer_dir):
    pipe = Emu3ChatPipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tiny_tokenizer_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _frames(ref) -> list:
    """The fixture video (1, 8, 3, 16, 24) in [-1, 1] as 8 uint8 HWC frames."""
    video = ref["vq.video.pixel_values"][0]
    return [((f.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy() for f in video]


# ---- text-to-video ---------------------------------------------------------------------------------------------


def test_text_to_video_shapes_and_frames(video_pipe):
    g = torch.Generator().manual_seed(0)
    out = video_pipe(["a clip", "another"], num_frames=8, height=8, width=12, num_videos_per_prompt=2, generator=g)
    assert out.codes.shape == (4, 2, 4, 6) and out.num_context_frames == 0
    assert len(out.frames) == 4 and all(len(clip) == 8 for clip in out.frames)
    assert out.frames[0][0].size == (12, 8)
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < 256


def test_video_frames_are_the_vq_decode_of_the_codes(video_pipe):
    g = torch.Generator().manual_seed(1)
    out = video_pipe("a clip", num_frames=4, height=6, width=6, output_type="pt", generator=g)
    with torch.no_grad():
        pixels = video_pipe.vq_model.decode(out.codes)  # (1, 4, 3, 6, 6) in about [-1, 1]
    expected = ((pixels * 0.5 + 0.5) * 255).clamp(0, 255).to(torch.uint8).float() / 255  # BAAI's truncation
    assert out.frames.shape == (1, 4, 3, 6, 6)
    torch.testing.assert_close(out.frames, expected, atol=1 / 255 + 1e-6, rtol=0)


def test_every_latent_frame_is_closed_by_eof(video_pipe):
    model, special = video_pipe.model, video_pipe.make_processor().special
    ids = video_pipe.make_processor()(text=["x"], mode="G", height=2, width=3)["input_ids"]
    out = generate_image_tokens(model, ids, height=2, width=3, num_frames=3, guidance_scale=1.0, do_sample=False)
    gen = out.generated_ids[0].tolist()
    per_frame = 2 * (3 + 1) + 1  # 2 rows of (3 codes + EOL), then EOF
    for f in range(3):
        block = gen[f * per_frame : (f + 1) * per_frame]
        assert block[3] == block[7] == special.eol and block[8] == special.eof
        assert all(special.visual_offset <= t < special.visual_offset + 256 for t in block[:3] + block[4:7])
    assert gen[3 * per_frame :] == [special.eoi, special.eos]


# ---- continuation ----------------------------------------------------------------------------------------------


def test_continuation_keeps_the_given_codes_bit_identical(video_pipe, ref):
    context = ref["vq.video.codes"][0]  # (2, 8, 12)
    g = torch.Generator().manual_seed(2)
    out = video_pipe("what happens next", video_codes=context, num_frames=4, generator=g, num_videos_per_prompt=2)
    assert out.codes.shape == (2, 3, 8, 12) and out.num_context_frames == 2
    assert torch.equal(out.codes[:, :2], context.expand(2, -1, -1, -1))
    assert len(out.frames[0]) == 12  # (2 given + 1 new latent frames) x 4


def test_continuation_from_frames_encodes_them_as_one_clip(video_pipe, ref):
    frames = _frames(ref)
    expected = video_pipe.make_processor().encode_video(frames)
    out = video_pipe("next", video=frames, num_frames=4, output_type="tokens", do_sample=False)
    assert torch.equal(out.codes[0, :2], expected)
    assert torch.equal(out.frames, out.codes)


def test_continuation_from_one_image(video_pipe, ref):
    image = PIL.Image.fromarray(_frames(ref)[0])
    out = video_pipe("next", video=image, num_frames=4, output_type="tokens", do_sample=False)
    expected = video_pipe.make_processor().encode_images([image])[0]
    assert out.codes.shape[1] == 2 and torch.equal(out.codes[0, 0], expected)


def test_greedy_continuation_equals_engine_on_the_processor_prompt(video_pipe, ref):
    """The pipeline's continuation = the engine run on processor(text, codes=context) for pos and neg prompts."""
    context = ref["vq.video.codes"][0]
    out = video_pipe("next", negative_prompt="bad", video_codes=context, num_frames=4, do_sample=False)
    proc = video_pipe.make_processor()
    pos, neg = proc(text=["next"], codes=context), proc(text=["bad"], codes=context)
    direct = generate_image_tokens(video_pipe.model, pos["input_ids"], negative_input_ids=neg["input_ids"],
                                   height=8, width=12, num_frames=1, do_sample=False)
    assert torch.equal(out.codes[0, 2], direct.codes[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=6), "multiple of the VQ's temporal_downsample_factor=4"),
        (dict(num_frames=0), "multiple of the VQ's temporal_downsample_factor=4"),
        (dict(video=[]), "no frames"),
        (dict(video_codes=torch.zeros(2, 3, dtype=torch.long)), r"\(T, h, w\)"),
        (dict(video_codes=torch.zeros(1, 2, 2, dtype=torch.long), height=4, width=4), "given video's"),
    ],
)
def test_video_errors(video_pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        video_pipe("x", **kwargs)


def test_context_video_length_must_be_a_multiple_of_the_temporal_factor(video_pipe, ref):
    with pytest.raises(ValueError, match="multiple of temporal_downsample_factor=4"):
        video_pipe("x", video=_frames(ref)[:3])


# ---- understanding ---------------------------------------------------------------------------------------------


def _naive_greedy(model, ids: torch.Tensor, steps: int, eos: int) -> list[int]:
    """Greedy decoding the slow, obvious way: a full forward pass per token, no cache."""
    ids = ids.clone()
    out = []
    for _ in range(steps):
        with torch.no_grad():
            nxt = int(model(ids).logits[0, -1].argmax())
        out.append(nxt)
        if nxt == eos:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return out


def _image(ref, i: int) -> PIL.Image.Image:
    raw = ref[f"imgproc.image{i}.raw_uint8"].numpy()
    return PIL.Image.fromarray(raw[..., :3] if raw.ndim == 3 else raw)


def test_chat_answer_equals_naive_greedy_decoding(chat, ref):
    out = chat("Describe the image.", images=_image(ref, 0), max_new_tokens=6)
    prompt = chat.make_processor()(text="Describe the image.", image=[_image(ref, 0)], mode="U")["input_ids"]
    expected = _naive_greedy(chat.model, prompt, 6, chat.model.config.eos_token_id)
    assert out.sequences[0, prompt.shape[1] :].tolist()[: len(expected)] == expected
    assert out.text[0] == chat.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_chat_batch_with_left_padding_equals_single_calls(chat, ref):
    images, questions = [_image(ref, 0), _image(ref, 2)], ["Describe the image.", "What is it?"]
    batched = chat(questions, images=images, max_new_tokens=5).text
    single = [chat(q, images=im, max_new_tokens=5).text[0] for q, im in zip(questions, images)]
    assert batched == single


def test_chat_samples_from_its_generator_and_never_from_the_global_rng(chat, ref):
    image, question = _image(ref, 0), "Describe the image."

    def ask(seed, **kwargs):
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return chat(question, images=image, max_new_tokens=4, do_sample=True, top_k=None, generator=gen,
                    **kwargs).sequences  # fmt: skip

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, again = ask(0), ask(0)
    assert torch.equal(first, again)  # same seed, same answer
    assert any(not torch.equal(first, ask(seed)) for seed in (1, 2, 3))  # other seeds draw other tokens
    ask(None)  # no generator: a fresh seed, still not torch's global one
    assert torch.equal(torch.get_rng_state(), state)  # torch's global random state was never advanced

    # the first sampled token is an independent draw from the model's next-token distribution with that seed
    prompt = chat.make_processor()(text=question, image=[image], mode="U")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(chat.model(prompt).logits[:, -1].float(), dim=-1)  # (1, V)
    expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0))
    assert first[0, prompt.shape[1]] == expected[0, 0]

    greedy = chat(question, images=image, max_new_tokens=4).sequences
    assert torch.equal(chat(question, images=image, max_new_tokens=4, generator=torch.Generator()).sequences, greedy)


def test_chat_and_video_are_siblings_of_the_image_pipeline(chat):
    from emu3_hf.pipelines import Emu3Pipeline
    from emu3_hf.pipelines.base import Emu3PipelineBase, Emu3VisualPipelineBase

    for cls in (Emu3ChatPipeline, Emu3VideoPipeline):
        assert not issubclass(cls, Emu3Pipeline) and not issubclass(Emu3Pipeline, cls)
        assert issubclass(cls, Emu3PipelineBase)
    assert not issubclass(Emu3ChatPipeline, Emu3VisualPipelineBase)
    for name in ("guidance_scale", "num_timesteps", "recommended_sampling", "interrupt", "_callback_tensor_inputs"):
        assert not hasattr(Emu3ChatPipeline, name), name  # guidance and row steps mean nothing for text answers
        assert hasattr(Emu3Pipeline, name) and hasattr(Emu3VideoPipeline, name), name
    image_pipe = Emu3Pipeline(**chat.components)  # built from one another's components: the same modules
    again = Emu3ChatPipeline(**image_pipe.components)
    assert all(again.components[k] is chat.components[k] for k in chat.components)
    for cls in (Emu3Pipeline, Emu3VideoPipeline, Emu3ChatPipeline):
        assert callable(getattr(cls, "load_lora_weights")) and callable(getattr(cls, "from_baai"))


def test_chat_streams_the_same_text(chat, ref):
    class Collect(TextStreamer):
        def __init__(self, tokenizer):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.pieces = []

        def on_finalized_text(self, text, stream_end=False):
            self.pieces.append(text)

    streamer = Collect(chat.tokenizer)
    out = chat("Describe the image.", images=_image(ref, 1), max_new_tokens=6, streamer=streamer)
    assert "".join(streamer.pieces).strip() == out.text[0]


def test_chat_about_a_video_puts_the_whole_clip_in_context(chat, ref):
    out = chat("What happens?", video=_frames(ref), max_new_tokens=3)
    (clip,) = chat.make_processor().parse_codes(out.sequences[0], strict=False)
    assert clip.shape == (2, 8, 12)


def test_model_generate_takes_the_processor_output(chat, ref):
    inputs = chat.make_processor()(text="Describe the image.", image=[_image(ref, 0)], mode="U")
    out = chat.model.generate(**inputs, max_new_tokens=4, do_sample=False)
    via_pipe = chat("Describe the image.", images=_image(ref, 0), max_new_tokens=4).sequences
    assert torch.equal(out, via_pipe)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "exactly one of"),
        (dict(images="a", codes=torch.zeros(2, 2, dtype=torch.long)), "exactly one of"),
        (dict(prompt=["a", "b"], streamer=object(), codes=[torch.zeros(2, 2, dtype=torch.long)] * 2), "one prompt"),
        (dict(prompt=["a", "b", "c"], images=["x", "y"]), "2 images for 3 prompts"),
        (dict(prompt=["a", "b"], codes=[torch.zeros(2, 2, dtype=torch.long)] * 2, do_sample=True,
              generator=[torch.Generator()]), "1 generators for 2 outputs"),
        (dict(prompt="a", codes=[torch.zeros(2, 2, dtype=torch.long)], do_sample=True, generator=0), "torch.Generator"),
        (dict(prompt="a", codes=[torch.zeros(2, 2, dtype=torch.long)], do_sample=True, num_beams=2), "beam sampling"),
        (dict(prompt="a", codes=[torch.zeros(2, 2, dtype=torch.long)], do_sample=True, temperature=0.0), "temperature"),
    ],
)
def test_chat_errors(chat, kwargs, message):
    kwargs.setdefault("prompt", "Describe.")
    with pytest.raises((ValueError, TypeError), match=message):
        chat(**kwargs)


def test_chat_streams_through_a_text_iterator_streamer(chat, ref):
    import threading

    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(chat.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(out=chat("What is it?", images=_image(ref, 2), max_new_tokens=5, streamer=streamer))
    )
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed.strip() == result["out"].text[0]


def test_mismatched_tokenizer_is_a_clear_error(lm_dir, vq_dir, tok):
    from emu3_hf import Emu3LMForCausalLM, Emu3Pipeline, Emu3VisionVQImageProcessor, Emu3VisionVQModel

    pipe = Emu3Pipeline(
        model=Emu3LMForCausalLM.from_pretrained(lm_dir),
        vq_model=Emu3VisionVQModel.from_pretrained(vq_dir),
        tokenizer=tok,  # the real 184622-token vocabulary, not the tiny model's
        image_processor=Emu3VisionVQImageProcessor.from_pretrained(vq_dir),
    )
    with pytest.raises(ValueError, match="tokenizer belongs to another model"):
        pipe("a cat", height=4, width=4)


def test_video_and_chat_pipelines_load_a_saved_image_pipeline_folder(video_pipe, tmp_path):
    """README: a folder saved by Emu3Pipeline loads as Emu3VideoPipeline / Emu3ChatPipeline (same components)."""
    from emu3_hf import Emu3Pipeline

    image_pipe = Emu3Pipeline(**video_pipe.components)
    image_pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == "Emu3Pipeline"
    for cls in (Emu3VideoPipeline, Emu3ChatPipeline):
        loaded = cls.from_pretrained(tmp_path)
        assert type(loaded) is cls
        loaded.save_pretrained(tmp_path / cls.__name__)  # and saves under its own name
        assert json.loads((tmp_path / cls.__name__ / "model_index.json").read_text())["_class_name"] == cls.__name__
        state = loaded.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in video_pipe.model.state_dict().items())
