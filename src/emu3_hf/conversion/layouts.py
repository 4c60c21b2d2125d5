"""The three folder layouts an Emu3 checkpoint comes in, read into one in-memory form and written back out.

- ``"baai"``: BAAI's Hub layout, an LM folder (``config.json`` with ``model_type: "Emu3"``, weights, tokenizer files
  ``emu3.tiktoken`` + ``emu3_vision_tokens.txt`` and/or ``tokenizer.json``) and a VQ folder (``"Emu3VisionVQ"`` +
  ``preprocessor_config.json``). Given as :class:`BaaiFolders`, or as one folder holding ``lm/`` and ``vq/``
  (what :func:`save_checkpoint` writes: the LM folder gets the tokenizer files, as on the Hub).
- ``"pipeline"``: an emu3-hf pipeline folder (``model_index.json`` + ``model/``, ``vq_model/``, ``tokenizer/``,
  ``image_processor/``), as ``Emu3Pipeline.save_pretrained`` writes it and ``Emu3Pipeline.from_pretrained`` loads it.
- ``"native"``: transformers' own port (``-hf`` repos): ``Emu3ForConditionalGeneration`` with ``vocabulary_map`` in
  its config, and ``Emu3Processor`` files (tokenizer + ``Emu3ImageProcessor``) when a tokenizer is known.

Example:
    ```python
    >>> from emu3_hf.conversion import BaaiFolders, detect_layout, load_checkpoint, save_checkpoint
    >>> ckpt = load_checkpoint(BaaiFolders("Emu3-Gen", "Emu3-VisionTokenizer"))
    >>> save_checkpoint(ckpt, "emu3-gen-pipeline", "pipeline")   # writes into a new, empty folder
    >>> detect_layout("emu3-gen-pipeline")
    'pipeline'
    ```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..modeling import Emu3LMForCausalLM, Emu3VisionVQModel
from ..processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor
from ..processing.layout import SpecialIds
from ..processing.processing_emu3 import special_ids_from_tokenizer
from ..processing.tokenization_emu3 import BAAI_VOCAB_FILE, Emu3Tokenizer
from .native import convert_baai_to_native, convert_native_to_baai

LAYOUTS = ("baai", "pipeline", "native")
PIPELINE_CLASSES = ("Emu3Pipeline", "Emu3VideoPipeline", "Emu3ChatPipeline")
# Pipeline components and the class each must name in model_index.json.
_PIPELINE_COMPONENTS = {
    "model": "Emu3LMForCausalLM",
    "vq_model": "Emu3VisionVQModel",
    "tokenizer": "Emu3Tokenizer",
    "image_processor": "Emu3VisionVQImageProcessor",
}
# BAAI's remote-code entry points (its config.json files name them; the code files are not needed with emu3_hf).
_BAAI_LM_AUTO_MAP = {
    "AutoConfig": "configuration_emu3.Emu3Config",
    "AutoModelForCausalLM": "modeling_emu3.Emu3ForCausalLM",
}
_BAAI_VQ_AUTO_MAP = {
    "AutoConfig": "configuration_emu3visionvq.Emu3VisionVQConfig",
    "AutoModel": "modeling_emu3visionvq.Emu3VisionVQModel",
}
# Image-processor fields shared by ours and transformers' Emu3ImageProcessor (same names, same meaning).
_IMAGE_PROCESSOR_FIELDS = (
    "do_resize", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
    "do_convert_rgb", "min_pixels", "max_pixels", "spatial_factor",
)  # fmt: skip
# Named tokens of a native tokenizer (transformers' Emu3Processor reads these attributes) -> ours.
_NATIVE_NAMED_TOKENS = {"boi_token": "boi_token", "eoi_token": "eoi_token", "image_wrapper_token": "img_token",
                        "eof_token": "eof_token"}  # fmt: skip


@dataclass(frozen=True)
class BaaiFolders:
    """BAAI's separate folders: the LM (``BAAI/Emu3-Gen``), the VQ (``BAAI/Emu3-VisionTokenizer``), and a tokenizer
    folder when the LM folder has no tokenizer files.

    Example:
        >>> BaaiFolders("Emu3-Gen", "Emu3-VisionTokenizer")
    """

    lm: str | os.PathLike
    vq: str | os.PathLike
    tokenizer: str | os.PathLike | None = None


@dataclass
class Emu3Checkpoint:
    """An Emu3 checkpoint in memory, whatever layout it came from: our LM and VQ (BAAI's parameter layout), the
    tokenizer and image processor when the source had them, and the pipeline class a pipeline folder named."""

    lm: Emu3LMForCausalLM
    vq: Emu3VisionVQModel
    tokenizer: Emu3Tokenizer | None = None
    image_processor: Emu3VisionVQImageProcessor | None = None
    pipeline_class: str = "Emu3Pipeline"


def model_type_of(folder: Path) -> str | None:
    """``model_type`` in ``folder/config.json``, or None when there is no config.json."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{config} is not a JSON object ({err}); the folder is not a readable checkpoint.") from err


