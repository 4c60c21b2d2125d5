"""The embedded model's training recipe (``docs/TINY_WORLD.md``), stage by stage, on the package's own training code.

Stage 1, the VQ tokenizer (:func:`train_tiny_vq`): :func:`~emu3_hf.training.tiny_world_vq_config` (BAAI's
architecture at width 32, a 64x64 image -> 8x8 codes, an 8-frame clip -> 2x8x8) trained by
:func:`~emu3_hf.training.train_vq` on jittered images and clips of the ``train`` split **and of the ``lora`` split
(pink)**. The VQ is the image codec: for the LoRA demo to draw pink, the codec must be able to write it, as a BPE
must be able to spell a word the LM has not learnt. The LM (stage 2) never sees pink nor the held-out pairs; the
``heldout`` specs are shown to neither, ``validation`` and ``test`` only to the LM. Phase 1 trains on images only at a high learning
rate (a shape covers 6-19% of an image, so its colour is the last thing the pixel loss pays for: with the spec's
~2000 mixed steps every shape came back one average colour); an optional phase 2 continues on images and clips
(off by default: see :data:`VQ_CLIP_STEPS`).

:func:`~emu3_hf.tiny_world.vq_reports.vq_reconstruction_report` scores a VQ the way the spec scores the LM: the
reference analyzer reads back each ``encode`` -> ``decode`` round trip of clean images, per attribute.

Stage 1b (:func:`compact_codebook`): the trained codebook covered by at most :data:`VQ_CODES` evenly spaced codes;
:func:`~emu3_hf.tiny_world.vq_reports.vq_locality_report` measures how far a cell's code depends on the rest of the picture.

Stage 1c (:func:`tune_tiny_vq_decoder`): the compacted VQ's decoder (and ``post_quant_conv``) trained further on
clean and jittered images and clips of every split the LM draws (:data:`LM_SPLITS`) and of pink, the encoder and
codebook frozen (``VQTrainConfig(decoder_only=True)``): every picture keeps exactly its codes, and the decoder learns
to draw the merged codebook (the merge alone costs 2% of the validation images) and the clips the image-only phase 1
never decoded.

Stage 1d (:func:`~emu3_hf.tiny_world.canonical.tune_tiny_vq_canonical`): stage 1c's training plus canonical grids,
the LM's text-to-image targets, whose shape and colour are separate codes (:mod:`.canonical`); the LM stages read
their fields from the pipeline's VQ and train on them whenever it names them.

Stage 2, the LM (:func:`build_base_pipeline`, then :func:`train_tiny_lm`): a byte-level BPE of a few hundred tokens
learnt from the ``train`` captions and the chat question (:func:`~emu3_hf.processing.bpe.train_bpe_ranks`), Emu3's
208 specials, 3 image tokens and the VQ's 1024 visual tokens after it; a Llama-style Emu3 LM of about 2 M
parameters (:data:`TINY_LM_SIZES`) initialised at random; the image processor keeps 64x64 (8x8 codes). The pipeline
folder is then fully trained by :func:`emu3_hf.training.train` (``lora=False``, ``loss_on="auto"``) on a mixture of
examples of every base split (:data:`LM_SPLITS`; :func:`lm_training_examples`: clean pictures to draw, jittered ones
to read): text-to-image, image-to-text (the chat layout, question :data:`CAPTION_QUESTION`, the caption as the answer)
and text-to-video. ``validation`` and ``test`` were for choosing the recipe (BENCHMARKS.md, runs A-E); the shipped LM
trains on them too, and the held-out pairs stay its unseen test.

Stage 2c, the finish (:func:`finish_tiny_lm`): stage 2b's LM continued at a lower learning rate on a mixture that
weighs captions (mostly read off clean renders) and clips more (:data:`LM_FINISH_WEIGHTS`); a caption is a small
part of stage 2b's loss, and the LM reads far better once it sees more of them (BENCHMARKS.md, run I).

Stage 3, the LoRA demo (:func:`train_pink_lora`): a PEFT LoRA adapter on the trained LM, from text-to-image examples
of pink shapes mixed with a few base ones; :func:`~emu3_hf.tiny_world.evaluate.evaluate_lora` scores pink before and
after, and the other colours with the adapter active.

Example:
    ```python
    >>> from emu3_hf.tiny_world.recipe import train_tiny_vq
    >>> from emu3_hf.tiny_world.vq_reports import vq_reconstruction_report
    >>> vq_dir = train_tiny_vq("runs/tiny-vq")                 # ~50 minutes on 2 CPU cores, minutes on a GPU
    >>> vq_reconstruction_report(vq_dir, "validation")["all"]           # share of images read back exactly
    ```
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..training.checkpoint import resume_point
from .canonical import canonical_codes, canonical_vq_of
from .splits import LM_SPLITS, SPLIT_NAMES, iter_image_examples, iter_video_examples, make_splits, specs_of
from .vq_stages import (VQ_CLIP_LR, VQ_CLIP_STEPS, VQ_CODES, VQ_DECODER_CLIPS, VQ_DECODER_IMAGES, VQ_DECODER_LR,
                        VQ_DECODER_STEPS, VQ_IMAGE_LR, VQ_IMAGE_STEPS, compact_codebook, train_tiny_vq,
                        tune_tiny_vq_decoder, vq_training_specs)  # fmt: skip  (re-exported: the recipe in one place)

CAPTION_QUESTION = "Describe the image."  # docs/TINY_WORLD.md, "Understanding"
# The sampling the embedded pipeline recommends (its LM's generation_config.json, read by the pipelines when a call
# passes none; Emu3Pipeline.recommended_sampling): measured (BENCHMARKS.md), BAAI's guidance 3.0 draws worse than none,
# and greedy decoding far better than sampling (32 training prompts, all five right: 0.91 against 0.34).
TINY_GUIDANCE_SCALE, TINY_DO_SAMPLE = 1.0, False
LM_EPOCHS = 12.0
# Stage 2c (finish_tiny_lm; runs I1-I3 in BENCHMARKS.md): stage 2b's LM 2 more epochs at lr 5e-4 on a mixture that
# weighs reading and clips more than stage 2b's equal copies of every task: per copy (8 by default) of a spec, two
# text-to-image examples, four image-to-text ones (three of them reading the clean render) and two text-to-video ones.
# Clean captions 0.65 -> 1.00, drawing 0.885 -> 0.95, clip direction 0.705 -> 0.915 (run I3).
LM_FINISH_EPOCHS, LM_FINISH_LR = 2.0, 5e-4
LM_FINISH_WEIGHTS, LM_FINISH_CLEAN_READS = {"text_to_image": 2, "image_to_text": 4, "text_to_video": 2}, 3
BPE_VOCAB_SIZE = 400  # an upper bound: the captions' repeated pieces fill ~360 ranks
# docs/TINY_WORLD.md's ~2 M-parameter LM (hidden 192, 4 layers; 2.28 M parameters). Its ~5 M one (hidden 256, 6 layers,
# shipped until stage 1d) tied a colour to the shapes it had seen it on: over the same factorised codes it drew the
# held-out pairs 0.11 where the 2 M one drew them 1.00 in three seeds of three (BENCHMARKS.md, "third part").
TINY_LM_SIZES = dict(hidden_size=192, intermediate_size=528, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=512)  # fmt: skip



def caption_corpus() -> list[str]:
    """The text the tiny BPE learns from: every ``train`` image and video caption, and the chat question (as often
    as an image caption, since every image-to-text example asks it)."""
    splits = make_splits()
    captions = [spec.caption() for spec in splits.images["train"] + splits.videos["train"]]
    return captions + [CAPTION_QUESTION] * len(splits.images["train"])


def build_tiny_tokenizer(vocab_size: int = BPE_VOCAB_SIZE, codebook_size: int = 1024):
    """The embedded model's tokenizer: a BPE learnt from :func:`caption_corpus`, then Emu3's specials and
    ``codebook_size`` visual tokens (an :class:`~emu3_hf.processing.tokenization_emu3.Emu3Tokenizer`)."""
    import tempfile

    from ..processing.bpe import train_bpe_ranks
    from ..processing.tokenization_emu3 import build_emu3_tokenizer, write_tiktoken_bpe

    ranks = train_bpe_ranks(caption_corpus(), vocab_size=vocab_size)
    with tempfile.TemporaryDirectory() as folder:
        return build_emu3_tokenizer(write_tiktoken_bpe(ranks, Path(folder) / "tiny.tiktoken"),
                                    codebook_size=codebook_size)  # fmt: skip


def tiny_lm_config(tokenizer: Any, **overrides: Any):
    """An :class:`~emu3_hf.Emu3LMConfig` of :data:`TINY_LM_SIZES` over ``tokenizer``'s ids (specials, visual block)
    for 64x64 images (``image_area`` 4096 pixels: 8x8 codes by default)."""
    from ..modeling.configuration_emu3 import Emu3LMConfig

    settings = dict(
        **TINY_LM_SIZES, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, img_token_id=tokenizer.img_token_id,
        boi_token_id=tokenizer.boi_token_id, eoi_token_id=tokenizer.eoi_token_id, eol_token_id=tokenizer.eol_token_id,
        eof_token_id=tokenizer.eof_token_id, visual_token_offset=tokenizer.visual_token_offset,
        codebook_size=tokenizer.codebook_size, image_area=64 * 64, attention_dropout=0.0, rope_theta=10000.0,
        tie_word_embeddings=False,
    )  # fmt: skip
    settings.update(overrides)
    return Emu3LMConfig(**settings)


def build_base_pipeline(vq: Any, output_dir: str | os.PathLike, *, seed: int = 0, **lm_overrides: Any) -> Path:
    """Stage 2a: the untrained embedded pipeline (random LM recommending :data:`TINY_GUIDANCE_SCALE` and greedy
    decoding, trained ``vq`` folder or model, tiny BPE tokenizer, 64x64 image processor), saved to ``output_dir``;
    returns it."""
    from ..modeling.modeling_emu3 import Emu3LMForCausalLM
    from ..modeling.modeling_emu3visionvq import Emu3VisionVQModel
    from ..pipelines import Emu3Pipeline
    from ..processing.image_processing_emu3visionvq import Emu3VisionVQImageProcessor

    if not isinstance(vq, torch.nn.Module):
        vq = Emu3VisionVQModel.from_pretrained(vq)
    tokenizer = build_tiny_tokenizer(codebook_size=vq.config.codebook_size)
    torch.manual_seed(seed)
    lm = Emu3LMForCausalLM(tiny_lm_config(tokenizer, **lm_overrides)).eval()
    lm.generation_config.guidance_scale, lm.generation_config.do_sample = TINY_GUIDANCE_SCALE, TINY_DO_SAMPLE
    side = 64
    image_processor = Emu3VisionVQImageProcessor(min_pixels=side * side, max_pixels=side * side,
                                                 spatial_factor=vq.config.spatial_scale_factor)  # fmt: skip
    pipe = Emu3Pipeline(model=lm, vq_model=vq.eval(), tokenizer=tokenizer, image_processor=image_processor)
    pipe.save_pretrained(output_dir)
    return Path(output_dir)


TASKS = ("text_to_image", "image_to_text", "text_to_video")


def lm_training_examples(copies: int | Mapping[str, int] = 8, seed: int = 0, split: str | tuple[str, ...] = "train",
                         tasks: tuple[str, ...] | None = None, jitter_targets: bool = False,
                         clean_reads: int = 0, canonical: Any = None):  # fmt: skip
    """The LM's training mixture as a ``datasets.Dataset`` (columns image, video, text, question, answer): for each
    spec of ``split`` (a split name or a tuple of them; never ``heldout``), ``copies`` examples for each of ``tasks``
    (default: all of :data:`TASKS`): ``text_to_image`` (image + caption), ``image_to_text`` (image +
    :data:`CAPTION_QUESTION` + the caption as the answer) and ``text_to_video`` (8 frames + caption). ``copies`` may
    instead map each task to its own number (the tasks are then its keys; pass no ``tasks``), as the finishing stage
    does (:func:`finish_tiny_lm`). Of a spec's image-to-text examples, ``clean_reads`` read the clean render and the
    rest jittered ones (stage 2b: 0; half of them from scratch, run H in BENCHMARKS.md, read clean images' captions
    better, 0.90 against 0.65, but drew worse, 0.81 against 0.87; stage 2c reads mostly clean). The pictures and
    clips the LM learns to *draw* are clean ones unless ``jitter_targets``: a 2-pixel jitter changes many of the VQ's
    codes (its encoder sees the whole image), which leaves the LM a target it cannot predict (measured with the
    1024-code VQ: 2.7 nats per visual token, pictures that mix several jitters). With ``canonical`` (a stage-1d VQ,
    model or folder: :mod:`.canonical`) the text-to-image targets are the specs' canonical grids instead, given as
    already tokenized rows (columns ``codes`` and ``grid`` join the others)."""
    import datasets

    if isinstance(copies, Mapping):
        if tasks is not None:
            raise ValueError("Pass the tasks as the keys of `copies` (a mapping task -> copies), not as `tasks` too.")
        counts = dict(copies)
    else:
        counts = dict.fromkeys(TASKS if tasks is None else tasks, copies)
    unknown = set(counts) - set(TASKS)
    if unknown or not counts:
        raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tuple(counts)}.")
    if any(not isinstance(n, int) or n < 1 for n in counts.values()):
        raise ValueError(f"copies must be integers >= 1, got {counts}.")
    reads = counts.get("image_to_text", 0)
    if not 0 <= clean_reads <= reads:
        raise ValueError(f"clean_reads must be between 0 and the image-to-text copies ({reads}), got {clean_reads}.")
    names = (split,) if isinstance(split, str) else tuple(split)
    if "heldout" in names or not names or set(names) - set(SPLIT_NAMES):
        raise ValueError(f"split must name one or more of {tuple(n for n in SPLIT_NAMES if n != 'heldout')} (the "
                         f"held-out compositions never train, docs/TINY_WORLD.md), got {split!r}.")  # fmt: skip
    if canonical is not None and jitter_targets:
        raise ValueError("Canonical targets are clean grids: pass jitter_targets=False with canonical=...")
    images, clips = specs_of(names)
    rows: list[dict] = []
    blank = {"codes": None, "grid": None} if canonical is not None else {}
    if "text_to_image" in counts:
        if canonical is not None:
            grids = {spec.caption(): grid for spec, grid in zip(images, canonical_codes(canonical, images))}
        for image, caption in iter_image_examples(images, seed=seed, epochs=counts["text_to_image"],
                                                  jitter=jitter_targets):  # fmt: skip
            if canonical is not None:
                grid = grids[caption]
                rows.append({"image": None, "video": None, "codes": grid.flatten().tolist(), "grid": [0, *grid.shape],
                             "text": caption, "question": None, "answer": None})  # fmt: skip
            else:
                rows.append({"image": image, "video": None, "text": caption, "question": None, "answer": None})
    if "image_to_text" in counts:
        rest = reads - clean_reads
        jittered = iter_image_examples(images, seed=seed + 1, epochs=rest) if rest else ()
        clean = iter_image_examples(images, seed=seed + 2, epochs=clean_reads, jitter=False) if clean_reads else ()
        for image, caption in itertools.chain(jittered, clean):
            rows.append({"image": image, "video": None, **blank, "text": None, "question": CAPTION_QUESTION,
                         "answer": caption})  # fmt: skip
    if "text_to_video" in counts:
        for frames, caption in iter_video_examples(clips, seed=seed, epochs=counts["text_to_video"],
                                                   jitter=jitter_targets):  # fmt: skip
            rows.append({"image": None, "video": frames, **blank, "text": caption, "question": None, "answer": None})
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    ints = datasets.Sequence(datasets.Value("int64"))
    features = datasets.Features(image=datasets.Image(), video=datasets.Sequence(datasets.Image()),
                                 **(dict(codes=ints, grid=ints) if canonical is not None else {}),
                                 text=datasets.Value("string"), question=datasets.Value("string"),
                                 answer=datasets.Value("string"))  # fmt: skip
    return datasets.Dataset.from_dict(columns, features=features)


def _train_lm(model: Any, output_dir: str | os.PathLike, data: Any, *, num_epochs: float, batch_size: int,
              learning_rate: float, warmup_steps: int, seed: int, **overrides: Any):
    """Full training of a pipeline folder's LM on ``data`` (the settings both LM stages share); resumes the newest
    checkpoint in ``output_dir``."""
    from ..training import TrainConfig, train

    output_dir = Path(output_dir)
    settings = dict(
        model=str(model), data=data, output_dir=str(output_dir), lora=False, loss_on="auto", null_prompt_prob=0.1,
        learning_rate=learning_rate, weight_decay=0.01, warmup_steps=warmup_steps, num_epochs=num_epochs,
        per_device_batch_size=batch_size, save_steps=200, resume_from_checkpoint=resume_point(output_dir),
        report_to="none", seed=seed,
    )  # fmt: skip
    settings.update(overrides)
    return train(TrainConfig(**settings))


def train_tiny_lm(
    base: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    copies: int = 8,
    split: str | tuple[str, ...] = LM_SPLITS,
    num_epochs: float = LM_EPOCHS,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    **overrides: Any,
):
    """Stage 2b: train the base pipeline's LM from scratch on :func:`lm_training_examples`; the trained pipeline
    folder (with a model card) lands in ``output_dir``. Resumes the newest checkpoint there. Returns the
    :class:`~emu3_hf.training.TrainResult`."""
    settings = dict(num_epochs=num_epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=100,
                    seed=seed)  # fmt: skip
    settings.update(overrides)
    data = lm_training_examples(copies, seed, split, canonical=canonical_vq_of(base))
    return _train_lm(base, output_dir, data, **settings)


def finish_tiny_lm(
    pipeline: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    copies: int = 8,
    num_epochs: float = LM_FINISH_EPOCHS,
    batch_size: int = 32,
    learning_rate: float = LM_FINISH_LR,
    seed: int = 0,
    **overrides: Any,
):
    """Stage 2c: continue stage 2b's trained LM (the pipeline folder ``pipeline``) into ``output_dir`` at a lower
    learning rate, on a mixture that weighs what stage 2b learnt least: for each spec of :data:`LM_SPLITS`,
    ``copies`` times :data:`LM_FINISH_WEIGHTS` examples per task, :data:`LM_FINISH_CLEAN_READS` per copy of the
    image-to-text ones reading the clean render (fresh renders: seed ``seed + 1``). An answer is 14 tokens with its
    EOS, against a picture's 79 and a clip's 152, so in stage 2b's mixture reading gets 9% of the loss, and the shape
    word a fourteenth of that; the LM can learn it (it fits 48 clean reads in 60 steps) when it sees it more. Resumes
    the newest checkpoint there. Returns the :class:`~emu3_hf.training.TrainResult`."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}.")
    counts = {task: weight * copies for task, weight in LM_FINISH_WEIGHTS.items()}
    data = lm_training_examples(counts, seed + 1, LM_SPLITS, clean_reads=LM_FINISH_CLEAN_READS * copies,
                                canonical=canonical_vq_of(pipeline))  # fmt: skip
    data = data.shuffle(seed=seed + 1)
    settings = dict(num_epochs=num_epochs, batch_size=batch_size, learning_rate=learning_rate, warmup_steps=30,
                    seed=seed + 1)  # fmt: skip
    settings.update(overrides)
    return _train_lm(pipeline, output_dir, data, **settings)


