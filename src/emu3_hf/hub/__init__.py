"""The Hub side of emu3-hf: model cards, ``push_to_hub`` helpers and the remote-code export.

- Cards (:mod:`.cards`): :func:`pipeline_card`, :func:`model_card`, :func:`adapter_card` and
  :func:`card_for_folder` build a huggingface_hub ``ModelCard`` for a saved folder: ``library_name`` (diffusers,
  transformers, peft), ``pipeline_tag``, license, tags, ``base_model`` + ``base_model_relation`` (adapter,
  finetune, ...) and a usage snippet that loads the repo by id and runs.
- Publishing (:mod:`.push`): :func:`push_pipeline_to_hub`, :func:`push_model_to_hub`, :func:`push_adapter_to_hub`
  and :func:`push_folder_to_hub` save into a temporary folder, add the card and upload in one commit.
- Remote code (:mod:`.remote_code`): :func:`save_pretrained_with_code` writes the modeling / tokenizer / image
  processor code and ``auto_map`` next to the weights, so the folder loads with ``trust_remote_code=True`` in an
  environment without emu3-hf.

- Downloading (:mod:`.download`): :func:`download_pipeline` fetches a pipeline repo into the HF cache; diffusers'
  own download refuses ``model_index.json`` entries of emu3_hf modules, so ``Emu3Pipeline.download`` needs it.
  The models, tokenizer and image processor (and ``Emu3Pipeline.from_baai``) resolve Hub ids through
  huggingface_hub by themselves, cache and ``HF_HUB_OFFLINE`` included.

Example:
    ```python
    >>> from emu3_hf import Emu3Pipeline
    >>> from emu3_hf.hub import push_pipeline_to_hub
    >>> pipe = Emu3Pipeline.from_baai("BAAI/Emu3-Gen", "BAAI/Emu3-VisionTokenizer")
    >>> push_pipeline_to_hub(pipe, "me/emu3-gen-pipeline", base_model="BAAI/Emu3-Gen", base_model_relation="merge")
    ```
"""

from .cards import (
    BASE_MODEL_RELATIONS,
    BASE_TAGS,
    DEFAULT_LICENSE,
    PIPELINE_TASKS,
    adapter_card,
    card_for_folder,
    model_card,
    pipeline_card,
    usage_code,
)
from .download import download_pipeline
from ..utils.atomic import staged_folder
from .push import push_adapter_to_hub, push_folder_to_hub, push_model_to_hub, push_pipeline_to_hub
from .remote_code import check_exportable, code_files, has_exported_code, save_pretrained_with_code

__all__ = [
    "BASE_MODEL_RELATIONS",
    "BASE_TAGS",
    "DEFAULT_LICENSE",
    "PIPELINE_TASKS",
    "adapter_card",
    "card_for_folder",
    "check_exportable",
    "code_files",
    "download_pipeline",
    "has_exported_code",
    "model_card",
    "pipeline_card",
    "push_adapter_to_hub",
    "push_folder_to_hub",
    "push_model_to_hub",
    "push_pipeline_to_hub",
    "save_pretrained_with_code",
    "staged_folder",
    "usage_code",
]