def _split_baai_folders(folder: Path) -> BaaiFolders | None:
    if model_type_of(folder / "lm") == "Emu3" and model_type_of(folder / "vq") == "Emu3VisionVQ":
        return BaaiFolders(folder / "lm", folder / "vq")
    return None


def detect_layout(source: str | os.PathLike | BaaiFolders) -> str:
    """Which layout ``source`` is in: ``"baai"``, ``"pipeline"`` or ``"native"``; raises when none or several fit.

    Example:
        >>> detect_layout("tests/fixtures/baai-tiny/hf-native")
        'native'
    """
    if isinstance(source, BaaiFolders):
        return "baai"
    folder = Path(source)
    if not folder.is_dir():
        raise ValueError(f"source {str(folder)!r} is not a folder. Pass a checkpoint folder (or --lm/--vq for BAAI's).")
    model_type = model_type_of(folder)
    found = [name for name, hit in (
        ("pipeline", (folder / "model_index.json").is_file()),
        ("native", model_type == "emu3"),
        ("baai", _split_baai_folders(folder) is not None),
    ) if hit]  # fmt: skip
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(f"{folder} looks like several layouts at once ({', '.join(found)}); pass the layout.")
    if model_type in ("Emu3", "Emu3VisionVQ"):
        part = "LM" if model_type == "Emu3" else "VQ"
        raise ValueError(
            f"{folder} is a BAAI {part} folder alone; a conversion needs both: pass --lm LM_DIR --vq VQ_DIR "
            "(BaaiFolders(lm, vq) in Python), or one folder holding lm/ and vq/."
        )
    raise ValueError(
        f"Cannot tell the layout of {folder} (model_type {model_type!r}). Expected a pipeline folder "
        "(model_index.json), a transformers-native folder (config.json with model_type 'emu3'), or BAAI's folders "
        "(--lm/--vq, or lm/ + vq/ subfolders with model_type 'Emu3' / 'Emu3VisionVQ')."
    )


def _check_tokenizer(tokenizer: Emu3Tokenizer, lm: Emu3LMForCausalLM, where: Path) -> Emu3Tokenizer:
    found, expected = special_ids_from_tokenizer(tokenizer), SpecialIds.from_config(lm.config)
    if found != expected:
        raise ValueError(
            f"The tokenizer in {where} does not belong to this model: its layout ids {found} differ from the LM "
            f"config's {expected}. Pass the tokenizer saved with this model."
        )
    return tokenizer


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / BAAI_VOCAB_FILE).is_file()


def _load_models(lm_source, vq_source, dtype: torch.dtype | None, **kwargs: Any):
    load = dict(kwargs, dtype=dtype if dtype is not None else "auto")
    return (
        Emu3LMForCausalLM.from_pretrained(lm_source, **load).eval(),
        Emu3VisionVQModel.from_pretrained(vq_source, **load).eval(),
    )


