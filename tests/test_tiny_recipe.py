"""The embedded model's recipe, stage 1 (the VQ): its data, a short run that resumes, and the reconstruction score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emu3_hf import Emu3VisionVQModel
from emu3_hf.tiny_world import LORA_COLOR, make_splits
from emu3_hf.tiny_world.recipe import train_tiny_vq, vq_reconstruction_report, vq_training_specs


def test_the_vq_sees_train_and_pink_and_nothing_held_out():
    images, videos = vq_training_specs()
    splits = make_splits()
    for specs, table in ((images, splits.images), (videos, splits.videos)):
        assert set(table["train"]) | set(table["lora"]) == set(specs)
        for name in ("validation", "test", "heldout"):
            assert not set(table[name]) & set(specs), name
        assert any(spec.color == LORA_COLOR for spec in specs)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """A run cut after its step-2 checkpoint and started again finishes with the uninterrupted run's weights."""
    import shutil

    args = dict(max_steps=3, save_steps=1, warmup_steps=1, image_batch_size=2, video_batch_size=1,
                show_progress=False)  # fmt: skip
    whole = Emu3VisionVQModel.from_pretrained(train_tiny_vq(tmp_path / "whole", **args))
    assert whole.config.codebook_size == 1024
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    resumed = Emu3VisionVQModel.from_pretrained(train_tiny_vq(tmp_path / "cut", **args))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    settings = [json.loads((tmp_path / run / "training_config.json").read_text())["config"] for run in ("whole", "cut")]
    assert [s["resume_from_checkpoint"] for s in settings] == [None, "latest"]


class _Codec(torch.nn.Module):
    """A stand-in VQ: 'codes' are the pixels themselves; decode returns them, or a flat gray image."""

    def __init__(self, exact: bool):
        super().__init__()
        self.exact = exact
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def encode(self, pixels):
        return pixels

    def decode(self, codes):
        return codes if self.exact else torch.zeros_like(codes)


@pytest.mark.parametrize("exact", [True, False])
def test_the_reconstruction_report_reads_images_back_with_the_analyzer(exact):
    report = vq_reconstruction_report(_Codec(exact), "validation")
    assert set(report) == {"shape", "color", "background", "size", "position", "all_five"}
    if exact:  # a lossless codec: the analyzer reads every clean render back exactly
        assert all(value == 1.0 for value in report.values())
    else:  # a flat image has no shape, so no image is read back right
        assert report["all_five"] == 0.0 and report["color"] == 0.0
        assert np.isclose(report["background"], np.mean([s.background == "gray" for s in make_splits().images["validation"]]))
