"""Emu3MultimodalProcessor: BAAI's prompt ids (real vocabulary), the call form, layouts and their inverse."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor

import emu3_hf
from emu3_hf import Emu3MultimodalProcessor, Emu3VisionVQImageProcessor, Emu3VisionVQModel, calculate_generate_size


@pytest.fixture(scope="module")
def image_processor(vq_dir):
    return Emu3VisionVQImageProcessor.from_pretrained(vq_dir)


@pytest.fixture(scope="module")
def vq(vq_dir):
    return Emu3VisionVQModel.from_pretrained(vq_dir).eval()


@pytest.fixture(scope="module")
def real(tok, image_processor):
    """The processor on the real 184622-token vocabulary (no VQ: codes come from the fixtures)."""
    return Emu3MultimodalProcessor(image_processor, tok)


@pytest.fixture(scope="module")
def tiny(tiny_tokenizer, image_processor, vq):
    return Emu3MultimodalProcessor(image_processor, tiny_tokenizer, vq_model=vq)


def _fixture_image(ref, ref_json, i: int) -> PIL.Image.Image:
    mode = ref_json["image_processor"]["images"][i]["pil_mode"]
    return PIL.Image.fromarray(ref[f"imgproc.image{i}.raw_uint8"].numpy(), mode)


@pytest.mark.parametrize(
    "ratio, area, factor",
    [("1:1", 720 * 720, 8), ("16:9", 720 * 720, 8), ("4:3", 48, 2), ("9:16", 512 * 512, 8), ("3:7", 1000, 4)],
)
def test_calculate_generate_size_follows_baai_formula(ratio, area, factor):
    w, h = (int(x) for x in ratio.split(":"))
    s = (area / (w * h)) ** 0.5
    assert calculate_generate_size(ratio, area, factor) == (round(h * s / factor), round(w * s / factor))


def test_720_area_gives_90x90_tokens():
    assert calculate_generate_size("1:1", 720 * 720, 8) == (90, 90)


@pytest.mark.parametrize("bad", ["16x9", "0:1", "a:b", 3])
def test_bad_ratios_raise(bad):
    with pytest.raises(ValueError, match="ratio"):
        calculate_generate_size(bad, 1000, 8)


def test_generation_prompts_match_baai_real_ids(real, ref_json):
    gen = ref_json["image_generation"]
    out = real(
        text=[gen["positive_text"], gen["negative_text"]],
        mode="G",
        ratio=gen["ratio"],
        image_area=gen["image_area"],
        padding="longest",
        return_tensors="pt",
    )
    pos, neg = gen["real_ids_positive"], gen["real_ids_negative"]
    assert out["input_ids"][0].tolist() == pos
    pad = len(pos) - len(neg)
    assert out["input_ids"][1].tolist() == [real.tokenizer.pad_token_id] * pad + neg  # left padded
    assert out["attention_mask"][1].tolist() == [0] * pad + [1] * len(neg)
    assert out["image_size"].tolist() == [gen["image_size_tokens_hw"]] * 2


@pytest.mark.parametrize("i", [0, 1, 2])
def test_understanding_prompt_matches_baai_real_ids(real, ref, ref_json, i):
    case = ref_json["image_processor"]["images"][i]
    codes = ref[f"imgproc.image{i}.codes"][0]  # (h, w)
    out = real(text="Describe the image.", codes=[codes], mode="U")
    assert out["input_ids"][0].tolist() == case["understanding_prompt_real_ids"]
    assert out["image_size"][0].tolist() == case["understanding_image_size"]


def test_understanding_from_pixels_encodes_with_the_vq(tiny, ref, ref_json):
    """Image -> processor -> VQ codes: the codes in the prompt are the fixtures' codes for that image."""
    out = tiny(text=["Describe the image."], image=[_fixture_image(ref, ref_json, 0)], mode="U")
    (codes,) = tiny.parse_codes(out["input_ids"][0])
    assert torch.equal(codes[0], ref["imgproc.image0.codes"][0])