def check_baai_folders(folders: BaaiFolders) -> None:
    """Raise unless ``folders.lm`` holds a BAAI LM config and ``folders.vq`` a BAAI VQ config (swapped folders too)."""
    for role, folder, model_type in (("lm", Path(folders.lm), "Emu3"), ("vq", Path(folders.vq), "Emu3VisionVQ")):
        if model_type_of(folder) != model_type:
            raise ValueError(
                f"--{role} {str(folder)!r} is not a BAAI {role.upper()} folder (its config.json must say model_type "
                f"{model_type!r}, found {model_type_of(folder)!r})."
            )


def _read_baai(folders: BaaiFolders, dtype: torch.dtype | None) -> Emu3Checkpoint:
    lm_dir, vq_dir = Path(folders.lm), Path(folders.vq)
    check_baai_folders(folders)
    tokenizer_dir = Path(folders.tokenizer) if folders.tokenizer is not None else lm_dir
    if folders.tokenizer is not None and not _has_tokenizer_files(tokenizer_dir):
        raise ValueError(f"--tokenizer {str(tokenizer_dir)!r} holds neither tokenizer.json nor {BAAI_VOCAB_FILE}.")
    tokenizer = Emu3Tokenizer.from_pretrained(tokenizer_dir) if _has_tokenizer_files(tokenizer_dir) else None
    image_processor = None
    if (vq_dir / "preprocessor_config.json").is_file():
        image_processor = Emu3VisionVQImageProcessor.from_pretrained(vq_dir)
    lm, vq = _load_models(lm_dir, vq_dir, dtype)
    if tokenizer is not None:
        _check_tokenizer(tokenizer, lm, tokenizer_dir)
    return Emu3Checkpoint(lm, vq, tokenizer, image_processor)


def _read_pipeline(folder: Path, dtype: torch.dtype | None) -> Emu3Checkpoint:
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    for name, class_name in _PIPELINE_COMPONENTS.items():
        entry = index.get(name)
        if not isinstance(entry, list) or len(entry) != 2 or entry[1] != class_name:
            raise ValueError(
                f"{folder}/model_index.json: component {name!r} is {entry!r}; an Emu3 pipeline folder names "
                f"{class_name} there."
            )
    pipeline_class = index.get("_class_name")
    if pipeline_class not in PIPELINE_CLASSES:
        raise ValueError(f"{folder}/model_index.json names {pipeline_class!r}; expected one of {PIPELINE_CLASSES}.")
    tokenizer = Emu3Tokenizer.from_pretrained(folder / "tokenizer")
    image_processor = Emu3VisionVQImageProcessor.from_pretrained(folder / "image_processor")
    lm, vq = _load_models(folder / "model", folder / "vq_model", dtype)
    _check_tokenizer(tokenizer, lm, folder / "tokenizer")
    return Emu3Checkpoint(lm, vq, tokenizer, image_processor, pipeline_class)


