"""transformers' own task pipeline, ``pipeline("image-text-to-text", ...)``, answers a question about an image.

transformers' image-text-to-text machinery needs an ``AutoModelForImageTextToText`` class that takes pixels and an
``AutoProcessor`` on the same folder; Emu3's emu3-hf layout keeps the VQ outside the LM (the LM reads VQ codes), so
the folder transformers' task pipeline reads is the lossless native conversion (``emu3 convert --to native``:
transformers' own ``Emu3ForConditionalGeneration``). Reference: the tiny world's caption of the picture, and our
``Emu3ChatPipeline`` on the same picture and the same prompt ids.
"""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image
from transformers import AutoProcessor, pipeline

from emu3_hf.conversion import convert_checkpoint
from emu3_hf.pipelines import Emu3ChatPipeline
from emu3_hf.processing.processing_emu3 import DEFAULT_CHAT_TEMPLATE
from emu3_hf.tiny_world import EMU3_TINY, parse_caption, render_image

CAPTION = "a small red circle in the top left corner on a black background"
QUESTION = "Describe the image."


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    # The shipped VQ reserves its canonical-field rows (``reserved_codes``), which the native layout cannot hold, so
    # the conversion refuses it. No picture encodes to those rows (test_embedded_model checks it), so a copy without
    # the reservation encodes pictures to the same codes; the chat pipeline below runs on the shipped folder itself.
    root = tmp_path_factory.mktemp("native")
    source = shutil.copytree(EMU3_TINY, root / "emu3-tiny")
    config_path = source / "vq_model" / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("reserved_codes")
    config_path.write_text(json.dumps(config))
    convert_checkpoint(source, root / "emu3-tiny-hf", "native")
    return root / "emu3-tiny-hf"


def test_image_text_to_text_pipeline_captions_like_our_chat_pipeline(native):
    picture = Image.fromarray(render_image(parse_caption(CAPTION)))
    task = pipeline("image-text-to-text", model=str(native))
    assert type(task.model).__name__ == "Emu3ForConditionalGeneration"
    prompt = DEFAULT_CHAT_TEMPLATE.format(image_prompt=task.processor.image_token, text_prompt=QUESTION)
    answer = task(images=picture, text=prompt, max_new_tokens=40, generate_kwargs={"do_sample": False})
    generated = answer[0]["generated_text"][len(prompt):]

    chat = Emu3ChatPipeline.from_pretrained(EMU3_TINY)
    chat.set_progress_bar_config(disable=True)
    assert generated == chat(QUESTION, images=picture, max_new_tokens=40).text[0] == CAPTION

    # the same prompt ids around the image block (the native model swaps its placeholders for VQ codes itself)
    ours = chat.make_processor()(text=QUESTION, image=picture, mode="U").input_ids[0].tolist()
    theirs = task.processor(text=[prompt], images=[picture], return_tensors="pt").input_ids[0].tolist()
    boi, eoi = chat.tokenizer.convert_tokens_to_ids(["<|image start|>", "<|image end|>"])
    assert ours[: ours.index(boi)] == theirs[: theirs.index(boi)]
    assert ours[ours.index(eoi):] == theirs[theirs.index(eoi):]
    assert len(ours) == len(theirs)


def test_auto_processor_loads_every_processing_folder(native):
    """The processing folders emu3-hf writes: a pipeline's tokenizer and image processor, and the native folder."""
    assert type(AutoProcessor.from_pretrained(EMU3_TINY, subfolder="tokenizer")).__name__ == "Emu3Tokenizer"
    image_processor = AutoProcessor.from_pretrained(EMU3_TINY, subfolder="image_processor")
    assert type(image_processor).__name__ == "Emu3VisionVQImageProcessor"
    assert type(AutoProcessor.from_pretrained(native)).__name__ == "Emu3Processor"  # transformers' native class
