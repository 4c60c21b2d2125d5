"""The tiny shapes world (docs/TINY_WORLD.md): pixels, captions, splits and the analyzer, checked against the spec.

Expected pixels and counts are computed here from the spec's own numbers (literal boxes, per-pixel loops),
never by the renderer; the analyzer must read back every spec the renderer draws, with and without jitter.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import PIL.Image
import pytest

from emu3_hf.tiny_world import (
    HELD_OUT,
    NO_JITTER,
    PALETTE,
    SPLIT_NAMES,
    ImageSpec,
    Jitter,
    VideoSpec,
    aggregate_scores,
    all_image_specs,
    all_video_specs,
    analyze_image,
    analyze_video,
    image_mask,
    iter_image_examples,
    iter_video_examples,
    make_splits,
    parse_caption,
    render_image,
    render_video,
    score_image,
    score_video,
)
from emu3_hf.tiny_world import splits as splits_module

# The spec's tables, typed from docs/TINY_WORLD.md (not imported from the code under test).
SPEC_PALETTE = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 90, 230), "yellow": (240, 210, 40),
    "purple": (150, 60, 200), "orange": (245, 130, 30), "white": (245, 245, 245), "black": (20, 20, 20),
    "gray": (128, 128, 128), "pink": (250, 120, 180),
}
SPEC_SHAPE_COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
SPEC_BACKGROUNDS = ["white", "black", "gray"]
SPEC_CENTERS = {"top left": (18, 18), "top right": (46, 18), "bottom left": (18, 46), "bottom right": (46, 46),
                "center": (32, 32)}
SPEC_SIZES = {"small": 16, "large": 28}
SPEC_HELD_OUT = {("triangle", "purple"), ("circle", "orange"), ("square", "white")}
EXTREME_JITTERS = [Jitter(dx, dy, ds) for dx, dy, ds in itertools.product((-2, 2), (-2, 2), (-2, 2))]


def painted(image: np.ndarray, color: str) -> np.ndarray:
    """Boolean (64, 64) mask of the pixels of exactly ``color``."""
    return (image == np.array(SPEC_PALETTE[color], dtype=np.uint8)).all(-1)


# ---------------------------------------------------------------- vocabulary and enumeration


def test_palette_and_tables_match_the_spec():
    assert PALETTE == SPEC_PALETTE
    assert HELD_OUT == SPEC_HELD_OUT


def test_enumeration_counts_and_validity():
    # 3 shapes x (7 colours x 3 backgrounds - white on white) x 2 sizes x 5 positions.
    images = all_image_specs()
    assert len(images) == len(set(images)) == 3 * (7 * 3 - 1) * 2 * 5
    assert all(s.color != s.background and s.color in SPEC_SHAPE_COLORS for s in images)
    assert {(s.shape, s.color) for s in images} >= SPEC_HELD_OUT  # held-out pairs are valid specs
    with_pink = all_image_specs(include_pink=True)
    assert set(with_pink) - set(images) == {s for s in with_pink if s.color == "pink"}
    assert len(with_pink) - len(images) == 3 * 3 * 2 * 5
    videos = all_video_specs()
    assert len(videos) == len(set(videos)) == 3 * (7 * 3 - 1) * 4
    assert len(all_video_specs(include_pink=True)) - len(videos) == 3 * 3 * 4


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(shape="circle", color="white", size="small", position="center", background="white"), "never"),
        (dict(shape="circle", color="red", size="small", position="center", background="red"), "'red'"),
        (dict(shape="hexagon", color="red", size="small", position="center", background="black"), "'hexagon'"),
        (dict(shape="circle", color="teal", size="small", position="center", background="black"), "'teal'"),
        (dict(shape="circle", color="red", size="medium", position="center", background="black"), "'medium'"),
        (dict(shape="circle", color="red", size="small", position="middle", background="black"), "'middle'"),
    ],
)
def test_invalid_image_spec_is_refused(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ImageSpec(**kwargs)


def test_invalid_video_spec_is_refused():
    with pytest.raises(ValueError, match="'sideways'"):
        VideoSpec("circle", "red", "sideways", "black")
    with pytest.raises(ValueError, match="never"):
        VideoSpec("square", "white", "up", "white")


# ---------------------------------------------------------------- pixels


@pytest.mark.parametrize("size, position, lo, hi", [("small", "top left", 10, 26), ("large", "center", 18, 46),
                                                     ("small", "bottom right", 38, 54)])
def test_square_covers_exactly_its_box(size, position, lo, hi):
    image = render_image(ImageSpec("square", "red", size, position, "black"))
    expected = np.empty((64, 64, 3), np.uint8)
    expected[...] = SPEC_PALETTE["black"]
    expected[lo:hi, lo:hi] = SPEC_PALETTE["red"]  # side S = hi - lo, centred on (cx, cy)
    assert hi - lo == SPEC_SIZES[size]
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("position", ["top right", "center"])
def test_circle_pixels_within_radius_of_centre(size, position):
    image = render_image(ImageSpec("circle", "blue", size, position, "white"))
    (cx, cy), radius = SPEC_CENTERS[position], SPEC_SIZES[size] / 2
    expected = np.zeros((64, 64), bool)
    for y in range(64):
        for x in range(64):
            expected[y, x] = math.hypot(x + 0.5 - cx, y + 0.5 - cy) <= radius
    np.testing.assert_array_equal(painted(image, "blue"), expected)
    assert painted(image, "white").sum() == 64 * 64 - expected.sum()  # nothing else painted
    assert abs(expected.sum() - math.pi * radius**2) / (math.pi * radius**2) < 0.05


@pytest.mark.parametrize("size", ["small", "large"])
def test_triangle_apex_base_and_rows(size):
    s = SPEC_SIZES[size]
    cx, cy = SPEC_CENTERS["bottom left"]
    mask = painted(render_image(ImageSpec("triangle", "green", size, "bottom left", "gray")), "green")
    top, bottom = cy - s // 2, cy + s // 2  # apex row y = cy - S/2, base line y = cy + S/2
    assert not mask[:top + 1].any() and not mask[bottom:].any()
    # The apex row's pixel centres lie 0.5 px below the apex (0.5 px wide): the first painted row has 2 pixels.
    assert np.flatnonzero(mask[top + 1]).tolist() == [cx - 1, cx]
    # Base row: S pixels, from cx - S/2 to cx + S/2 - 1.
    assert np.flatnonzero(mask[bottom - 1]).tolist() == list(range(cx - s // 2, cx + s // 2))
    widths = []
    for y in range(top + 1, bottom):
        cols = np.flatnonzero(mask[y])
        depth = y + 0.5 - top
        assert cols.tolist() == [x for x in range(64) if abs(x + 0.5 - cx) <= depth / 2], y
        assert cols.min() + cols.max() == 2 * cx - 1  # symmetric about the apex's column line
        widths.append(len(cols))
    assert widths == sorted(widths)
    assert abs(mask.sum() - s * s / 2) / (s * s / 2) < 0.1


def test_every_image_has_exactly_its_two_colours():
    for spec in all_image_specs(include_pink=True)[::7]:
        for jitter in (NO_JITTER, Jitter(1, -2, 2)):
            image = render_image(spec, jitter)
            colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
            assert colours == {SPEC_PALETTE[spec.color], SPEC_PALETTE[spec.background]}, spec
            # image_mask is exactly the set of pixels painted in the shape's colour.
            np.testing.assert_array_equal(image_mask(spec, jitter), painted(image, spec.color), err_msg=str(spec))


@pytest.mark.parametrize("direction, step", [("left", (-4, 0)), ("right", (4, 0)), ("up", (0, -4)), ("down", (0, 4))])
def test_video_moves_4px_per_frame_through_the_centre(direction, step):
    frames = render_video(VideoSpec("square", "yellow", direction, "black"))
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    for t, frame in enumerate(frames):
        # Starts 14 px before the frame centre (32, 32), 4 px per frame: ends 14 px past it.
        cx, cy = 32 - 14 * np.sign(step[0]) + step[0] * t, 32 - 14 * np.sign(step[1]) + step[1] * t
        expected = np.zeros((64, 64), bool)
        expected[cy - 8:cy + 8, cx - 8:cx + 8] = True
        np.testing.assert_array_equal(painted(frame, "yellow"), expected, err_msg=f"frame {t}")


def test_jittered_shapes_stay_inside_the_frame():
    for spec in [s for s in all_image_specs() if s.size == "large" and s.position != "center"]:
        for jitter in EXTREME_JITTERS:
            mask = ~painted(render_image(spec, jitter), spec.background)
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), (spec, jitter)
    for spec in all_video_specs()[:12]:
        for jitter in EXTREME_JITTERS:
            for frame in render_video(spec, jitter):
                mask = ~painted(frame, spec.background)
                assert mask.any() and not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_jitter_bounds_and_sampling():
    for bad in (dict(dx=3), dict(dy=-3), dict(ds=1), dict(ds=4), dict(dx=0.5)):
        with pytest.raises(ValueError, match="Jitter"):
            Jitter(**bad)
    rng = np.random.default_rng(0)
    draws = [Jitter.sample(rng) for _ in range(400)]
    assert {j.dx for j in draws} == {j.dy for j in draws} == {-2, -1, 0, 1, 2}
    assert {j.ds for j in draws} == {-2, 0, 2}
    with pytest.raises(TypeError, match="Generator"):
        Jitter.sample(0)
    with pytest.raises(TypeError, match="Jitter"):
        render_image(all_image_specs()[0], jitter=(1, 1, 0))
    with pytest.raises(TypeError, match="render_video"):
        render_image(all_video_specs()[0])


# ---------------------------------------------------------------- analyzer


def test_analyzer_reads_back_every_image_spec_with_and_without_jitter():
    rng = np.random.default_rng(1)
    for spec in all_image_specs(include_pink=True):
        clean = analyze_image(render_image(spec))
        assert clean.spec == spec, (spec, clean)
        cx, cy = SPEC_CENTERS[spec.position]
        if spec.shape != "triangle":  # symmetric shapes: the centroid is the centre
            assert clean.centroid == (cx, cy)
        for jitter in [*EXTREME_JITTERS, Jitter.sample(rng)]:
            result = analyze_image(render_image(spec, jitter))
            assert result.spec == spec, (spec, jitter, result)


def test_analyzer_reads_back_every_video_spec_with_and_without_jitter():
    for spec in all_video_specs(include_pink=True):
        for jitter in [NO_JITTER, Jitter(2, 2, 2), Jitter(-2, -2, -2), Jitter(2, -2, 0)]:
            result = analyze_video(render_video(spec, jitter))
            assert result.spec == spec, (spec, jitter, result.direction)
            assert all(f.size == "small" for f in result.frames)
            step = {"left": (-4, 0), "right": (4, 0), "up": (0, -4), "down": (0, 4)}[spec.direction]
            shifts = np.diff(np.array([f.centroid for f in result.frames]), axis=0)
            np.testing.assert_allclose(shifts, np.tile(step, (7, 1)), atol=1e-9)


def test_analyzer_measures_the_square_box():
    result = analyze_image(render_image(ImageSpec("square", "purple", "large", "top right", "white")))
    assert result.bbox == (32, 4, 59, 31) and result.pixels == 28 * 28 and result.fill_ratio == 1.0


def test_analyzer_without_a_shape_returns_no_spec():
    blank = np.empty((64, 64, 3), np.uint8)
    blank[...] = SPEC_PALETTE["gray"]
    result = analyze_image(blank)
    assert result.background == "gray" and result.spec is None
    assert (result.shape, result.color, result.size, result.position, result.pixels) == (None, None, None, None, 0)
    spec = ImageSpec("circle", "red", "small", "center", "gray")
    assert score_image(blank, spec) == {"shape": False, "color": False, "background": True, "size": False,
                                        "position": False, "all": False}
    still = analyze_video(np.stack([render_image(spec)] * 8))
    assert still.direction is None and still.spec is None


def test_analyzer_rejects_an_upside_down_triangle_and_other_sizes():
    spec = ImageSpec("triangle", "red", "large", "center", "black")
    flipped = render_image(spec)[::-1]
    assert analyze_image(flipped).shape is None
    with pytest.raises(ValueError, match="64x64"):
        analyze_image(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="64x64"):
        analyze_video(np.zeros((8, 32, 32, 3), np.uint8))


def test_analyzer_accepts_pil_float_and_tensor_inputs_and_mild_noise():
    torch = pytest.importorskip("torch")
    spec = ImageSpec("circle", "orange", "large", "bottom left", "gray")
    image = render_image(spec)
    assert analyze_image(PIL.Image.fromarray(image)).spec == spec
    assert analyze_image(image.astype(np.float32) / 255).spec == spec
    assert analyze_image(torch.from_numpy(image).permute(2, 0, 1).float() / 255).spec == spec
    rng = np.random.default_rng(0)
    for spec in all_image_specs(include_pink=True)[::5]:  # decoder-like noise must not change the reading
        noisy = np.clip(render_image(spec) + rng.normal(0, 6, (64, 64, 3)), 0, 255).astype(np.uint8)
        assert analyze_image(noisy).spec == spec, spec


def test_video_direction_follows_the_frames():
    spec = VideoSpec("triangle", "white", "up", "black")
    frames = render_video(spec)
    assert analyze_video(frames).direction == "up"
    assert analyze_video(frames[::-1]).direction == "down"
    assert analyze_video([PIL.Image.fromarray(f) for f in frames]).spec == spec
    assert score_video(frames[::-1], spec) == {"shape": True, "color": True, "background": True,
                                               "direction": False, "all": False}


# ---------------------------------------------------------------- scoring


def test_score_image_flags_exactly_the_wrong_attribute():
    spec = ImageSpec("square", "green", "small", "top left", "white")
    image = render_image(spec)
    assert score_image(image, spec) == dict.fromkeys(["shape", "color", "background", "size", "position", "all"],
                                                     True)
    for attribute, other in [("shape", "circle"), ("color", "blue"), ("background", "black"), ("size", "large"),
                             ("position", "center")]:
        wrong = ImageSpec(**{**spec.__dict__, attribute: other})
        scores = score_image(image, wrong)
        assert [k for k, v in scores.items() if not v] == [attribute, "all"]
    with pytest.raises(TypeError, match="ImageSpec"):
        score_image(image, spec.caption())


def test_aggregate_scores():
    rows = [{"a": True, "all": True}, {"a": True, "all": False}, {"a": False, "all": False}, {"a": True, "all": False}]
    assert aggregate_scores(rows) == {"a": 0.75, "all": 0.25, "count": 4}
    assert aggregate_scores(iter(rows[:1])) == {"a": 1.0, "all": 1.0, "count": 1}
    with pytest.raises(ValueError, match="at least one"):
        aggregate_scores([])
    with pytest.raises(ValueError, match="keys"):
        aggregate_scores([{"a": True}, {"b": True}])


# ---------------------------------------------------------------- captions


def test_captions_follow_the_grammar_and_round_trip():
    spec = ImageSpec("circle", "red", "small", "top left", "black")
    assert spec.caption() == "a small red circle in the top left corner on a black background"
    assert VideoSpec("square", "blue", "right", "gray").caption() == (
        "a small blue square moving right on a gray background"
    )
    specs = [*all_image_specs(include_pink=True), *all_video_specs(include_pink=True)]
    captions = [s.caption() for s in specs]
    assert len(set(captions)) == len(captions)
    for s, caption in zip(specs, captions):
        assert parse_caption(caption) == s
        assert caption == caption.lower() and not caption.endswith(".")
        words = caption.split()
        assert words[:4] == ["a", s.size, s.color, s.shape] and words[-4:] == ["on", "a", s.background, "background"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a big red circle in the center on a black background", "word 2 should be a size.*'big'"),
        ("a small teal circle in the center on a black background", "colour.*'teal'"),
        ("a small red hexagon in the center on a black background", "shape.*'hexagon'"),
        ("a small red circle in the middle on a black background", "position.*'in the middle'"),
        ("a small red circle in the center on a black background.", "'background.'"),
        ("A small red circle in the center on a black background", "'A'"),
        ("a small red circle in the center on a red background", "background colour.*'red'"),
        ("a small white circle in the center on a white background", "never"),
        ("a large red circle moving left on a black background", "always 'small'"),
        ("a small red circle moving sideways on a black background", "direction.*'sideways'"),
        ("a small red circle in the center on a black background please", "unexpected words.*'please'"),
        ("a small red circle  in the center on a black background", "whitespace"),
        ("a small red circle", "end of the caption"),
        ("a small red circle in the center", "word 8 should be 'on'.*end of the caption"),
    ],
)
def test_parse_caption_names_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_caption(text)


def test_parse_caption_type_error():
    with pytest.raises(TypeError, match="str"):
        parse_caption(None)


# ---------------------------------------------------------------- splits and example streams


def test_splits_partition_the_world_and_keep_held_out_and_pink_out():
    splits = make_splits(seed=0)
    for table, everything in [(splits.images, all_image_specs(include_pink=True)),
                              (splits.videos, all_video_specs(include_pink=True))]:
        assert tuple(table) == SPLIT_NAMES
        sets = {name: set(table[name]) for name in SPLIT_NAMES}
        assert sum(len(s) for s in sets.values()) == len(everything)
        assert set().union(*sets.values()) == set(everything)  # with the count above: disjoint and complete
        rank = {spec: i for i, spec in enumerate(everything)}
        assert sets["heldout"] == {s for s in everything if (s.shape, s.color) in SPEC_HELD_OUT}
        assert sets["lora"] == {s for s in everything if s.color == "pink"}
        for name in ("train", "validation", "test"):
            assert all((s.shape, s.color) not in SPEC_HELD_OUT and s.color != "pink" for s in sets[name]), name
            assert list(table[name]) == sorted(table[name], key=rank.__getitem__)  # enumeration order
            assert splits.split_of(table[name][0]) == name
    sizes = splits.sizes()
    assert sizes["images"] == {name: len(splits.images[name]) for name in SPLIT_NAMES}
    assert sizes["videos"] == {name: len(splits.videos[name]) for name in SPLIT_NAMES}
    assert sizes["images"]["heldout"] == 3 * 10 + 3 * 10 + 2 * 10 and sizes["videos"]["heldout"] == 12 + 12 + 8


def test_splits_are_stratified_so_train_sees_every_word():
    splits = make_splits(seed=0)
    base = [s for s in all_image_specs() if (s.shape, s.color) not in SPEC_HELD_OUT]
    strata = {(s.shape, s.color, s.background) for s in base}
    for name, share in [("train", 8), ("validation", 1), ("test", 1)]:  # 10 specs per stratum, 0.8/0.1/0.1
        counts = {k: 0 for k in strata}
        for s in splits.images[name]:
            counts[(s.shape, s.color, s.background)] += 1
        assert set(counts.values()) == {share}, name
    train_words = {w for s in splits.images["train"] for w in s.caption().split()}
    train_words |= {w for s in splits.videos["train"] for w in s.caption().split()}
    for word in [*SPEC_SHAPE_COLORS, "circle", "square", "triangle", "small", "large", "top", "bottom", "left",
                 "right", "center", "corner", "up", "down", "moving", *SPEC_BACKGROUNDS]:
        assert word in train_words, word
    assert "pink" not in train_words


def test_splits_are_deterministic_per_seed():
    first = {name: make_splits(seed=0).images[name] for name in SPLIT_NAMES}
    make_splits(seed=1)
    splits_module._make_splits.cache_clear()  # recompute from scratch, not from the cache
    again = make_splits(seed=0)
    assert {name: again.images[name] for name in SPLIT_NAMES} == first
    assert make_splits(seed=1).images["train"] != first["train"]
    assert make_splits(seed=1).images["heldout"] == first["heldout"]
    for bad in [dict(seed=-1), dict(fractions=(0.5, 0.5)), dict(fractions=(0.0, 0.5, 0.5)),
                dict(fractions=(0.1, 0.45, 0.45)), dict(fractions="abc")]:
        with pytest.raises(ValueError, match="seed|fractions"):
            make_splits(**bad)


def test_image_examples_are_deterministic_and_read_back():
    def stream(seed):
        return [(np.asarray(image), caption) for image, caption in iter_image_examples("validation", seed=seed)]

    first, again, other = stream(5), stream(5), stream(6)
    assert len(first) == len(make_splits().images["validation"])
    assert all(a[1] == b[1] and np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    assert [c for _, c in first] != [c for _, c in other]
    assert {c for _, c in first} == {s.caption() for s in make_splits().images["validation"]}
    for image, caption in first:
        assert image.shape == (64, 64, 3) and analyze_image(image).spec == parse_caption(caption)
    # Jitter shows: some image differs from its clean rendering.
    assert any(not np.array_equal(image, render_image(parse_caption(caption))) for image, caption in first)

    clean = list(iter_image_examples("heldout", jitter=False, shuffle=False, epochs=2))
    specs = make_splits().images["heldout"]
    assert [c for _, c in clean] == [s.caption() for s in specs] * 2
    assert all(np.array_equal(np.asarray(img), render_image(s)) for (img, _), s in zip(clean, specs))
    assert all(isinstance(img, PIL.Image.Image) and img.mode == "RGB" for img, _ in clean[:3])
    forever = iter_image_examples(specs[:2], seed=0, epochs=None)
    assert len(list(itertools.islice(forever, 7))) == 7


def test_video_examples_are_deterministic_and_read_back():
    pairs = list(iter_video_examples("test", seed=2))
    again = list(iter_video_examples("test", seed=2))
    assert len(pairs) == len(make_splits().videos["test"])
    for (frames, caption), (frames2, caption2) in zip(pairs, again):
        assert caption == caption2 and len(frames) == 8
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, frames2))
        assert analyze_video(frames).spec == parse_caption(caption)


def test_example_streams_refuse_bad_arguments():
    with pytest.raises(ValueError, match="'training'"):
        iter_image_examples("training")
    with pytest.raises(ValueError, match="VideoSpec"):
        iter_video_examples(all_image_specs()[:2])
    with pytest.raises(ValueError, match="epochs"):
        iter_image_examples("train", epochs=0)
    with pytest.raises(ValueError, match="seed"):
        iter_video_examples("train", seed=None)
    with pytest.raises(TypeError, match="split"):
        iter_image_examples(3)
    with pytest.raises(TypeError, match="ImageSpec or a VideoSpec"):
        make_splits().split_of("a small red circle in the center on a black background")