def _read_native_tokenizer(folder: Path) -> Emu3Tokenizer | None:
    """The native folder's tokenizer as an :class:`Emu3Tokenizer`, or ``None`` when it has none.

    The backend is rebuilt from the BPE ranks and the special tokens (BAAI's split pattern and NFC normalisation),
    because the ``-hf`` repos' GPT2-style ``tokenizer.json`` pre-tokenises differently from BAAI's tokenizer; the
    ids of every token stay what they are in the native vocabulary.
    """
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    from ..processing.tokenization_emu3 import bpe_string_to_bytes, build_backend

    data = json.loads(path.read_text(encoding="utf-8"))
    bpe = data.get("model", {}).get("vocab")
    if data.get("model", {}).get("type") != "BPE" or not isinstance(bpe, dict):
        raise ValueError(f"{path} is not a byte-level BPE tokenizer; Emu3's vocabulary is Qwen's BPE + specials.")
    tokens = {**bpe, **{t["content"]: t["id"] for t in data.get("added_tokens", [])}}
    first = tokens.get("<|endoftext|>")
    if first is None:
        raise ValueError(f"{path} has no <|endoftext|> token: it is not an Emu3 (Qwen) vocabulary.")
    by_id = {i: t for t, i in tokens.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{path}: token ids are not the contiguous range 0..{len(by_id) - 1}.")
    try:
        ranks = {bpe_string_to_bytes(by_id[i]): i for i in range(first)}
    except KeyError as err:
        raise ValueError(f"{path}: a BPE token below id {first} is not byte-level ({err}).") from err
    specials = [by_id[i] for i in range(first, len(by_id))]
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    extra = config.get("extra_special_tokens")
    named_source = {**config, **(extra if isinstance(extra, dict) else {})}
    names = {"bos_token": "bos_token", "eos_token": "eos_token", "pad_token": "pad_token", **_NATIVE_NAMED_TOKENS}
    named = {ours: named_source[theirs] for theirs, ours in names.items() if isinstance(named_source.get(theirs), str)}
    return Emu3Tokenizer(_backend=build_backend(ranks, specials), **named)


def _read_native(folder: Path, dtype: torch.dtype | None) -> Emu3Checkpoint:
    from transformers import Emu3ForConditionalGeneration, Emu3ImageProcessor

    tokenizer = _read_native_tokenizer(folder)
    image_processor = None
    if (folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file():
        native_ip = Emu3ImageProcessor.from_pretrained(folder)
        image_processor = Emu3VisionVQImageProcessor(**{f: getattr(native_ip, f) for f in _IMAGE_PROCESSOR_FIELDS})
    native = Emu3ForConditionalGeneration.from_pretrained(folder, dtype=dtype if dtype is not None else "auto")
    lm, vq = convert_native_to_baai(native)
    lm.generation_config = native.generation_config
    del native
    if tokenizer is not None:
        _check_tokenizer(tokenizer, lm, folder)
    return Emu3Checkpoint(lm, vq, tokenizer, image_processor)


def model_folders(source: str | os.PathLike | BaaiFolders, layout: str | None = None) -> tuple[Path, Path]:
    """The (LM folder, VQ folder) of a BAAI or pipeline checkpoint (a native folder holds both in one)."""
    layout = layout or detect_layout(source)
    if isinstance(source, BaaiFolders):
        return Path(source.lm), Path(source.vq)
    folder = Path(source)
    if layout == "pipeline":
        return folder / "model", folder / "vq_model"
    if layout == "baai":
        return folder / "lm", folder / "vq"
    raise ValueError(f"A {layout!r} checkpoint has no separate LM and VQ folders.")


def load_checkpoint(
    source: str | os.PathLike | BaaiFolders, layout: str | None = None, *, dtype: torch.dtype | None = None
) -> Emu3Checkpoint:
    """Read a checkpoint in any layout (detected when ``layout`` is None) into an :class:`Emu3Checkpoint`.

    Args:
        source: a folder, or :class:`BaaiFolders` for BAAI's separate LM / VQ (/ tokenizer) folders.
        layout: ``"baai"``, ``"pipeline"`` or ``"native"``; default: :func:`detect_layout`.
        dtype: cast every floating-point weight to this dtype (default: as stored).

    Example:
        >>> ckpt = load_checkpoint("tests/fixtures/baai-tiny/hf-native", dtype=torch.bfloat16)
        >>> ckpt.lm.dtype, ckpt.tokenizer is None
        (torch.bfloat16, True)
    """
    if layout not in (None, *LAYOUTS):
        raise ValueError(f"layout must be one of {LAYOUTS} (or None to detect it), got {layout!r}.")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype such as torch.bfloat16, got {dtype!r}.")
    found = detect_layout(source)
    if layout is not None and layout != found:
        raise ValueError(f"source {source} was given as layout {layout!r} but looks like {found!r}.")
    if found == "baai":
        return _read_baai(source if isinstance(source, BaaiFolders) else _split_baai_folders(Path(source)), dtype)
    if found == "pipeline":
        return _read_pipeline(Path(source), dtype)
    return _read_native(Path(source), dtype)


def baai_rope_scaling(rope_parameters: dict | None) -> tuple[float, dict | None]:
    """transformers' ``rope_parameters`` -> BAAI's (``rope_theta``, ``rope_scaling``); raises for RoPE types BAAI's
    config cannot name (BAAI knows none, 'linear' and 'dynamic' with a factor).

    Example:
        >>> baai_rope_scaling({"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6})
        (1000000.0, {'type': 'linear', 'factor': 2.0})
    """
    rope = dict(rope_parameters or {"rope_type": "default"})
    rope_type = rope.pop("rope_type", "default")
    if rope.get("type", rope_type) == rope_type:
        rope.pop("type", None)  # transformers keeps BAAI's legacy name of the same setting
    theta = rope.pop("rope_theta", 1000000.0)
    if rope_type == "default" and not rope:
        return theta, None
    if rope_type in ("linear", "dynamic") and set(rope) == {"factor"}:
        return theta, {"type": rope_type, "factor": float(rope["factor"])}
    raise ValueError(
        f"BAAI's LM config can only say rope_scaling None, 'linear' or 'dynamic' with a factor; this model uses "
        f"rope_parameters {rope_parameters}, which the BAAI layout cannot represent. Convert to a pipeline folder or "
        "the native layout instead."
    )


def _baai_lm_config(folder: Path) -> None:
    """Rewrite the LM config.json our class saved in BAAI's own form (``rope_theta`` + ``rope_scaling``,
    BAAI's architecture name and ``auto_map``), the form BAAI's remote code reads."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["rope_theta"], config["rope_scaling"] = baai_rope_scaling(config.pop("rope_parameters", None))
    config["architectures"] = ["Emu3ForCausalLM"]
    config.setdefault("auto_map", dict(_BAAI_LM_AUTO_MAP))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_baai(ckpt: Emu3Checkpoint, folder: Path, max_shard_size: int | str) -> None:
    ckpt.lm.save_pretrained(folder / "lm", max_shard_size=max_shard_size)
    _baai_lm_config(folder / "lm")
    if ckpt.tokenizer is not None:
        ckpt.tokenizer.save_pretrained(folder / "lm")  # BAAI's Hub LM repos hold the tokenizer files
    ckpt.vq.save_pretrained(folder / "vq", max_shard_size=max_shard_size)
    path = folder / "vq" / "config.json"  # BAAI's VQ config names its remote code too
    config = json.loads(path.read_text(encoding="utf-8"))
    config.setdefault("auto_map", dict(_BAAI_VQ_AUTO_MAP))
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if ckpt.image_processor is not None:
        ckpt.image_processor.save_pretrained(folder / "vq")


def _write_pipeline(ckpt: Emu3Checkpoint, folder: Path, max_shard_size: int | str) -> None:
    from .. import pipelines

    pipeline_class = getattr(pipelines, ckpt.pipeline_class)
    pipe = pipeline_class(model=ckpt.lm, vq_model=ckpt.vq, tokenizer=ckpt.tokenizer,
                          image_processor=ckpt.image_processor)  # fmt: skip
    pipe.save_pretrained(folder, max_shard_size=max_shard_size)


def native_tokenizer(tokenizer: Emu3Tokenizer, image_token_id: int):
    """Our tokenizer as the tokenizer transformers' ``Emu3Processor`` expects: the same ``tokenizer.json`` (same
    ids, BAAI's pre-tokenisation) with the named tokens the processor reads. The image placeholder is the token
    whose id the native config's ``vocabulary_map["<image>"]`` holds (BAAI's vocabulary has no ``<image>``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    named = {theirs: str(getattr(tokenizer, ours)) for theirs, ours in _NATIVE_NAMED_TOKENS.items()}
    named["image_token"] = tokenizer.convert_ids_to_tokens(image_token_id)
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer.backend_tokenizer.to_str()),  # a copy: the wrapper may edit it
        bos_token=str(tokenizer.bos_token), eos_token=str(tokenizer.eos_token), pad_token=str(tokenizer.pad_token),
        clean_up_tokenization_spaces=False, extra_special_tokens=named,
    )  # fmt: skip


