"""Emu3VisionVQImageProcessor: bit-exact parity with BAAI's preprocessing and postprocessing (fixtures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emu3_hf.processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor, smart_resize


@pytest.fixture(scope="module")
def proc(vq_dir) -> Emu3VisionVQImageProcessor:
    return Emu3VisionVQImageProcessor.from_pretrained(vq_dir)


def _fixture_image(ref: dict, ref_json: dict, i: int) -> Image.Image:
    mode = ref_json["image_processor"]["images"][i]["pil_mode"]
    return Image.fromarray(ref[f"imgproc.image{i}.raw_uint8"].numpy(), mode)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("i", range(3))
def test_pixel_values_bit_exact(proc, ref, ref_json, i: int) -> None:
    image = _fixture_image(ref, ref_json, i)
    assert image.mode == ref_json["image_processor"]["images"][i]["pil_mode"]
    pixels = proc(image, return_tensors="pt")["pixel_values"]
    expected = ref[f"imgproc.image{i}.pixel_values"]
    assert pixels.dtype == torch.float32 and pixels.shape == expected.shape
    assert torch.equal(pixels, expected)
    assert list(pixels.shape[-2:]) == ref_json["image_processor"]["images"][i]["resized_hw"]


@pytest.mark.parametrize("i", range(3))
@pytest.mark.parametrize("source", ["pixel_values", "decoded"])
def test_postprocess_bit_exact(proc, ref, ref_json, i: int, source: str) -> None:
    expected = ref[f"imgproc.image{i}.postprocess_{source}_uint8"].numpy()
    images = proc.postprocess(ref[f"imgproc.image{i}.{source}"])["pixel_values"]
    assert len(images) == 1 and isinstance(images[0], Image.Image)
    assert list(images[0].size) == ref_json["image_processor"]["images"][i]["postprocess_output_size_wh"]
    np.testing.assert_array_equal(np.array(images[0]), expected)
    # numpy / torch outputs carry the same uint8 pixels (HWC for "np", CHW for "pt")
    np.testing.assert_array_equal(
        proc.postprocess(ref[f"imgproc.image{i}.{source}"], return_tensors="np")["pixel_values"][0], expected
    )
    pt = proc.postprocess(ref[f"imgproc.image{i}.{source}"].numpy(), return_tensors="pt")["pixel_values"]
    assert pt.dtype == torch.uint8 and torch.equal(pt[0].permute(1, 2, 0), torch.from_numpy(expected))


def test_postprocess_truncates_instead_of_rounding(proc) -> None:
    # 0.999 -> (0.999 + 1) / 2 * 255 = 254.87..., which BAAI's astype(uint8) truncates to 254
    x = torch.full((1, 3, 2, 2), 0.999)
    assert np.array(proc.postprocess(x)["pixel_values"][0]).max() == 254
    assert np.array(proc.postprocess(torch.full((3, 2, 2), 9.0))["pixel_values"][0]).min() == 255  # clipped


# ---------------------------------------------------------------------------------------------- smart resize
def test_smart_resize_branches_match_fixture_cases(ref_json) -> None:
    cfg = ref_json["preprocessor_config_json"]
    kwargs = {"factor": cfg["spatial_factor"], "min_pixels": cfg["min_pixels"], "max_pixels": cfg["max_pixels"]}
    for case in ref_json["image_processor"]["images"]:
        w, h = case["input_size_wh"]
        assert list(smart_resize(h, w, **kwargs)) == case["resized_hw"]
    # plain rounding, with Python's banker's rounding: 23/2 = 11.5 -> 12, 37/2 = 18.5 -> 18
    assert smart_resize(23, 37, **kwargs) == (24, 36)
    # area above max_pixels: floor(side / beta / factor) * factor
    assert smart_resize(45, 61, **kwargs) == (26, 36)
    # area below min_pixels: ceil(side * beta / factor) * factor
    assert smart_resize(13, 11, **kwargs) == (18, 16)
    # BAAI's defaults (factor 8, 512^2 .. 1024^2)
    assert smart_resize(720, 1280) == (720, 1280)
    assert smart_resize(2000, 3000) == (832, 1248)
    assert smart_resize(100, 100) == (512, 512)


def test_smart_resize_errors() -> None:
    with pytest.raises(ValueError, match="shorter than the spatial factor"):
        smart_resize(7, 100, factor=8)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 51, factor=2, min_pixels=4, max_pixels=10_000)
    assert smart_resize(10, 50, factor=2, min_pixels=4, max_pixels=10_000) == (10, 50)  # ratio 5 is allowed
    with pytest.raises(ValueError, match="max_pixels"):
        smart_resize(64, 64, factor=16, min_pixels=1, max_pixels=100)


def test_processor_raises_on_extreme_aspect_ratio(proc) -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        proc(Image.new("RGB", (120, 20)))


# ---------------------------------------------------------------------------------------------- inputs
def test_input_kinds_agree(proc, ref, ref_json) -> None:
    raw = ref["imgproc.image0.raw_uint8"]  # (H, W, 3) uint8
    expected = ref["imgproc.image0.pixel_values"]
    for image in (raw.numpy(), raw, raw.permute(2, 0, 1), raw.permute(2, 0, 1).numpy()):
        assert torch.equal(proc(image, return_tensors="pt")["pixel_values"], expected)
    # RGBA: alpha is dropped (PIL convert("RGB")), never composited
    rgba = _fixture_image(ref, ref_json, 1)
    dropped = rgba.convert("RGB")
    assert torch.equal(proc(rgba, return_tensors="pt").pixel_values, proc(dropped, return_tensors="pt").pixel_values)
    # grayscale arrays behave like mode-"L" images
    gray = ref["imgproc.image2.raw_uint8"]
    assert torch.equal(proc(gray.numpy(), return_tensors="pt").pixel_values, ref["imgproc.image2.pixel_values"])


def test_batches_and_video_frames(proc, ref, ref_json) -> None:
    image = _fixture_image(ref, ref_json, 0)
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    batch = proc([image, flipped, image], return_tensors="pt")["pixel_values"]
    assert batch.shape == (3, 3, 24, 36)
    assert torch.equal(batch[0], ref["imgproc.image0.pixel_values"][0])
    assert torch.equal(batch[1], proc(flipped, return_tensors="pt")["pixel_values"][0])
    # video frames as one (T, H, W, C) uint8 array -> (T, 3, H, W)
    frames = np.stack([np.array(image), np.array(flipped)])
    video = proc(frames, return_tensors="np")["pixel_values"]
    assert isinstance(video, np.ndarray) and video.shape == (2, 3, 24, 36)
    np.testing.assert_array_equal(video, batch[:2].numpy())
    np.testing.assert_array_equal(
        proc(torch.from_numpy(frames).permute(0, 3, 1, 2), return_tensors="np")["pixel_values"], video
    )


def test_mixed_sizes_need_one_call_per_image_or_a_list(proc, ref, ref_json) -> None:
    images = [_fixture_image(ref, ref_json, 0), _fixture_image(ref, ref_json, 2)]
    with pytest.raises(ValueError, match="different sizes"):
        proc(images, return_tensors="pt")
    as_list = proc(images)["pixel_values"]  # return_tensors=None: one (3, H, W) array per image
    assert [p.shape for p in as_list] == [(3, 24, 36), (3, 18, 16)]
    np.testing.assert_array_equal(as_list[1], ref["imgproc.image2.pixel_values"][0].numpy())


def test_bad_inputs_have_clear_errors(proc) -> None:
    with pytest.raises(TypeError, match="uint8"):
        proc(np.zeros((32, 32, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="Unsupported input type"):
        proc("not-an-image.png")
    with pytest.raises(ValueError, match="empty"):
        proc([])
    with pytest.raises(TypeError, match="once per video"):
        proc([[Image.new("RGB", (32, 32))]])
    with pytest.raises(ValueError, match="do_convert_rgb"):
        proc(Image.new("L", (32, 32)), do_convert_rgb=False)
    with pytest.raises(ValueError, match="return_tensors"):
        proc.postprocess(torch.zeros(1, 3, 4, 4), return_tensors="tf")
    with pytest.raises(ValueError, match="Expected pixels"):
        proc.postprocess(torch.zeros(1, 4, 4, 3))


# ---------------------------------------------------------------------------------------------- config
def test_config_round_trip_and_overrides(proc, vq_dir, tmp_path) -> None:
    assert (proc.min_pixels, proc.max_pixels, proc.spatial_factor, proc.resample) == (256, 1024, 2, 3)
    assert proc.size == {"min_pixels": 256, "max_pixels": 1024}
    proc.save_pretrained(tmp_path)
    again = Emu3VisionVQImageProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == proc.to_dict()
    bigger = Emu3VisionVQImageProcessor.from_pretrained(vq_dir, max_pixels=4096)
    assert bigger.max_pixels == 4096 and bigger.size["max_pixels"] == 4096
    assert Emu3VisionVQImageProcessor(size={"min_pixels": 64, "max_pixels": 128}).max_pixels == 128
    defaults = Emu3VisionVQImageProcessor()
    assert (defaults.min_pixels, defaults.max_pixels, defaults.spatial_factor) == (512 * 512, 1024 * 1024, 8)
    with pytest.raises(ValueError, match="min_pixels"):
        Emu3VisionVQImageProcessor(min_pixels=10, max_pixels=5)


def test_postprocess_video_gives_frame_lists(proc) -> None:
    video = torch.zeros(2, 3, 3, 4, 6)  # (N, T, 3, H, W)
    frames = proc.postprocess(video)["pixel_values"]
    assert len(frames) == 2 and len(frames[0]) == 3 and frames[0][0].size == (6, 4)
    assert proc.postprocess(video, return_tensors="np")["pixel_values"].shape == (2, 3, 4, 6, 3)


def test_auto_image_processor_loads_baai_folder(vq_dir, tmp_path) -> None:
    import shutil

    from transformers import AutoImageProcessor

    import emu3_hf  # noqa: F401  (registration happens on import)

    folder = tmp_path / "vq"
    shutil.copytree(vq_dir, folder)
    (folder / "image_processing_emu3visionvq.py").write_text("raise RuntimeError('remote code must not run')\n")
    loaded = AutoImageProcessor.from_pretrained(folder)
    assert type(loaded) is Emu3VisionVQImageProcessor
