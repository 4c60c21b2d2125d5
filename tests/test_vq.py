"""Parity and behaviour tests of the Emu3 VQ tokenizer against BAAI's reference outputs (tests/fixtures/baai-tiny)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from emu3_hf.modeling import configuration_emu3visionvq, modeling_emu3visionvq
from emu3_hf.modeling.configuration_emu3visionvq import Emu3VisionVQConfig
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel

LATENT_ATOL = 1e-4
PIXEL_ATOL = 2e-4


@pytest.fixture(scope="module")
def vq(vq_dir: Path) -> Emu3VisionVQModel:
    model = Emu3VisionVQModel.from_pretrained(vq_dir).eval()
    assert model.dtype == torch.float32
    return model


def _tiny_config(**overrides) -> Emu3VisionVQConfig:
    kwargs = dict(codebook_size=64, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[0, 1])
    kwargs.update(overrides)
    return Emu3VisionVQConfig(**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------


def test_config_defaults_match_baai():
    config = Emu3VisionVQConfig()
    assert config.model_type == "Emu3VisionVQ"
    assert (config.codebook_size, config.embed_dim, config.z_channels, config.double_z) == (32768, 4, 4, False)
    assert (config.in_channels, config.out_channels, config.temporal_downsample_factor) == (3, 3, 4)
    assert (config.ch, config.ch_mult, config.num_res_blocks, config.attn_resolutions) == (256, [1, 2, 2, 4], 2, [3])
    assert config.dropout == 0.0
    assert config.spatial_scale_factor == 8


def test_config_loads_baai_json(vq_dir: Path):
    config = Emu3VisionVQConfig.from_pretrained(vq_dir)
    assert config.model_type == "Emu3VisionVQ"
    assert (config.ch, config.ch_mult, config.attn_resolutions, config.codebook_size) == (32, [1, 1], [1], 256)
    assert config.spatial_scale_factor == 2
    assert config.auto_map["AutoModel"] == "modeling_emu3visionvq.Emu3VisionVQModel"
    assert config.architectures == ["Emu3VisionVQModel"]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(embed_dim=8), "embed_dim .* must equal z_channels"),
        (dict(double_z=True), "double_z=True is not supported"),
        (dict(ch=40), "multiple of 32"),
        (dict(ch=16, ch_mult=[2, 1]), "multiple of 32"),
        (dict(temporal_downsample_factor=3), "power of 2"),
        (dict(attn_resolutions=[2]), "level indices"),
    ],
)
def test_config_rejects_unrunnable_settings(overrides, match):
    kwargs = dict(ch=32, ch_mult=[1, 1], attn_resolutions=[1])
    kwargs.update(overrides)
    with pytest.raises(ValueError, match=match):
        Emu3VisionVQConfig(**kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def test_strict_key_loading(vq_dir: Path):
    model, info = Emu3VisionVQModel.from_pretrained(vq_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not info["error_msgs"]
    with safe_open(str(vq_dir / "model.safetensors"), "pt") as f:
        checkpoint_keys = set(f.keys())
    assert set(model.state_dict()) == checkpoint_keys
    # BatchNorm statistics come from the checkpoint, not from the fresh-model init.
    with safe_open(str(vq_dir / "model.safetensors"), "pt") as f:
        key = "encoder.time_res_stack.0.norm1.running_var"
        torch.testing.assert_close(model.state_dict()[key], f.get_tensor(key), atol=0, rtol=0)


def test_properties(vq: Emu3VisionVQModel):
    assert vq.spatial_scale_factor == 2
    assert vq.temporal_downsample_factor == 4
    assert vq.codebook_size == 256
    assert vq.main_input_name == "pixel_values"


def test_module_files_are_exportable_as_remote_code():
    # Hub remote code copies the file and its relative siblings only: no emu3_hf imports, no third-party extras.
    # safetensors is a dependency of transformers itself, so remote code may import it.
    allowed = {"torch", "transformers", "huggingface_hub", "safetensors"} | set(sys.stdlib_module_names)
    folder = Path(modeling_emu3visionvq.__file__).parent
    pending, seen = [Path(configuration_emu3visionvq.__file__), Path(modeling_emu3visionvq.__file__)], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        # transformers' loader ignores imports guarded by `try: ... except ImportError:` (optional imports)
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in t.handlers) for b in t.body
            for n in ast.walk(b)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1 and (folder / f"{node.module}.py").is_file(), "only flat siblings"
                    pending.append(folder / f"{node.module}.py")
                    continue
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"


# ----------------------------------------------------------------------------------------------------------------------
# Parity with BAAI's reference outputs
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "video"])
@torch.no_grad()
def test_encode_decode_parity(vq: Emu3VisionVQModel, ref: dict, kind: str):
    pixel_values = ref[f"vq.{kind}.pixel_values"]
    torch.testing.assert_close(vq.encode_to_latent(pixel_values), ref[f"vq.{kind}.latent"], atol=LATENT_ATOL, rtol=0)
    codes = vq.encode(pixel_values)
    assert codes.dtype == torch.int64
    assert torch.equal(codes, ref[f"vq.{kind}.codes"])
    decoded = vq.decode(ref[f"vq.{kind}.codes"])
    torch.testing.assert_close(decoded, ref[f"vq.{kind}.decoded"], atol=PIXEL_ATOL, rtol=0)


@torch.no_grad()
def test_grouped_video_parity(vq: Emu3VisionVQModel, ref: dict):
    video = ref["vq.video.pixel_values"]
    grouped = video.view(-1, vq.temporal_downsample_factor, *video.shape[2:])  # (2, 4, 3, H, W)
    codes = vq.encode(grouped)
    assert torch.equal(codes, ref["vq.video_grouped.codes"])
    torch.testing.assert_close(vq.decode(codes), ref["vq.video_grouped.decoded"], atol=PIXEL_ATOL, rtol=0)


@pytest.mark.parametrize("index", [0, 1, 2])
@torch.no_grad()
def test_image_processor_outputs_parity(vq: Emu3VisionVQModel, ref: dict, index: int):
    prefix = f"imgproc.image{index}"
    codes = vq.encode(ref[f"{prefix}.pixel_values"])
    assert torch.equal(codes, ref[f"{prefix}.codes"])
    torch.testing.assert_close(vq.decode(codes), ref[f"{prefix}.decoded"], atol=PIXEL_ATOL, rtol=0)


@torch.no_grad()
def test_generated_codes_decode_parity(vq: Emu3VisionVQModel, ref: dict):
    decoded = vq.decode(ref["imggen.codes"][None])
    torch.testing.assert_close(decoded, ref["imggen.decoded_pixels"], atol=PIXEL_ATOL, rtol=0)


@torch.no_grad()
def test_image_decode_is_first_frame_of_video_decode(vq: Emu3VisionVQModel, ref: dict):
    codes = ref["vq.image.codes"]  # (B, h, w)
    image = vq.decode(codes)  # (B, 3, H, W)
    video = vq.decode(codes[:, None])  # (B, tf, 3, H, W)
    assert video.shape == (2, 4, 3, 16, 24)
    torch.testing.assert_close(image, video[:, 0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_forward_reconstructs_through_the_codebook(vq: Emu3VisionVQModel, ref: dict):
    out = vq(ref["vq.image.pixel_values"])
    assert torch.equal(out.codes, ref["vq.image.codes"])
    torch.testing.assert_close(out.latents, ref["vq.image.latent"], atol=LATENT_ATOL, rtol=0)
    torch.testing.assert_close(out.reconstruction, ref["vq.image.decoded"], atol=PIXEL_ATOL, rtol=0)


@torch.no_grad()
def test_portrait_video_round_trip_keeps_shape(vq: Emu3VisionVQModel):
    generator = torch.Generator().manual_seed(0)
    video = torch.rand(2, 8, 3, 24, 10, generator=generator) * 2 - 1  # H > W
    codes = vq.encode(video)
    assert codes.shape == (2, 2, 12, 5)
    assert vq.decode(codes).shape == video.shape
    # Each clip is encoded on its own: batching does not mix samples.
    assert torch.equal(vq.encode(video[1:]), codes[1:])


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, dtype, match",
    [
        ((3, 16, 24), torch.float32, r"\(B, C, H, W\).*pixel_values\[None\]"),
        ((1, 1, 4, 3, 16, 24), torch.float32, r"\(B, T, C, H, W\)"),
        ((1, 4, 16, 24), torch.float32, r"4 channels.*expects 3.*permute"),
        ((1, 16, 24, 3), torch.float32, r"channels.*permute"),
        ((1, 3, 17, 24), torch.float32, r"multiples of spatial_scale_factor=2.*image processor"),
        ((1, 3, 16, 25), torch.float32, r"multiples of spatial_scale_factor=2"),
        ((1, 6, 3, 16, 24), torch.float32, r"temporal_downsample_factor=4.*T=6.*Trim or pad"),
        ((1, 3, 16, 24), torch.uint8, r"floating-point.*image processor"),
    ],
)
def test_encode_rejects_bad_pixel_values(vq: Emu3VisionVQModel, shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        vq.encode(torch.zeros(shape, dtype=dtype))


@pytest.mark.parametrize(
    "codes, match",
    [
        (torch.zeros(8, 12, dtype=torch.long), r"\(B, h, w\).*codes\[None\]"),
        (torch.zeros(1, 1, 1, 8, 12, dtype=torch.long), r"\(B, t, h, w\)"),
        (torch.zeros(1, 8, 12), r"integer.*codes.long\(\)"),
        (torch.full((1, 8, 12), 256), r"\[0, codebook_size=256\).*\[256, 256\].*first visual token"),
        (torch.full((1, 2, 8, 12), -1), r"\[0, codebook_size=256\).*\[-1, -1\]"),
    ],
)
def test_decode_rejects_bad_codes(vq: Emu3VisionVQModel, codes, match):
    with pytest.raises(ValueError, match=match):
        vq.decode(codes)


# ----------------------------------------------------------------------------------------------------------------------
# Serialisation and fresh models
# ----------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_save_pretrained_round_trip(vq: Emu3VisionVQModel, ref: dict, tmp_path: Path):
    vq.save_pretrained(tmp_path)
    reloaded, info = Emu3VisionVQModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    saved, original = Emu3VisionVQConfig.from_pretrained(tmp_path).to_dict(), vq.config.to_dict()
    saved.pop("_name_or_path"), original.pop("_name_or_path")
    assert saved == original and saved["model_type"] == "Emu3VisionVQ"
    reloaded.eval()
    pixel_values = ref["vq.video.pixel_values"]
    assert torch.equal(reloaded.encode(pixel_values), vq.encode(pixel_values))
    assert torch.equal(reloaded.decode(ref["vq.video.codes"]), vq.decode(ref["vq.video.codes"]))


def test_random_init_is_sensible():
    torch.manual_seed(0)
    model = Emu3VisionVQModel(_tiny_config())
    conv = model.encoder.down[1].block[0].conv1  # (64, 32, 3, 3): kaiming normal, fan_out, relu gain
    expected_std = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.1
    assert model.quantize.embedding.weight.abs().max() <= 1 / 64
    bn = model.encoder.time_res_stack[0].norm1
    assert torch.equal(bn.running_var, torch.ones(4)) and torch.equal(bn.running_mean, torch.zeros(4))
    assert torch.equal(model.decoder.norm_out.norm_layer.weight, torch.ones(32))


@torch.no_grad()
def test_random_init_runs_in_bfloat16():
    torch.manual_seed(0)
    config = _tiny_config()
    model = Emu3VisionVQModel(config).to(torch.bfloat16).eval()
    image = torch.rand(2, 3, 8, 12) * 2 - 1  # float32 input is cast to the model dtype
    out = model(image)
    assert out.codes.shape == (2, 4, 6) and out.codes.dtype == torch.int64
    assert 0 <= out.codes.min() and out.codes.max() < config.codebook_size
    assert out.reconstruction.shape == image.shape and out.reconstruction.dtype == torch.bfloat16
    assert torch.isfinite(out.reconstruction).all()
    video = torch.rand(1, 8, 3, 12, 8) * 2 - 1
    codes = model.encode(video)
    assert codes.shape == (1, 2, 6, 4) and codes.max() < config.codebook_size
    assert model.decode(codes).shape == video.shape


def test_training_mode_backpropagates():
    torch.manual_seed(0)
    model = Emu3VisionVQModel(_tiny_config(dropout=0.1)).train()
    out = model(torch.rand(2, 4, 3, 8, 8) * 2 - 1)
    out.reconstruction.square().mean().backward()
    assert model.decoder.conv_out.weight.grad is not None
    assert model.encoder.time_res_stack[0].norm1.num_batches_tracked.item() == 1


@pytest.mark.parametrize("with_remote_files", [False, True])
def test_baai_vq_folder_loads_through_auto_model_without_remote_code(vq_dir, tmp_path, with_remote_files):
    import shutil

    from transformers import AutoConfig, AutoModel

    import emu3_hf

    folder = tmp_path / "Emu3-VisionTokenizer"
    shutil.copytree(vq_dir, folder)
    if with_remote_files:
        for name in ("configuration_emu3visionvq.py", "modeling_emu3visionvq.py"):
            (folder / name).write_text("raise RuntimeError('remote code must not run')\n")
    assert type(AutoConfig.from_pretrained(folder)) is emu3_hf.Emu3VisionVQConfig
    assert type(AutoModel.from_pretrained(folder)) is emu3_hf.Emu3VisionVQModel