def _write_native(ckpt: Emu3Checkpoint, folder: Path, max_shard_size: int | str) -> None:
    from transformers import Emu3ImageProcessor, Emu3Processor

    native = convert_baai_to_native(ckpt.lm, ckpt.vq)
    native.generation_config = ckpt.lm.generation_config
    native.save_pretrained(folder, max_shard_size=max_shard_size)
    parts = []
    if ckpt.image_processor is not None:
        fields = {f: getattr(ckpt.image_processor, f) for f in _IMAGE_PROCESSOR_FIELDS}
        parts.append(Emu3ImageProcessor(**fields))
    if ckpt.tokenizer is not None:
        parts.append(native_tokenizer(ckpt.tokenizer, native.config.image_token_id))
    if len(parts) == 2:  # the processor writes both, as transformers' own conversion does
        Emu3Processor(image_processor=parts[0], tokenizer=parts[1]).save_pretrained(folder)
    elif parts:
        parts[0].save_pretrained(folder)


_WRITERS = {"baai": _write_baai, "pipeline": _write_pipeline, "native": _write_native}


def source_parts(source: str | os.PathLike | BaaiFolders, layout: str) -> tuple[bool, bool]:
    """(has a tokenizer, has an image processor) for a checkpoint on disk, from its files alone (no loading)."""
    if layout == "pipeline":
        return True, True  # both are required components; _read_pipeline checks them
    if layout == "native":
        folder = Path(source)
        has_ip = (folder / "preprocessor_config.json").is_file() or (folder / "processor_config.json").is_file()
        return (folder / "tokenizer.json").is_file(), has_ip
    folders = source if isinstance(source, BaaiFolders) else _split_baai_folders(Path(source))
    tokenizer_dir = Path(folders.tokenizer if folders.tokenizer is not None else folders.lm)
    return _has_tokenizer_files(tokenizer_dir), (Path(folders.vq) / "preprocessor_config.json").is_file()


