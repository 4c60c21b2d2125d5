"""Training sequences, their labels, the collator and the length-bucketing batch order.

Every sequence is laid out by the processor (the layouts the pipelines prompt with), then completed:

- text-to-image / text-to-video (BAAI's SFT): the processor's continuation prompt ``[BOS] text [BOI] "h*w" [IMG]
  frames`` with the whole clip as frames, then ``[EOI]``. The generation prompt for the same text and grid is its
  prefix, so what the model learns is what the engine asks for.
- understanding (the chat layout): the processor's ``mode="U"`` prompt (image + question), then the answer and
  ``[EOS]``.

Loss (``loss_on``): ``"vision"`` = visual tokens only (BAAI's T2I SFT: its labels keep ids in the codebook range and
nothing else), ``"text"`` = the answer and its EOS (understanding), ``"all"`` = every real token after the first,
``"auto"`` = per example: the answer of an understanding example, the visual tokens of a generation example (a
mixture of both tasks, as the embedded model trains on).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch

LossOn = Literal["vision", "text", "all", "auto"]
IGNORE_INDEX = -100  # what transformers' causal-LM loss skips
LOSS_CHOICES = ("vision", "text", "all", "auto")


def null_prompt_dropped(seed: int, epoch: int, index: int, probability: float) -> bool:
    """Whether example ``index`` trains with an empty prompt this epoch (CFG's unconditional branch): a draw that
    depends only on ``(seed, epoch, index)``, so a resumed or sharded run drops exactly the same prompts."""
    if probability <= 0:
        return False
    return random.Random(f"{seed}/{epoch}/{index}").random() < probability


def example_ids(processor: Any, example: dict, *, drop_prompt: bool = False) -> tuple[list[int], int]:
    """The ids of one cached example and where its answer starts (the index of its first answer token; for
    generation examples the start of the vision block).

    ``example`` holds ``codes`` (flat ints) and ``grid`` ``[T, h, w]`` (``T = 0`` for an image), and ``text`` (the
    caption / prompt) or ``question`` + ``answer`` (understanding).
    """
    t, h, w = example["grid"]
    codes = torch.tensor(example["codes"], dtype=torch.long).view(max(t, 1), h, w)
    codes = codes[0] if t == 0 else codes
    special = processor.special
    if example.get("answer") is not None:
        question = example.get("question") or ""
        prompt = processor(text=[question], codes=[codes], mode="U", padding=False, return_tensors=None)
        prompt = prompt["input_ids"][0]
        answer = processor.tokenizer(example["answer"], add_special_tokens=False)["input_ids"]
        return [*prompt, *answer, special.eos], len(prompt)
    text = "" if drop_prompt else (example.get("text") or "")
    clip = codes if codes.dim() == 3 else codes[None]
    prompt = processor(text=[text], codes=[clip], mode="G", padding=False, return_tensors=None)["input_ids"][0]
    start = prompt.index(special.boi, 1)
    return [*prompt, special.eoi], start


def example_loss_on(loss_on: LossOn, example: dict) -> LossOn:
    """The loss of one example: ``loss_on`` itself, or for ``"auto"`` "text" (understanding: it has an answer) or
    "vision" (generation)."""
    if loss_on != "auto":
        return loss_on
    return "text" if example.get("answer") is not None else "vision"


def labels_for(ids: list[int], answer_start: int, special: Any, loss_on: LossOn) -> list[int]:
    """Labels aligned with ``ids`` (transformers shifts them): the id where the loss counts, else -100.
    ``loss_on`` is resolved per example first (:func:`example_loss_on`): "auto" is not accepted here."""
    if loss_on not in LOSS_CHOICES or loss_on == "auto":
        raise ValueError(f"loss_on must be one of {LOSS_CHOICES[:3]} here (resolve 'auto' per example), got {loss_on!r}.")
    tensor = torch.tensor(ids)
    if loss_on == "vision":
        keep = special.is_visual(tensor)
    elif loss_on == "text":
        keep = torch.arange(len(ids)) >= answer_start
        keep &= ~special.is_visual(tensor)
    else:
        keep = torch.ones(len(ids), dtype=torch.bool)
        keep[0] = False
    return torch.where(keep, tensor, torch.full_like(tensor, IGNORE_INDEX)).tolist()


@dataclass
class Emu3DataCollator:
    """Pads ``input_ids`` / ``labels`` (and builds ``attention_mask``) into tensors.

    ``padding_side="right"`` is what training wants (positions start at 0 in every row either way: the LM derives
    them from the attention mask); ``"left"`` matches the generation prompts. Labels are -100 on padding.
    ``pad_to_multiple_of`` rounds the length up (tensor-core friendly shapes).
    """

    pad_token_id: int
    padding_side: Literal["left", "right"] = "right"
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}.")

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("The collator got an empty batch.")
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            n = len(f["input_ids"])
            pad = length - n
            rows = (list(f["input_ids"]), [1] * n, list(f.get("labels", f["input_ids"])))
            fills = (self.pad_token_id, 0, IGNORE_INDEX)
            for key, row, fill in zip(batch, rows, fills):
                batch[key].append(row + [fill] * pad if self.padding_side == "right" else [fill] * pad + row)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


class LengthGroupedBatches:
    """Global batches in a reproducible order that groups similar lengths (less padding).

    Each epoch shuffles the examples with ``(seed, epoch)``, cuts the order into mega-batches of
    ``group_batches`` batches, sorts each mega-batch by length (longest first) and shuffles the batches. A batch of
    ``global_batch_size`` examples is later split between processes (:meth:`shard`). The last incomplete batch is
    dropped so every process and every resumed run sees whole batches.
    """

    def __init__(self, lengths: Sequence[int], global_batch_size: int, seed: int = 0, group_batches: int = 50,
                 shuffle: bool = True):  # fmt: skip
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
        if len(lengths) < global_batch_size:
            raise ValueError(
                f"The dataset has {len(lengths)} examples, fewer than one global batch of {global_batch_size} "
                "(per-device batch size x processes x gradient accumulation): lower the batch size or add data."
            )
        self.lengths = list(lengths)
        self.global_batch_size = global_batch_size
        self.seed, self.group_batches, self.shuffle = seed, group_batches, shuffle

    def __len__(self) -> int:
        return len(self.lengths) // self.global_batch_size

    def epoch(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.lengths)))
        rng = random.Random(f"{self.seed}/{epoch}")
        if self.shuffle:
            rng.shuffle(order)
        size = self.global_batch_size
        mega = size * max(self.group_batches, 1)
        grouped = []
        for start in range(0, len(order), mega):
            grouped += sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
        batches = [grouped[i : i + size] for i in range(0, len(self) * size, size)]
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    @staticmethod
    def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
        """The slice of a global batch that process ``rank`` trains on."""
        if len(batch) % world_size:
            raise ValueError(f"A batch of {len(batch)} cannot be split between {world_size} processes.")
        per = len(batch) // world_size
        return batch[rank * per : (rank + 1) * per]

    def iterate(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        yield from self.epoch(epoch)[start:]


__all__ = [
    "IGNORE_INDEX",
    "LOSS_CHOICES",
    "Emu3DataCollator",
    "LengthGroupedBatches",
    "LossOn",
    "example_ids",
    "example_loss_on",
    "labels_for",
    "null_prompt_dropped",
]
