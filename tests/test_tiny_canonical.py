"""Canonical grids (stage 1d, ``emu3_hf.tiny_world.canonical``): the grids, the random colours, the reserved codes,
the objective in the VQ trainer, and the LM's text-to-image rows. References: the renderer, brute-force nearest rows,
the analyzer's palette, the shipped VQ's own encodings, and an uninterrupted run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from emu3_hf import Emu3VisionVQModel
from emu3_hf.tiny_world import EMU3_TINY, HELD_OUT, PALETTE, Jitter, make_splits, render_image, render_video
from emu3_hf.tiny_world.canonical import (
    CANONICAL_COLOR,
    FIELD_KEYS,
    CanonicalGridObjective,
    canonical_codes,
    canonical_grid,
    canonical_vq_of,
    field_inputs,
    fields_of,
    in_canonical_color,
    paint,
    random_shape_rgb,
    shape_cells,
)

SHIPPED_VQ = EMU3_TINY / "vq_model"  # a stage-1d VQ: its config names the fields


@pytest.fixture(scope="module")
def plain_vq(tmp_path_factory):
    """The shipped VQ as stage 1c left it, as far as the encoder can tell: stage 1d trains only the decoder and the
    field rows, so this is the shipped VQ with its config's ``canonical_fields`` and ``reserved_codes`` dropped and the
    field rows moved far from every latent (rows the encoder never writes, as stage 1d found them)."""
    vq = Emu3VisionVQModel.from_pretrained(SHIPPED_VQ)
    rows = sorted(fields_of(vq).values())
    with torch.no_grad():
        vq.quantize.embedding.weight[rows] = 1e3
    vq.config.canonical_fields = vq.config.reserved_codes = None
    folder = tmp_path_factory.mktemp("plain-vq")
    vq.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert not config.get("canonical_fields") and not config.get("reserved_codes")
    return folder


def _pixels(images):
    return torch.from_numpy(np.stack(images)).float().div(127.5).sub(1.0).movedim(-1, -3)


def test_shape_cells_are_the_cells_the_render_changes_grown_by_the_ring():
    """Reference: the 8x8 cells where the render differs from its background, dilated by brute force."""
    rng = np.random.default_rng(0)
    for spec in make_splits().images["train"][:40]:
        jitter = Jitter.sample(rng)
        changed = (render_image(spec, jitter) != np.asarray(PALETTE[spec.background])).any(-1)
        touched = changed.reshape(8, 8, 8, 8).any(axis=(1, 3))
        assert np.array_equal(shape_cells(spec, jitter, ring=0), touched)
        grown = np.zeros_like(touched)
        for y, x in zip(*np.nonzero(touched)):
            grown[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True
        assert np.array_equal(shape_cells(spec, jitter), grown)


def test_a_grid_keeps_the_shape_codes_near_the_shape_and_the_field_elsewhere():
    spec = make_splits().images["train"][3]
    codes = torch.arange(64).view(8, 8) + 200
    grid = canonical_grid(spec, codes, field_row=7)
    near = torch.from_numpy(shape_cells(spec))
    assert torch.equal(grid[near], codes[near]) and bool((grid[~near] == 7).all()) and 0 < near.sum() < 64
    assert in_canonical_color(spec).color == CANONICAL_COLOR and in_canonical_color(spec).shape == spec.shape


def test_paint_in_the_palette_colour_is_the_render_and_random_colours_avoid_the_held_out_ones():
    rng = np.random.default_rng(1)
    specs = make_splits().images["train"]
    for spec in specs[:20]:
        jitter = Jitter.sample(rng)
        assert np.array_equal(paint(spec, PALETTE[spec.color], jitter), render_image(spec, jitter))
    names, table = list(PALETTE), np.array(list(PALETTE.values()), dtype=np.float64)
    drawn = {shape: set() for shape in ("circle", "square", "triangle")}
    for spec in specs[::3]:
        for _ in range(20):
            rgb = random_shape_rgb(spec, rng)
            nearest = names[int(((table - rgb.astype(np.float64)) ** 2).sum(1).argmin())]
            assert (spec.shape, nearest) not in HELD_OUT
            assert np.linalg.norm(rgb.astype(np.float64) - PALETTE[spec.background]) >= 100
            drawn[spec.shape].add(nearest)
    assert all(len(colours) >= 5 for colours in drawn.values())  # a continuum, not one colour
    assert torch.allclose(field_inputs((255, 0, 127.5), "gray"), torch.tensor([1.0, -1.0, 0.0, 0.0, 0.0, 1.0]))


def test_reserved_codes_are_never_chosen_by_the_quantiser(plain_vq):
    """Reference: brute-force nearest rows among the others; without reserved rows the codes are unchanged."""
    vq = Emu3VisionVQModel.from_pretrained(plain_vq).eval()
    pixels = _pixels([render_image(spec) for spec in make_splits().images["validation"][:16]])
    with torch.no_grad():
        before = vq.encode(pixels)
        latents = vq.encode_to_latent(pixels).movedim(2, -1).reshape(-1, 4)
        reserved = before.flatten().unique()[:5].tolist()  # rows these pictures use
        vq.config.reserved_codes = reserved
        after = vq.encode(pixels)
    distances = torch.cdist(latents, vq.quantize.embedding.weight).square()
    distances[:, reserved] = float("inf")
    assert torch.equal(after.flatten(), distances.argmin(1)) and not torch.isin(after, torch.tensor(reserved)).any()
    assert not torch.equal(after, before)
    vq.config.reserved_codes = None
    with torch.no_grad():
        assert torch.equal(vq.encode(pixels), before)
    with pytest.raises(ValueError, match="reserved_codes must be rows in \\[0, 1024\\)"):
        type(vq.config)(**{**vq.config.to_dict(), "reserved_codes": [1024]})


def test_the_objective_refuses_held_out_pairs_and_a_moving_encoder(plain_vq, tmp_path):
    splits = make_splits()
    bank = [render_image(splits.images["train"][0])]
    with pytest.raises(ValueError, match="never show a held-out pair"):
        CanonicalGridObjective(splits.images["heldout"][:2], bank)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        CanonicalGridObjective(splits.images["train"][:2], bank, batch_size=0)
    objective = CanonicalGridObjective(splits.images["train"][:2], bank)
    with pytest.raises(ValueError, match="decoder_only=True"):
        objective.setup(Emu3VisionVQModel.from_pretrained(SHIPPED_VQ).train(), torch.device("cpu"))
    with pytest.raises(ValueError, match="draws no canonical grids"):
        fields_of(plain_vq)
    (tmp_path / "pipeline").mkdir()
    shutil.copytree(plain_vq, tmp_path / "pipeline" / "vq_model")
    assert canonical_vq_of(tmp_path / "pipeline") is None  # its LM stages would train on plain codes


def test_the_shipped_vq_draws_canonical_grids_and_keeps_every_real_code(plain_vq):
    """The embedded model is a stage-1d one: its pipeline's VQ names a field per (colour, background), and its
    quantiser writes none of them for real pictures and clips (reference: the same weights with the field rows out of
    reach)."""
    shipped = canonical_vq_of(EMU3_TINY)
    assert shipped is not None and set(fields_of(shipped)) == set(FIELD_KEYS)
    assert sorted(fields_of(shipped).values()) == sorted(shipped.config.reserved_codes)
    plain = Emu3VisionVQModel.from_pretrained(plain_vq).eval()
    splits = make_splits()
    with torch.no_grad():
        images = _pixels([render_image(s) for s in splits.images["validation"] + splits.images["lora"]])
        clips = _pixels([render_video(s) for s in splits.videos["validation"][:6]])
        assert torch.equal(shipped.encode(images), plain.encode(images))
        assert torch.equal(shipped.encode(clips), plain.encode(clips))


@pytest.fixture(scope="module")
def stage_1d(tmp_path_factory, plain_vq):
    """Stage 1d for 4 steps from the stage-1c VQ (2 images, 1 clip, 2 grids a step), and the same run cut after its
    step-2 checkpoint and resumed."""
    from emu3_hf.tiny_world.recipe import tune_tiny_vq_decoder

    root = tmp_path_factory.mktemp("stage-1d")
    splits = make_splits()
    specs = list(splits.images["train"][:60])

    def objective():
        return CanonicalGridObjective(specs, [render_image(s) for s in splits.images["train"]],
                                      [render_video(s) for s in splits.videos["train"][:8]], batch_size=2)  # fmt: skip

    settings = dict(steps=4, image_batch_size=2, video_batch_size=1, save_steps=2, show_progress=False)
    whole = tune_tiny_vq_decoder(plain_vq, root / "whole", objective=objective(), **settings)
    shutil.copytree(root / "whole" / "checkpoint-2", root / "cut" / "checkpoint-2")
    cut = tune_tiny_vq_decoder(plain_vq, root / "cut", objective=objective(), **settings)
    return whole, cut


def test_stage_1d_keeps_every_code_and_writes_linear_fields_into_unused_rows(stage_1d, plain_vq):
    whole, _ = stage_1d
    shipped = Emu3VisionVQModel.from_pretrained(plain_vq).eval()  # the start
    tuned = Emu3VisionVQModel.from_pretrained(whole).eval()
    splits = make_splits()
    with torch.no_grad():
        images = _pixels([render_image(s) for s in splits.images["validation"] + splits.images["lora"]])
        clips = _pixels([render_video(s) for s in splits.videos["validation"][:6]])
        assert torch.equal(tuned.encode(images), shipped.encode(images))  # the LM's inputs stay as they were
        assert torch.equal(tuned.encode(clips), shipped.encode(clips))
        used = set(shipped.encode(_pixels([render_image(s) for s in splits.images["train"]])).unique().tolist())
    fields = fields_of(tuned)
    assert set(fields) == set(FIELD_KEYS) and len(FIELD_KEYS) == 23 and len(set(fields.values())) == 23
    assert set(fields.values()) == set(tuned.config.reserved_codes) and not set(fields.values()) & used
    rows = tuned.quantize.embedding.weight[[fields[key] for key in FIELD_KEYS]].detach()
    inputs = torch.stack([field_inputs(PALETTE[color], background) for color, background in FIELD_KEYS])
    fit = torch.linalg.lstsq(inputs, rows).solution
    assert torch.allclose(inputs @ fit, rows, atol=1e-5)  # a linear function of (colour, background)
    assert not torch.allclose(rows, shipped.quantize.embedding.weight[[fields[key] for key in FIELD_KEYS]])
    history = json.loads((whole / "training_config.json").read_text())["history"]
    assert len(history) == 4 and all(step["canonical"] > 0 for step in history)
    # the report scores the decoded grids the way the evaluation scores the LM's pictures
    from emu3_hf.tiny_world import aggregate_scores, score_image
    from emu3_hf.tiny_world.vq_reports import canonical_reconstruction_report

    report = canonical_reconstruction_report(tuned, "heldout")
    with torch.no_grad():
        held = splits.images["heldout"]
        drawn = tuned.decode(torch.stack(canonical_codes(tuned, held)))
    pictures = ((drawn.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(1, -1).numpy()
    assert report == aggregate_scores(score_image(p, s) for p, s in zip(pictures, held))
    assert report["count"] == len(held) == 80


def test_stage_1d_resumes_exactly_with_its_field_map(stage_1d):
    whole, cut = stage_1d
    a = Emu3VisionVQModel.from_pretrained(whole).state_dict()
    b = Emu3VisionVQModel.from_pretrained(cut).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha, hb = (json.loads((p / "training_config.json").read_text())["history"] for p in (whole, cut))
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


def test_the_lm_draws_canonical_grids_and_reads_real_codes(stage_1d):
    """Reference for the grids: the VQ's codes of the red picture, masked by the rendered shape's cells."""
    from emu3_hf.tiny_world.recipe import lm_training_examples

    whole, _ = stage_1d
    vq = Emu3VisionVQModel.from_pretrained(whole).eval()
    fields, specs = fields_of(vq), make_splits().images["test"]
    data = lm_training_examples(copies=2, split="test", canonical=vq).with_format(None)
    draws = [row for row in data if row["text"] and row["video"] is None]
    reads = [row for row in data if row["question"]]
    assert len(draws) == 2 * len(specs) and all(row["image"] is None and row["grid"] == [0, 8, 8] for row in draws)
    assert all(row["codes"] is None and row["image"] is not None for row in reads)
    by_caption = {spec.caption(): spec for spec in specs}
    with torch.no_grad():
        for row in draws[:12]:
            spec = by_caption[row["text"]]
            red = vq.encode(_pixels([render_image(in_canonical_color(spec))]))[0]
            near = torch.from_numpy(shape_cells(spec))
            expected = torch.where(near, red, torch.tensor(fields[(spec.color, spec.background)]))
            assert row["codes"] == expected.flatten().tolist()
    assert [g.flatten().tolist() for g in canonical_codes(vq, specs[:3])] == [
        next(r["codes"] for r in draws if r["text"] == s.caption()) for s in specs[:3]
    ]
    with pytest.raises(ValueError, match="pass jitter_targets=False"):
        lm_training_examples(copies=1, split="test", canonical=vq, jitter_targets=True)


def test_train_vq_names_a_bad_objective(tmp_path):
    from emu3_hf.training import VQTrainConfig, train_vq

    with pytest.raises(ValueError, match="objective must be a VQObjective"):
        train_vq(VQTrainConfig(model=str(SHIPPED_VQ), output_dir=tmp_path / "o"), images=[], objective=object())


def test_decoding_code_vectors_is_decoding_their_codes():
    from emu3_hf.training import decode_vectors

    vq = Emu3VisionVQModel.from_pretrained(SHIPPED_VQ).eval()
    with torch.no_grad():
        codes = vq.encode(_pixels([render_image(s) for s in make_splits().images["test"][:4]]))  # (4, 8, 8)
        vectors = vq.quantize.embedding(codes).movedim(-1, 1)[:, None]  # (4, 1, C, 8, 8)
        drawn = decode_vectors(vq, vectors, first_frame_only=True)[:, 0]
        assert torch.allclose(drawn, vq.decode(codes), atol=1e-5)