def check_writable(ckpt_parts: tuple[bool, bool], layout: str) -> None:
    """Raise before any weights are written when ``layout`` needs a part the source lacks.

    ``ckpt_parts`` is (has a tokenizer, has an image processor).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"target layout must be one of {LAYOUTS}, got {layout!r}.")
    has_tokenizer, has_image_processor = ckpt_parts
    if layout == "pipeline" and not (has_tokenizer and has_image_processor):
        missing = " and ".join(n for n, ok in (("a tokenizer", has_tokenizer),
                                               ("an image processor", has_image_processor)) if not ok)  # fmt: skip
        raise ValueError(
            f"A pipeline folder needs a tokenizer and an image processor, but the source has no {missing}. For BAAI "
            "folders pass --tokenizer DIR (BAAI's tokenizer files) and keep preprocessor_config.json in the VQ folder."
        )


def save_checkpoint(
    ckpt: Emu3Checkpoint, folder: str | os.PathLike, layout: str, *, max_shard_size: int | str = "5GB"
) -> Path:
    """Write ``ckpt`` into ``folder`` (new or empty) in ``layout``; safetensors only, ``tokenizer.json`` included.

    Writes in place: :func:`~emu3_hf.conversion.convert_checkpoint` calls this on a staging folder that it renames
    only when everything succeeded.

    Example:
        >>> save_checkpoint(load_checkpoint("emu3-pipeline"), "emu3-native", "native", max_shard_size="2GB")
    """
    check_writable((ckpt.tokenizer is not None, ckpt.image_processor is not None), layout)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty; write a checkpoint into a new or empty folder.")
    _WRITERS[layout](ckpt, folder, max_shard_size)
    return folder


__all__ = [
    "LAYOUTS",
    "BaaiFolders",
    "Emu3Checkpoint",
    "baai_rope_scaling",
    "check_baai_folders",
    "check_writable",
    "detect_layout",
    "load_checkpoint",
    "model_folders",
    "native_tokenizer",
    "save_checkpoint",
    "source_parts",
]