def test_understanding_batch_of_mixed_sizes_is_left_padded(tiny, ref, ref_json):
    images = [_fixture_image(ref, ref_json, i) for i in (0, 2)]
    out = tiny(text=["What is it?", "Describe the image."], image=images, mode="U")
    mask = out["attention_mask"]
    assert mask[:, -1].all() and (mask.sum(1) < mask.shape[1]).any()
    grids = [tiny.parse_codes(row[m.bool()])[0][0] for row, m in zip(out["input_ids"], mask)]
    assert torch.equal(grids[0], ref["imgproc.image0.codes"][0])
    assert torch.equal(grids[1], ref["imgproc.image2.codes"][0])
    assert out["image_size"].tolist() == [[12, 18], [9, 8]]


def test_several_images_in_one_prompt(tiny, ref):
    a, b = ref["imgproc.image0.codes"][0], ref["imgproc.image2.codes"][0]
    out = tiny(text=["Compare."], codes=[[a, b]], mode="U")
    grids = tiny.parse_codes(out["input_ids"][0])
    assert torch.equal(grids[0][0], a) and torch.equal(grids[1][0], b)


def test_mixed_ratios_in_one_generation_batch(tiny):
    out = tiny(text=["a", "b", "c"], mode="G", ratio=["1:1", "4:3", "3:4"], image_area=48)
    assert out["image_size"].tolist() == [[3, 3], [3, 4], [4, 3]]
    explicit = tiny(text=["a", "b"], mode="G", height=[2, 5], width=[7, 1])
    assert explicit["image_size"].tolist() == [[2, 7], [5, 1]]
    header = tiny.tokenizer.decode(explicit["input_ids"][1][explicit["attention_mask"][1].bool()])
    assert header.endswith("<|image start|>5*1<|image token|>")


def test_video_continuation_prompt_round_trips_the_given_frames(tiny, ref):
    codes = ref["vq.video.codes"][0]  # (2, 8, 12)
    out = tiny(text=["a clip"], codes=codes, mode="G")
    ids = out["input_ids"][0].tolist()
    special = tiny.special
    assert ids[-1] == special.eof and special.eoi not in ids  # the clip stays open for more frames
    (parsed,) = tiny.parse_codes(ids + [special.eoi])
    assert torch.equal(parsed, codes)
    assert out["image_size"][0].tolist() == [8, 12]


