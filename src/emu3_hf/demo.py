"""A browser demo of an Emu3 pipeline (Gradio): text-to-image, captioning and video tabs, and a Space export.

``emu3 demo`` runs :func:`build_demo` on the embedded model (or ``--model FOLDER_OR_REPO``) and serves it on
localhost; ``emu3 demo --export-space DIR`` writes :func:`export_space`'s ``app.py`` + ``requirements.txt`` +
``README.md``, a folder ready to push as a Hugging Face Space. Gradio is an optional dependency:
``pip install 'emu3-hf[demo]'``.

Every tab is also an API endpoint (``/generate``, ``/caption``, ``/video``), so ``gradio_client`` scripts work:

Example:
    ```python
    >>> from emu3_hf.demo import build_demo
    >>> demo = build_demo()  # the embedded model
    >>> demo.launch()        # http://127.0.0.1:7860
    >>> from gradio_client import Client
    >>> Client("http://127.0.0.1:7860/").predict("a small red circle in the center on a black background", 0,
    ...                                          api_name="/generate")  # the path of the generated PNG
    ```
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
import torch
from huggingface_hub.utils import validate_repo_id

from .tiny_world import EMU3_TINY, all_image_specs, all_video_specs, render_image
from .utils.atomic import staged_folder

DEFAULT_QUESTION = "Describe the image."
EXAMPLE_COUNT = 4


def check_model(model: str | os.PathLike | None) -> str:
    """The folder or repo id to load (``None``: the embedded model); refuses, before loading anything, a path that
    is not a pipeline folder and a string that is neither a path nor a valid repo id."""
    if model is None:
        return str(EMU3_TINY)
    path = Path(model)
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(
                f"model={str(model)!r} is not a pipeline folder (no model_index.json): pass a folder written by "
                "Emu3Pipeline.save_pretrained, a Hub repo id, or nothing for the embedded model."
            )
        return str(path)
    validate_repo_id(str(model))  # HFValidationError (a ValueError) names the bad id
    return str(model)


def example_prompts(count: int = EXAMPLE_COUNT) -> tuple[list[str], list[str]]:
    """Image and video captions of the tiny world's grammar (TINY_WORLD.md), spread over its specs, none held out."""
    images = [s.caption() for s in all_image_specs() if not s.held_out]
    videos = [s.caption() for s in all_video_specs() if not s.held_out]
    return images[:: max(1, len(images) // count)][:count], videos[:: max(1, len(videos) // count)][:count]


def example_pictures(folder: Path, count: int = EXAMPLE_COUNT) -> list[Path]:
    """PNG renders of tiny-world captions (the caption tab's examples), written into ``folder``."""
    from PIL import Image

    specs = [s for s in all_image_specs() if not s.held_out]
    paths = []
    for i, spec in enumerate(specs[:: max(1, len(specs) // count)][:count]):
        paths.append(folder / f"example-{i}.png")
        Image.fromarray(render_image(spec)).save(paths[-1])
    return paths


def _row_progress(progress, what: str):
    """A step-end callback reporting each finished row of codes to Gradio's progress bar."""

    def callback(pipe, row: int, step: int, callback_kwargs: dict) -> dict:
        progress((row + 1, pipe.num_timesteps), desc=f"{what}: row {row + 1} of {pipe.num_timesteps}")
        return {}

    return callback


def build_demo(model: str | os.PathLike | None = None, device: str | None = None):
    """The Gradio app (a ``gradio.Blocks``) on ``model``: a pipeline folder, a Hub repo id, or ``None`` for the
    embedded model. Loads the pipeline once; the three tabs share its components.

    Raises:
        ImportError: gradio is not installed (``pip install 'emu3-hf[demo]'``).
        ValueError: ``model`` is neither a pipeline folder nor a repo id.
    """
    source = check_model(model)
    try:
        import gradio as gr
    except ImportError as err:
        raise ImportError("The demo needs gradio: pip install 'emu3-hf[demo]'.") from err
    from .pipelines import Emu3ChatPipeline, Emu3Pipeline, Emu3VideoPipeline
    from .utils.video_export import export_to_gif

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    image_pipe = Emu3Pipeline.from_pretrained(source).to(device)
    video_pipe = Emu3VideoPipeline(**image_pipe.components)
    chat_pipe = Emu3ChatPipeline(**image_pipe.components)
    for pipe in (image_pipe, video_pipe, chat_pipe):
        pipe.set_progress_bar_config(disable=True)
    outputs = Path(tempfile.mkdtemp(prefix="emu3-demo-"))
    image_examples, video_examples = example_prompts()
    embedded = source == str(EMU3_TINY)

    def generate(prompt: str, seed: float, progress=gr.Progress()):
        try:
            return image_pipe(prompt, generator=torch.Generator().manual_seed(int(seed)),
                              callback_on_step_end=_row_progress(progress, "drawing")).images[0]  # fmt: skip
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err)) from err

    def caption(image, question: str, progress=gr.Progress()):
        if image is None:
            raise gr.Error("Upload an image to caption.")
        progress(0.0, desc="reading the image")
        try:
            return chat_pipe(question or DEFAULT_QUESTION, images=image, max_new_tokens=64).text[0]
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err)) from err

    def video(prompt: str, seed: float, progress=gr.Progress()):
        try:
            frames = video_pipe(prompt, generator=torch.Generator().manual_seed(int(seed)),
                                callback_on_step_end=_row_progress(progress, "filming")).frames[0]  # fmt: skip
        except (ValueError, TypeError) as err:
            raise gr.Error(str(err)) from err
        path = Path(tempfile.mkstemp(suffix=".gif", dir=outputs)[1])
        export_to_gif(frames, path, fps=8)
        return str(path)

    title = "Emu3 (embedded tiny-world model)" if embedded else f"Emu3: {source}"
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nNext-token prediction draws, captions and films. Powered by emu3-hf.")
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(label="Prompt", value=image_examples[0] if embedded else "", elem_id="t2i-prompt")
            seed = gr.Number(label="Seed", value=0, precision=0)
            button = gr.Button("Generate", variant="primary", elem_id="t2i-run")
            picture = gr.Image(label="Image", type="pil", format="png", height=320, elem_id="t2i-image")
            button.click(generate, [prompt, seed], picture, api_name="generate")
            if embedded:
                gr.Examples([[p] for p in image_examples], [prompt], api_visibility="private")
        with gr.Tab("Caption"):
            upload = gr.Image(label="Image", type="pil", elem_id="cap-image")
            question = gr.Textbox(label="Question", value=DEFAULT_QUESTION)
            ask = gr.Button("Caption", variant="primary", elem_id="cap-run")
            answer = gr.Textbox(label="Answer", elem_id="cap-answer")
            ask.click(caption, [upload, question], answer, api_name="caption")
            if embedded:
                gr.Examples([[str(p)] for p in example_pictures(outputs)], [upload], api_visibility="private")
        with gr.Tab("Video"):
            clip_prompt = gr.Textbox(label="Prompt", value=video_examples[0] if embedded else "", elem_id="vid-prompt")
            clip_seed = gr.Number(label="Seed", value=0, precision=0)
            film = gr.Button("Generate video", variant="primary", elem_id="vid-run")
            clip = gr.Image(label="Video (GIF)", type="filepath", height=320, elem_id="vid-clip")
            film.click(video, [clip_prompt, clip_seed], clip, api_name="video")
            if embedded:
                gr.Examples([[p] for p in video_examples], [clip_prompt], api_visibility="private")
    return demo


_APP = '''"""An Emu3 demo Space, written by `emu3 demo --export-space` (emu3-hf {version})."""

from emu3_hf.demo import build_demo

demo = build_demo({model})

if __name__ == "__main__":
    demo.launch()
'''

_SPACE_README = """---
title: {title_yaml}
sdk: gradio
app_file: app.py
{sdk_version}tags:
  - emu3
  - emu3-hf
---

# {title}

Text-to-image, captioning and video with Emu3 through [emu3-hf](https://github.com/), on {what}.
"""


def export_space(folder: str | os.PathLike, model: str | None = None) -> Path:
    """Write a Space-ready folder: ``app.py`` (the demo on ``model``), ``requirements.txt`` and a ``README.md``
    with the Space metadata (``sdk: gradio``). Written through a temporary folder next to ``folder``.

    Args:
        folder: where to write (replaced as a whole if it exists).
        model: a Hub repo id the Space loads, or ``None`` for the model shipped inside emu3-hf. A local folder is
            refused: a Space cannot read this machine's disk (push it first with ``push_pipeline_to_hub``).

    Example:
        ```python
        >>> export_space("my-space", "me/emu3-cats")
        PosixPath('my-space')
        ```
    """
    if model is not None:
        if not isinstance(model, str) or Path(model).exists():
            raise ValueError(
                f"model={model!r} is a local path; a Space cannot read it. Push the folder to the Hub "
                "(emu3_hf.hub.push_pipeline_to_hub) and pass its repo id, or pass nothing for the embedded model."
            )
        validate_repo_id(model)
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        sdk_version = f"sdk_version: {version('gradio')}\n"
    except PackageNotFoundError:
        sdk_version = ""
    title = "Emu3 demo" if model is None else f"Emu3 demo: {model}"
    what = "the tiny-world model embedded in emu3-hf" if model is None else f"[{model}](https://huggingface.co/{model})"
    with staged_folder(folder) as staging:
        (staging / "app.py").write_text(_APP.format(version=__version__, model=repr(model)), encoding="utf-8")
        (staging / "requirements.txt").write_text(f"emu3-hf[demo]>={__version__}\n", encoding="utf-8")
        (staging / "README.md").write_text(
            _SPACE_README.format(title=title, title_yaml=json.dumps(title), sdk_version=sdk_version, what=what), encoding="utf-8"
        )
    return Path(folder)


__all__ = ["DEFAULT_QUESTION", "build_demo", "check_model", "example_pictures", "example_prompts", "export_space"]
