"""LoRA and full fine-tuning of Emu3 on images, videos and image-question-answer data; training of the VQ vision
tokenizer itself (:func:`train_vq`, see :mod:`.vq`).

``train(TrainConfig(...))`` in Python or ``emu3 train`` on the command line; the same call runs in one process and
under ``accelerate launch`` (DDP, DeepSpeed, FSDP2 with ``sharding="fsdp2"``). See :mod:`.trainer`.

Example:
    ```python
    >>> from emu3_hf.training import TrainConfig, train
    >>> result = train(TrainConfig(model="my-pipeline", data="pink-shapes/", output_dir="pink-lora", max_steps=300))
    ```
"""

from .checkpoint import find_checkpoints, load_checkpoint, save_checkpoint
from .config import DEFAULT_LORA_TARGETS, TrainConfig
from .data import load_examples, tokenize_dataset
from .sequences import (
    IGNORE_INDEX,
    Emu3DataCollator,
    LengthGroupedBatches,
    example_ids,
    example_loss_on,
    labels_for,
    null_prompt_dropped,
)
from .trainer import SequenceData, TrainResult, prepare_model, train
from .vq import (
    VQForward,
    VQObjective,
    VQTrainConfig,
    VQTrainResult,
    decode_vectors,
    tiny_world_vq_config,
    train_vq,
    vq_forward,
)

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "IGNORE_INDEX",
    "Emu3DataCollator",
    "LengthGroupedBatches",
    "SequenceData",
    "TrainConfig",
    "TrainResult",
    "VQForward",
    "VQObjective",
    "VQTrainConfig",
    "VQTrainResult",
    "decode_vectors",
    "example_ids",
    "example_loss_on",
    "find_checkpoints",
    "labels_for",
    "load_checkpoint",
    "load_examples",
    "null_prompt_dropped",
    "prepare_model",
    "save_checkpoint",
    "tiny_world_vq_config",
    "tokenize_dataset",
    "train",
    "train_vq",
    "vq_forward",
]