def _pink_mixture(copies: int, base_copies: int, seed: int, canonical: Any = None):
    import datasets

    draw = dict(tasks=("text_to_image",), canonical=canonical)
    parts = [lm_training_examples(copies, seed, split="lora", **draw)]
    if base_copies:
        parts.append(lm_training_examples(base_copies, seed, split=LM_SPLITS, **draw))
    return datasets.concatenate_datasets(parts).shuffle(seed=seed)


def train_pink_lora(
    pipeline: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    copies: int = 16,
    base_copies: int = 2,
    num_epochs: float = 4.0,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    lora_rank: int = 16,
    seed: int = 0,
    **overrides: Any,
):
    """Stage 3, the LoRA demo: a PEFT LoRA adapter on the trained pipeline's LM, learnt from text-to-image examples
    of the ``lora`` split (pink shapes: a colour base training never showed, ``copies`` each) mixed with
    ``base_copies`` text-to-image examples of each spec the base LM trained on (:data:`LM_SPLITS`; without them the
    adapter paints every colour pink: measured 0.12 colour on other prompts with it active), into ``output_dir``
    (adapter + model card). Resumes the newest checkpoint there. Returns the :class:`~emu3_hf.training.TrainResult`."""
    from ..training import TrainConfig, train
    output_dir = Path(output_dir)
    settings = dict(
        model=str(pipeline), data=_pink_mixture(copies, base_copies, seed, canonical_vq_of(pipeline)),
        output_dir=str(output_dir), lora=True, lora_rank=lora_rank, lora_alpha=2.0 * lora_rank, lora_dropout=0.0,
        loss_on="vision", null_prompt_prob=0.1, learning_rate=learning_rate, warmup_steps=20, num_epochs=num_epochs,
        per_device_batch_size=batch_size, save_steps=200, resume_from_checkpoint=resume_point(output_dir),
        report_to="none", seed=seed,
    )  # fmt: skip
    settings.update(overrides)
    return train(TrainConfig(**settings))


__all__ = [
    "BPE_VOCAB_SIZE",
    "CAPTION_QUESTION",
    "LM_EPOCHS",
    "LM_FINISH_CLEAN_READS",
    "LM_FINISH_EPOCHS",
    "LM_FINISH_LR",
    "LM_FINISH_WEIGHTS",
    "LM_SPLITS",
    "TINY_DO_SAMPLE",
    "TINY_GUIDANCE_SCALE",
    "TINY_LM_SIZES",
    "TASKS",
    "VQ_CLIP_LR",
    "VQ_CLIP_STEPS",
    "VQ_IMAGE_LR",
    "VQ_IMAGE_STEPS",
    "VQ_CODES",
    "VQ_DECODER_CLIPS",
    "VQ_DECODER_IMAGES",
    "VQ_DECODER_LR",
    "VQ_DECODER_STEPS",
    "build_base_pipeline",
    "build_tiny_tokenizer",
    "caption_corpus",
    "compact_codebook",
    "finish_tiny_lm",
    "lm_training_examples",
    "tiny_lm_config",
    "train_pink_lora",
    "train_tiny_lm",
    "train_tiny_vq",
    "tune_tiny_vq_decoder",
    "vq_training_specs",
]
