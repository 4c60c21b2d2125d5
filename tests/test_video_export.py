"""GIF / MP4 export: frames read back from the files equal (GIF) or approximate (MP4) what was written."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from emu3_hf.utils.video_export import export_to_gif, export_to_mp4, frames_to_uint8


def _moving_square(t: int = 6, size: int = 32) -> np.ndarray:
    frames = np.zeros((t, size, size, 3), dtype=np.uint8)
    frames[..., 2] = 120
    for i in range(t):
        frames[i, 8:16, 2 + 4 * i : 10 + 4 * i] = (230, 40, 40)
    return frames


def test_frames_are_normalised_from_every_input_form():
    arr = _moving_square()
    as_float = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W) in [0, 1]
    assert np.array_equal(frames_to_uint8(as_float), arr)
    assert np.array_equal(frames_to_uint8([PIL.Image.fromarray(f) for f in arr]), arr)


def test_gif_round_trip(tmp_path):
    arr = _moving_square()
    path = export_to_gif(list(arr), tmp_path / "clip.gif", fps=10)
    with PIL.Image.open(path) as gif:
        assert gif.n_frames == len(arr)
        assert gif.info["duration"] == 100
        read = []
        for i in range(gif.n_frames):
            gif.seek(i)
            read.append(np.asarray(gif.convert("RGB")))
    # Two colours per frame survive GIF's palette exactly.
    assert np.array_equal(np.stack(read), arr)


def test_mp4_round_trip(tmp_path):
    av = pytest.importorskip("av")
    arr = _moving_square(t=8, size=33)  # odd size: padded to even for yuv420p
    path = export_to_mp4(arr, tmp_path / "clip.mp4", fps=8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 8
        read = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    assert read.shape == (8, 34, 34, 3)
    assert np.abs(read[:, :33, :33].astype(int) - arr.astype(int)).mean() < 6  # lossy, but close


@pytest.mark.parametrize(
    "frames, message",
    [([], "empty"), (np.zeros((2, 8, 8, 4), np.uint8), "3 colour channels"), (np.zeros((8, 8, 3)), "stack")],
)
def test_bad_frames_raise_and_write_nothing(tmp_path, frames, message):
    target = tmp_path / "out.gif"
    with pytest.raises(ValueError, match=message):
        export_to_gif(frames, target)
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_no_partial_file(tmp_path):
    with pytest.raises(ValueError, match="fps"):
        export_to_mp4(_moving_square(), tmp_path / "x.mp4", fps=0)
    assert list(tmp_path.iterdir()) == []
