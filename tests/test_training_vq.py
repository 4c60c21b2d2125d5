"""emu3_hf.training.vq: training the VQ tokenizer on the tiny world (it learns, its codebook stays in use, resume is
exact, the saved folder reloads), with joint image + clip batches, a metadata.jsonl folder, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emu3_hf import Emu3VisionVQModel
from emu3_hf.tiny_world import iter_image_examples, iter_video_examples
from emu3_hf.training import VQTrainConfig, tiny_world_vq_config, train_vq, vq_forward

# A small VQ that trains in seconds: 4x spatial compression (a 64 x 64 image is 16 x 16 codes), 64 codes.
SMALL = dict(ch_mult=[1, 1, 2], attn_resolutions=[2], codebook_size=64)


def small_config(**overrides):
    return tiny_world_vq_config(**{**SMALL, **overrides})


def to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> (N, 3, 64, 64) in [-1, 1], written out here independently of the package."""
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Eight clean training images of the tiny world."""
    return [np.asarray(image) for image, _ in iter_image_examples("train", seed=1, jitter=False)][:8]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, images):
    config = VQTrainConfig(model=small_config(), output_dir=tmp_path_factory.mktemp("vq") / "out", max_steps=80,
                           image_batch_size=4, learning_rate=5e-3, warmup_steps=5, dead_code_steps=5,
                           show_progress=False)  # fmt: skip
    return train_vq(config, images=images)


def _mse(model: Emu3VisionVQModel, pixels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.decode(model.encode(pixels)) - pixels).square().mean())


def test_reconstruction_learns(trained, images):
    pixels = to_pixels(images)
    torch.manual_seed(0)
    initial = _mse(Emu3VisionVQModel(small_config()).eval(), pixels)
    mean_colour = float((pixels - pixels.mean(dim=(2, 3), keepdim=True)).square().mean())
    final = _mse(trained.model, pixels)
    assert final < 0.05 * initial, (final, initial)
    assert final < 0.6 * mean_colour, (final, mean_colour)
    assert len(trained.history) == 80 and trained.global_step == 80
    assert np.mean([h["mse"] for h in trained.history[-10:]]) < 0.2 * np.mean([h["mse"] for h in trained.history[:5]])


def test_codebook_stays_in_use(trained, images):
    with torch.no_grad():
        codes = trained.model.encode(to_pixels(images))
    assert codes.shape == (8, 16, 16)
    assert codes.unique().numel() >= 32  # half of the 64 codes describe these 8 images
    assert trained.history[-1]["usage"] >= 0.9
    # The fresh codebook (BAAI's tiny uniform init) is seeded from the first step's latents.
    assert trained.history[0]["restarted"] == 64 - round(trained.history[0]["batch_usage"] * 64) > 0


def test_dead_code_restarts_raise_codebook_usage(tmp_path, images):
    usage = {}
    for dead in (None, 2):
        config = VQTrainConfig(model=small_config(), output_dir=tmp_path / str(dead), max_steps=6, image_batch_size=4,
                               learning_rate=5e-3, warmup_steps=1, dead_code_steps=dead, show_progress=False)  # fmt: skip
        history = train_vq(config, images=images).history
        usage[dead] = history[-1]["usage"]
        assert all(h["restarted"] == 0 for h in history) == (dead is None)
    assert usage[2] >= 0.9 and usage[2] > usage[None] + 0.25, usage


def test_training_pass_equals_inference(trained, images):
    pixels = to_pixels(images[:2])
    model = trained.model
    with torch.no_grad():
        out = vq_forward(model, pixels)
        assert torch.equal(out.codes[:, 0], model.encode(pixels))
        torch.testing.assert_close(out.reconstruction, model.decode(model.encode(pixels)), atol=1e-5, rtol=1e-5)
        clips = pixels[:, None].expand(-1, 4, -1, -1, -1)  # still clips, one latent frame each
        out = vq_forward(model, clips)
        assert torch.equal(out.codes, model.encode(clips))
        torch.testing.assert_close(out.reconstruction, model.decode(out.codes), atol=1e-5, rtol=1e-5)


def test_saved_folder_reloads_identically(trained, images):
    folder = trained.output_dir
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".partial")]
    reloaded, info = Emu3VisionVQModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reloaded.eval()
    pixels = to_pixels(images)
    clip = pixels[:8].reshape(1, 8, 3, 64, 64)
    for x in (pixels, clip):
        codes = trained.model.encode(x)
        assert torch.equal(reloaded.encode(x), codes)
        assert torch.equal(reloaded.decode(codes), trained.model.decode(codes))
    record = json.loads((folder / "training_config.json").read_text())
    assert len(record["history"]) == 80 and record["config"]["max_steps"] == 80


def _resume_config(output_dir: Path, **overrides) -> VQTrainConfig:
    settings = dict(model=small_config(dropout=0.1), output_dir=output_dir, image_batch_size=2, video_batch_size=1,
                    max_steps=4, warmup_steps=1, save_steps=2, dead_code_steps=1, learning_rate=5e-3,
                    locality_weight=0.5, show_progress=False)  # fmt: skip
    return VQTrainConfig(**{**settings, **overrides})


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    clips = [np.stack([np.asarray(f) for f in frames]) for frames, _ in iter_video_examples("train", seed=2)][:3]

    def stream():  # the image stream from its start, as a resumed run receives it
        return iter_image_examples("train", seed=3, epochs=None)

    full = train_vq(_resume_config(tmp_path / "full"), images=stream(), videos=clips)
    checkpoint = tmp_path / "full" / "checkpoint-2"
    names = sorted(p.name for p in checkpoint.iterdir())
    assert all(n.endswith((".safetensors", ".json")) for n in names) and "extra.safetensors" in names
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoint-2")
    resumed = train_vq(_resume_config(tmp_path / "resumed", resume_from_checkpoint="latest"), images=stream(),
                       videos=clips)  # fmt: skip
    assert resumed.global_step == 4
    expected, got = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    assert any(k.endswith("running_mean") for k in got)  # BatchNorm statistics are compared too
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    keys = ("loss", "l1", "mse", "vq", "locality", "usage", "restarted", "grad_norm")
    assert all(h["locality"] > 0 for h in full.history)  # the locality term ran, and its pastes were resumed too
    assert [[h[k] for k in keys] for h in resumed.history] == [[h[k] for k in keys] for h in full.history]
    assert sum(h["restarted"] for h in full.history[2:]) > 0  # the restart draws were resumed too

    with pytest.raises(ValueError, match="saved for another VQ"):
        train_vq(_resume_config(tmp_path / "resumed", model=small_config(codebook_size=32),
                                resume_from_checkpoint=checkpoint), images=stream(), videos=clips)  # fmt: skip


def test_metadata_folder_and_pretrained_start(tmp_path, trained):
    pytest.importorskip("datasets", reason="metadata.jsonl folders are read with `pip install 'emu3-hf[train]'`")
    from emu3_hf.utils.video_export import export_to_gif

    folder = tmp_path / "data"
    folder.mkdir()
    lines = []
    for i, (image, caption) in enumerate(iter_image_examples("train", seed=4)):
        if i == 3:
            break
        image.save(folder / f"{i}.png")
        lines.append({"file_name": f"{i}.png", "text": caption})
    for i, (frames, caption) in enumerate(iter_video_examples("train", seed=4)):
        if i == 2:
            break
        export_to_gif(frames, folder / f"{i}.gif")
        lines.append({"file_name": f"{i}.gif", "text": caption})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    start = Emu3VisionVQModel.from_pretrained(trained.output_dir).state_dict()
    config = VQTrainConfig(model=str(trained.output_dir), output_dir=tmp_path / "tuned", max_steps=2,
                           image_batch_size=2, video_batch_size=1, warmup_steps=0, show_progress=False)  # fmt: skip
    result = train_vq(config, images=folder, videos=folder)
    tuned = Emu3VisionVQModel.from_pretrained(result.output_dir).state_dict()
    assert not torch.equal(tuned["encoder.conv_in.weight"], start["encoder.conv_in.weight"])
    # Starting from a trained VQ, nothing is reseeded at once: its codes get dead_code_steps steps.
    assert all(h["restarted"] == 0 for h in result.history)


def test_decoder_only_keeps_every_code_and_improves_the_pixels(tmp_path, trained, images):
    """decoder_only: the encoder side (weights, BatchNorm statistics, codebook) stays bit-exact, so any input keeps
    its codes, clips included; only post_quant_conv and the decoder move, and the reconstruction of the data improves
    (the VQ of the module fixture has had only 80 steps)."""
    start = Emu3VisionVQModel.from_pretrained(trained.output_dir).eval()
    clips = [np.asarray(np.stack([np.asarray(f) for f in frames]))
             for frames, _ in iter_video_examples("train", seed=2, jitter=False)][:2]  # fmt: skip
    pixels, clip_pixels = to_pixels(images), torch.tensor(np.stack(clips), dtype=torch.float32).permute(0, 1, 4, 2, 3)
    clip_pixels = clip_pixels / 127.5 - 1
    config = VQTrainConfig(model=str(trained.output_dir), output_dir=tmp_path / "decoder", max_steps=60,
                           image_batch_size=4, learning_rate=1e-3, warmup_steps=0, decoder_only=True,
                           show_progress=False)  # fmt: skip
    result = train_vq(config, images=images)
    tuned = Emu3VisionVQModel.from_pretrained(result.output_dir).eval()
    before, after = start.state_dict(), tuned.state_dict()
    frozen = [k for k in before if k.split(".")[0] in ("encoder", "quant_conv", "quantize")]
    moved = [k for k in before if k.split(".")[0] in ("decoder", "post_quant_conv") and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # running_mean/var included
    assert moved and all(not torch.equal(before[k], after[k]) for k in moved if "norm" not in k)
    with torch.no_grad():
        assert torch.equal(start.encode(pixels), tuned.encode(pixels))
        assert torch.equal(start.encode(clip_pixels), tuned.encode(clip_pixels))
    assert _mse(tuned, pixels) < 0.95 * _mse(start, pixels)
    assert all(h["restarted"] == 0 for h in result.history)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(decoder_only=True), "decoder_only=True keeps the encoder"),
        (dict(decoder_only=1), "decoder_only must be True or False"),
        (dict(image_batch_size=-1), "image_batch_size must be an integer >= 0"),
        (dict(image_batch_size=0), "both 0"),
        (dict(max_steps=0), "max_steps must be an integer >= 1"),
        (dict(max_steps=2.5), "max_steps must be an integer"),
        (dict(warmup_steps=20, max_steps=10), "exceeds max_steps"),
        (dict(learning_rate=0), "learning_rate must be > 0"),
        (dict(learning_rate=float("nan")), "learning_rate must be a finite number"),
        (dict(l1_weight=0, mse_weight=0), "l1_weight and mse_weight are both 0"),
        (dict(commitment_weight=-0.25), "commitment_weight must be a finite number >= 0"),
        (dict(dead_code_steps=0), "dead_code_steps must be an integer >= 1 or None"),
        (dict(usage_window=0), "usage_window must be an integer >= 1"),
        (dict(max_grad_norm=0), "max_grad_norm must be > 0 or None"),
        (dict(save_total_limit=0), "save_total_limit must be an integer >= 1 or None"),
        (dict(locality_weight=-1.0), "locality_weight must be a finite number >= 0"),
        (dict(locality_margin=-1), "locality_margin must be an integer >= 0"),
        (dict(image_batch_size=0, video_batch_size=1, locality_weight=1.0), "locality_weight applies to images"),
        (dict(model=123), "must be an Emu3VisionVQConfig"),
        (dict(device="not-a-device"), "not a torch device"),
    ],
)
def test_bad_config_is_refused_before_any_work(tmp_path, overrides, match):
    settings = dict(model=small_config(), output_dir=tmp_path / "out", show_progress=False)
    with pytest.raises(ValueError, match=match):
        train_vq(VQTrainConfig(**{**settings, **overrides}), images=[np.zeros((64, 64, 3), np.uint8)])
    assert not (tmp_path / "out").exists()


def test_bad_paths_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VQ folder"):
        train_vq(VQTrainConfig(model=str(tmp_path), output_dir=tmp_path / "out"), images=[])
    with pytest.raises(FileNotFoundError, match="resume_from_checkpoint"):
        train_vq(VQTrainConfig(model=small_config(), output_dir=tmp_path / "out", resume_from_checkpoint="nowhere"),
                 images=[])  # fmt: skip


@pytest.mark.parametrize(
    "sources, overrides, match",
    [
        (dict(images=None), {}, "image_batch_size=8 but no images were passed"),
        (dict(images=[np.zeros((64, 64, 3), np.uint8)], videos=[np.zeros((8, 64, 64, 3), np.uint8)]), {},
         "video_batch_size=0"),
        (dict(images=[np.zeros((64, 64, 3), np.float32)]), {}, "uint8"),
        (dict(images=[]), {}, "source is empty"),
        (dict(images=[np.zeros((62, 62, 3), np.uint8)]), {}, "multiple of the VQ's spatial_scale_factor=4"),
        (dict(images=[np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)]), {}, "share one size"),
        (dict(images=None, videos=[np.zeros((6, 64, 64, 3), np.uint8)]), dict(image_batch_size=0, video_batch_size=1),
         "temporal_downsample_factor=4"),
        (dict(images=iter([np.zeros((64, 64, 3), np.uint8)] * 3)), dict(image_batch_size=2), "stream ended after 3"),
    ],
)
def test_bad_data_is_refused_clearly(tmp_path, sources, overrides, match):
    config = VQTrainConfig(model=small_config(), output_dir=tmp_path / "out", show_progress=False,
                           **{"image_batch_size": 8, **overrides})  # fmt: skip
    with pytest.raises(ValueError, match=match):
        train_vq(config, **sources)
    assert not (tmp_path / "out").exists()


def _cells(pixels: torch.Tensor, reach: int) -> torch.Tensor:
    """A stand-in encoder (B, 3, H, W) -> (B, 1, 3, H/4, W/4): each latent the mean of its 4 x 4 block and of the
    blocks within ``reach`` cells, so a latent sees exactly ``reach`` cells around its own."""
    blocks = torch.nn.functional.avg_pool2d(pixels, 4)
    if reach:
        blocks = torch.nn.functional.avg_pool2d(blocks, 2 * reach + 1, stride=1, padding=reach, count_include_pad=False)
    return blocks[:, None]


@pytest.mark.parametrize("margin", [0, 1, 2])
def test_the_locality_term_is_zero_exactly_when_latents_see_no_further_than_the_margin(tmp_path, images, margin):
    from emu3_hf.training.vq import _VQTrainer

    config = VQTrainConfig(model=small_config(), output_dir=tmp_path / "out", image_batch_size=4, locality_weight=1.0,
                           locality_margin=margin, show_progress=False)  # fmt: skip
    trainer = _VQTrainer(config, images, None)
    pixels = to_pixels(images[:4])
    for reach in (0, 1, 2):
        trainer.model.encode_to_latent = lambda x, reach=reach: _cells(x, reach)
        term = float(trainer._locality(pixels, _cells(pixels, reach)))
        assert (term == 0.0) == (reach <= margin), (reach, margin, term)
    whole = lambda x: _cells(x, 0) + x.mean((1, 2, 3))[:, None, None, None, None]  # noqa: E731  sees everything
    trainer.model.encode_to_latent = whole
    assert float(trainer._locality(pixels, whole(pixels))) > 0