def test_video_frames_are_encoded_as_one_clip(tiny, ref):
    frames = [((f.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy() for f in ref["vq.video.pixel_values"][0]]
    codes = tiny.encode_video(frames)
    assert codes.shape == (2, 8, 12)
    with pytest.raises(ValueError, match="multiple of temporal_downsample_factor=4"):
        tiny.encode_video(frames[:6])
    with pytest.raises(ValueError, match="no frames"):
        tiny.encode_video([])
    mixed = frames[:3] + [np.zeros((30, 30, 3), np.uint8)]
    with pytest.raises(ValueError, match="different sizes"):
        tiny.encode_video(mixed)


def test_decode_splits_text_and_images_like_baai(tiny, ref, ref_json):
    """imggen.output_ids decode to ['<bos>caption', image, '<eos>'] with BAAI's decoded pixels."""
    chunks = tiny.decode(ref["imggen.output_ids"][0])
    gen = ref_json["image_generation"]
    assert [type(c).__name__ for c in chunks] == ["str", "Image", "str"]
    assert [chunks[0], chunks[2]] == gen["processor_decode_text_chunks"]
    assert chunks[1].size == tuple(gen["decoded_image_size_wh"])
    assert np.array_equal(np.asarray(chunks[1]), ref["imggen.decoded_image_uint8"].numpy())


def test_decode_without_a_vq_returns_codes(real, ref):
    codes = ref["imggen.codes"]
    ids = [real.special.bos, *real.vision_prompt_ids(codes), real.special.eos]
    chunks = real.decode(ids)
    assert torch.equal(chunks[1], codes[None])


def test_errors_name_the_fix(real, tiny):
    with pytest.raises(ValueError, match="mode must be 'G'"):
        real(text="x", mode="X")
    with pytest.raises(ValueError, match="exactly one of"):
        real(text="x", mode="U")
    with pytest.raises(ValueError, match="VQ model"):
        real(text="x", image=[PIL.Image.new("RGB", (16, 16))], mode="U")
    with pytest.raises(ValueError, match="2 ratios for 3 prompts"):
        tiny(text=["a", "b", "c"], ratio=["1:1", "1:2"])
    with pytest.raises(ValueError, match="both `height` and `width`"):
        tiny(text="a", height=3)
    with pytest.raises(ValueError, match="padding='longest'"):
        tiny(text=["a", "a much longer prompt"], padding=False)


def test_baai_call_form_and_auto_processor_round_trip(tiny, tmp_path, lm_dir):
    tiny.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((lm_dir / "config.json").read_text())
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is Emu3MultimodalProcessor
    assert emu3_hf.Emu3Processor is Emu3MultimodalProcessor
    a = tiny(text=["a red circle"], mode="G", ratio="1:1", image_area=64, return_tensors="pt", padding="longest")
    b = loaded(text=["a red circle"], mode="G", ratio="1:1", image_area=64, return_tensors="pt", padding="longest")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["image_size"], b["image_size"])


def test_baai_readme_generation_script_runs_unchanged(tiny, lm_dir, ref, ref_json):
    """BAAI's README recipe, written against BAAI's processor API, with only the import switched to emu3_hf."""
    from transformers import GenerationConfig
    from transformers.generation import (
        LogitsProcessorList,
        PrefixConstrainedLogitsProcessor,
        UnbatchedClassifierFreeGuidanceLogitsProcessor,
    )

    from emu3_hf import Emu3LMForCausalLM

    gen = ref_json["image_generation"]
    model = Emu3LMForCausalLM.from_pretrained(lm_dir).eval()
    kwargs = dict(mode="G", ratio=gen["ratio"], image_area=gen["image_area"], return_tensors="pt", padding="longest")
    pos_inputs = tiny(text=gen["positive_text"], **kwargs)
    neg_inputs = tiny(text=gen["negative_text"], **kwargs)
    h, w = pos_inputs.image_size[:, 0], pos_inputs.image_size[:, 1]
    processors = LogitsProcessorList(
        [
            UnbatchedClassifierFreeGuidanceLogitsProcessor(
                gen["guidance_scale"], model, unconditional_ids=neg_inputs.input_ids
            ),
            PrefixConstrainedLogitsProcessor(tiny.build_prefix_constrained_fn(h, w), num_beams=1),
        ]
    )
    config = GenerationConfig(use_cache=True, do_sample=False, **gen["generation_config"])
    with torch.no_grad():
        outputs = model.generate(
            pos_inputs.input_ids, config, logits_processor=processors, attention_mask=pos_inputs.attention_mask
        )
    assert torch.equal(outputs, ref["imggen.output_ids"])
    mm_list = tiny.decode(outputs[0])
    images = [m for m in mm_list if isinstance(m, PIL.Image.Image)]
    assert len(images) == 1 and np.array_equal(np.asarray(images[0]), ref["imggen.decoded_image_uint8"].numpy())


def test_skip_special_tokens_decodes_text_only_like_baai(tiny, ref):
    out = tiny.batch_decode(ref["imggen.output_ids"], skip_special_tokens=True)
    assert out == [tiny.tokenizer.decode(ref["imggen.output_ids"][0], skip_special_tokens=True)]
    assert isinstance(out[0], str) and "<|" not in out[0]


def test_vision_encode_and_decode_are_the_vq(tiny, vq, ref):
    codes = tiny.vision_encode(ref["vq.image.pixel_values"])
    assert torch.equal(codes, ref["vq.image.codes"])
    torch.testing.assert_close(tiny.vision_decode(codes), vq.decode(codes))
