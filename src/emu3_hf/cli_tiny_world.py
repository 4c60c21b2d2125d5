"""The work behind ``emu3 tiny-world train`` and ``emu3 tiny-world eval`` (parsers in :mod:`emu3_cli`): the recipe
of :mod:`emu3_hf.tiny_world.recipe` stage by stage, and :func:`emu3_hf.tiny_world.evaluate.evaluate_pipeline`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from .tiny_world.canonical import tune_tiny_vq_canonical
    from .tiny_world.recipe import (build_base_pipeline, compact_codebook, finish_tiny_lm, train_pink_lora,
                                    train_tiny_lm, train_tiny_vq, tune_tiny_vq_decoder)

    for name in ("vq_image_steps", "copies", "lm_batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    for name in ("vq_clip_steps", "vq_decoder_steps", "vq_canonical_steps"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}.")
    for name in ("lm_max_steps", "lora_max_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    if args.lm_epochs <= 0 or args.lm_finish_epochs < 0:
        raise ValueError(f"--lm-epochs must be > 0 and --lm-finish-epochs >= 0, got {args.lm_epochs} and "
                         f"{args.lm_finish_epochs}.")  # fmt: skip
    out = Path(args.output)
    # pipeline/ is stage 2b's output without stage 2c and stage 2c's with it: a run folder keeps one layout
    if args.lm_finish_epochs and (out / "pipeline").exists() and not (out / "lm").exists():
        raise ValueError(f"{out / 'pipeline'} holds an LM trained without the finishing stage (there is no "
                         f"{out / 'lm'}): move that folder to {out / 'lm'} to finish it, or pass "
                         "--lm-finish-epochs 0.")  # fmt: skip
    if not args.lm_finish_epochs and (out / "lm").exists():
        raise ValueError(f"{out} finishes its LM in stage 2c ({out / 'lm'} exists): drop --lm-finish-epochs 0 or "
                         "train into a new folder.")  # fmt: skip
    vq = out / "vq"
    if not (vq / "config.json").is_file():  # stage 1 (resumes its newest checkpoint)
        train_tiny_vq(vq, image_steps=args.vq_image_steps, clip_steps=args.vq_clip_steps, seed=args.seed,
                      show_progress=args.show_progress)  # fmt: skip
    compact = out / "vq-compact"
    if not (compact / "config.json").is_file():  # stage 1b: the codebook merged into VQ_CODES distinct codes
        compact_codebook(vq, compact)
    if args.vq_decoder_steps:  # stage 1c: the decoder trained on the compacted codes (every code unchanged)
        decoder = out / "vq-decoder"
        if not (decoder / "config.json").is_file():
            tune_tiny_vq_decoder(compact, decoder, steps=args.vq_decoder_steps, seed=args.seed,
                                 show_progress=args.show_progress)  # fmt: skip
        compact = decoder
    if args.vq_canonical_steps:  # stage 1d: the decoder draws canonical grids (every code unchanged), the LM's targets
        canonical = out / "vq-canonical"
        if not (canonical / "config.json").is_file():
            tune_tiny_vq_canonical(compact, canonical, steps=args.vq_canonical_steps, seed=args.seed,
                                   show_progress=args.show_progress)  # fmt: skip
        compact = canonical
    print(f"VQ: {compact}")
    base = out / "base"
    if not (base / "model_index.json").is_file():
        build_base_pipeline(compact, base, seed=args.seed)
    options = dict(batch_size=args.lm_batch_size, seed=args.seed, show_progress=args.show_progress)

    def capped(warmup: int) -> dict:  # --lm-max-steps stops each LM stage, its warmup within it
        steps = args.lm_max_steps
        return options if steps is None else {**options, "max_steps": steps, "warmup_steps": min(warmup, steps)}

    lm = out / "lm" if args.lm_finish_epochs else out / "pipeline"  # stage 2c, when run, writes pipeline/
    result = train_tiny_lm(base, lm, copies=args.copies, num_epochs=args.lm_epochs, **capped(100))
    print(f"LM: {result.report()}")
    if args.lm_finish_epochs:
        result = finish_tiny_lm(lm, out / "pipeline", copies=args.copies, num_epochs=args.lm_finish_epochs,
                                **capped(30))  # fmt: skip
        print(f"LM finish: {result.report()}")
    lora = {"show_progress": args.show_progress, "seed": args.seed}
    if args.lora_max_steps is not None:
        lora.update(max_steps=args.lora_max_steps, warmup_steps=min(20, args.lora_max_steps))
    result = train_pink_lora(out / "pipeline", out / "pink-lora", **lora)
    print(f"LoRA: {result.report()}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .tiny_world import EMU3_TINY as DEFAULT_MODEL  # the shipped model, every command's default
    from .tiny_world.evaluate import evaluate_lora, evaluate_pipeline

    sampling = {k: v for k, v in (("guidance_scale", args.guidance_scale), ("top_k", args.top_k)) if v is not None}
    if args.sample:
        sampling["do_sample"] = True
    splits = tuple(name.strip() for name in args.splits.split(",") if name.strip())  # checked by the evaluation
    if args.lora is not None:
        if not (Path(args.lora) / "adapter_config.json").is_file():
            raise ValueError(f"--lora {args.lora} is not an adapter folder (no adapter_config.json).")
        report = evaluate_lora(args.model or DEFAULT_MODEL, args.lora, pink=args.images, others=args.images,
                               seeds=args.seeds, seed=args.seed, splits=splits, **sampling)  # fmt: skip
    else:
        report = evaluate_pipeline(args.model or DEFAULT_MODEL, images=args.images, heldout=args.heldout,
                                   captions=args.captions, videos=args.videos, seeds=args.seeds, seed=args.seed,
                                   splits=splits, **sampling)  # fmt: skip
    text = json.dumps(report, indent=2, default=str)
    if args.output is not None:
        from .utils.atomic import atomic_file

        with atomic_file(args.output) as tmp:
            Path(tmp).write_text(text + "\n")
    print(text)
    return 0


def _tiny_world(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _evaluate}[args.tiny_world_command](args)


COMMANDS = {"tiny-world": _tiny_world}

__all__ = ["COMMANDS"]
