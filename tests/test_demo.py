"""`emu3 demo`: the Space export, argument checks, and the Gradio app driven for real (gradio_client and a headless
chromium). The app's answers are compared with the pipelines called directly, and its caption with the tiny world's
own caption of the picture. Needs `pip install -e '.[demo]' selenium` and Debian's `chromium chromium-driver` for
the browser test; each part skips cleanly without them.
"""

from __future__ import annotations

import ast
import os
import shutil
import socket

import numpy as np
import pytest
import torch
from huggingface_hub import metadata_load
from huggingface_hub.errors import HFValidationError
from PIL import Image

from emu3_cli import main as emu3_main
from emu3_hf.demo import check_model, example_pictures, example_prompts, export_space
from emu3_hf.tiny_world import EMU3_TINY, parse_caption


def test_export_space_writes_a_space_folder(tmp_path):
    folder = export_space(tmp_path / "space", "me/emu3-cats")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    calls = [n for n in ast.walk(ast.parse((folder / "app.py").read_text())) if isinstance(n, ast.Call)]
    built = [c for c in calls if getattr(c.func, "id", None) == "build_demo"]
    assert [ast.literal_eval(c.args[0]) for c in built] == ["me/emu3-cats"]
    assert (folder / "requirements.txt").read_text().startswith("emu3-hf[demo]>=")
    metadata = metadata_load(folder / "README.md")
    assert (metadata["sdk"], metadata["app_file"]) == ("gradio", "app.py")


def test_export_space_of_the_embedded_model_loads_it_by_default(tmp_path):
    app = (export_space(tmp_path / "space") / "app.py").read_text()
    assert "build_demo(None)" in app  # the model inside the installed package, no download
    compile(app, "app.py", "exec")


@pytest.mark.parametrize("model, error, match", [
    ("LOCAL", ValueError, "a Space cannot read it"),
    ("not a repo id", HFValidationError, "Repo id must"),
])  # fmt: skip
def test_export_space_refuses_what_a_space_cannot_load(tmp_path, model, error, match):
    model = str(tmp_path) if model == "LOCAL" else model
    with pytest.raises(error, match=match):
        export_space(tmp_path / "space", model)
    assert not (tmp_path / "space").exists()


def test_check_model_names_the_bad_folder(tmp_path):
    assert check_model(None) == str(EMU3_TINY)
    with pytest.raises(ValueError, match="no model_index.json"):
        check_model(tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["demo", "--port", "0"], "--port must be between 1 and 65535, got 0"),
    (["demo", "--model", "NOFOLDER"], "no model_index.json"),
])  # fmt: skip
def test_cli_refuses_bad_arguments_before_loading(tmp_path, capsys, argv, message):
    argv = [str(tmp_path) if a == "NOFOLDER" else a for a in argv]
    assert emu3_main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_exports_a_space(tmp_path, capsys):
    assert emu3_main(["demo", "--export-space", str(tmp_path / "space"), "--model", "me/emu3-cats"]) == 0
    assert "build_demo('me/emu3-cats')" in (tmp_path / "space" / "app.py").read_text()
    assert "push the folder as a Gradio Space" in capsys.readouterr().out


def test_examples_follow_the_tiny_world_grammar(tmp_path):
    images, videos = example_prompts()
    assert len(images) == len(set(images)) == 4 and len(videos) == len(set(videos)) == 4
    assert all(parse_caption(c).caption() == c for c in images + videos)
    assert len(example_pictures(tmp_path)) == 4


# ---- the app, served on localhost --------------------------------------------------------------------------------
PROMPT = "a small red circle in the top left corner on a black background"
VIDEO_PROMPT = "a small blue square moving right on a gray background"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served():
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
    from emu3_hf.demo import build_demo

    demo = build_demo(device="cpu")
    demo.queue()
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def direct():
    from emu3_hf.pipelines import Emu3Pipeline, Emu3VideoPipeline

    pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
    pipe.set_progress_bar_config(disable=True)
    video = Emu3VideoPipeline(**pipe.components)
    video.set_progress_bar_config(disable=True)
    return pipe, video


def _gif_frames(path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        frames = []
        for i in range(gif.n_frames):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def test_gradio_client_gets_what_the_pipelines_give(served, direct, tmp_path):
    from gradio_client import Client, handle_file

    from emu3_hf.utils.video_export import export_to_gif

    client = Client(served, verbose=False)
    assert {"/generate", "/caption", "/video"} <= set(client.view_api(return_format="dict")["named_endpoints"])
    pipe, video = direct
    served_image = np.asarray(Image.open(client.predict(PROMPT, 3, api_name="/generate")).convert("RGB"))
    expected = np.asarray(pipe(PROMPT, generator=torch.Generator().manual_seed(3)).images[0])
    assert np.array_equal(served_image, expected)

    picture = example_pictures(tmp_path, count=1)[0]
    answer = client.predict(handle_file(str(picture)), "Describe the image.", api_name="/caption")
    from emu3_hf.tiny_world import all_image_specs

    first = next(s for s in all_image_specs() if not s.held_out)  # what example_pictures rendered first
    assert answer == first.caption()

    served_clip = _gif_frames(client.predict(VIDEO_PROMPT, 1, api_name="/video"))
    frames = video(VIDEO_PROMPT, generator=torch.Generator().manual_seed(1)).frames[0]
    export_to_gif(frames, tmp_path / "direct.gif", fps=8)
    expected_clip = _gif_frames(tmp_path / "direct.gif")
    assert len(served_clip) == len(expected_clip) == 8
    assert all(np.array_equal(a, b) for a, b in zip(served_clip, expected_clip))


def test_bad_prompt_is_an_error_message_not_a_crash(served):
    from gradio_client import Client

    with pytest.raises(Exception, match="prompt"):
        Client(served, verbose=False).predict("", 0, api_name="/generate")


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("no chromium/chromedriver (Debian: apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def test_a_browser_types_clicks_and_sees_the_image_and_a_caption(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        wait = WebDriverWait(browser, 120)
        browser.get(served)
        box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "#t2i-prompt textarea")))
        box.clear()
        box.send_keys(PROMPT)
        browser.find_element(By.CSS_SELECTOR, "#t2i-run").click()
        image = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#t2i-image img")))
        assert image.get_attribute("src")
        assert image.get_attribute("naturalWidth") == "64"  # the embedded model draws 64x64 pictures
        if os.environ.get("EMU3_DEMO_SCREENSHOT"):  # how docs/demo.png is made
            browser.save_screenshot(os.environ["EMU3_DEMO_SCREENSHOT"])

        next(b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Caption").click()
        picture = example_pictures(tmp_path, count=1)[0]
        upload = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#cap-image input[type=file]")))
        upload.send_keys(str(picture))
        wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#cap-image img")))
        browser.find_element(By.CSS_SELECTOR, "#cap-run").click()
        answer = browser.find_element(By.CSS_SELECTOR, "#cap-answer textarea")
        wait.until(lambda _: answer.get_attribute("value"))
        assert parse_caption(answer.get_attribute("value"))  # a caption of the grammar, shown on the page
    finally:
        browser.quit()
