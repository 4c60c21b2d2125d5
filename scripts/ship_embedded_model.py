"""Copy a finished ``emu3 tiny-world train`` run into the package as the embedded model and its LoRA demo.

RUN/pipeline (the trained pipeline folder and its model card) becomes ``src/emu3_hf/assets/emu3-tiny`` and
RUN/pink-lora (adapter + card) ``src/emu3_hf/assets/emu3-tiny-pink-lora``; training leftovers (checkpoints, the VQ code
cache) stay behind, and each gets a model card for the embedded model with the scores of ``--report`` (the JSON of
``emu3 tiny-world eval``) and ``--lora-report`` (of ``emu3 tiny-world eval --lora``). Each folder is assembled next to
its target and swapped in with renames, so a failed copy leaves the shipped model as it was.

The pipeline's LM and VQ weights are stored in float16 (half the bytes) while their configs keep ``"dtype":
"float32"``, so ``from_pretrained`` computes in float32 as before (measured on the shipped model, transformers 5.18 and
5.25: the same greedy tokens, pixels within one uint8 level, the same captions).

Usage: python scripts/ship_embedded_model.py RUN [--report report.json] [--lora-report lora.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "src" / "emu3_hf" / "assets"
LEFTOVERS = ("checkpoint-*", "vq-cache", "runs", "logs")


CARD = """---
library_name: diffusers
license: apache-2.0
pipeline_tag: {tag}
tags:
- emu3
- emu3-hf
- tiny-world
---

# {title}

{body}

Trained on a 2-core CPU with `emu3 tiny-world train` (emu3-hf), on the synthetic shapes world of `docs/TINY_WORLD.md`
(64x64 pictures of one shape, 8-frame clips of one moving shape, one caption grammar); every number below is read off
the outputs by the world's pixel analyzer (`emu3 tiny-world eval`), never by a network.

## Scores

```json
{scores}
```

## Usage

```python
from emu3_hf.pipelines import Emu3Pipeline
from emu3_hf.tiny_world import EMU3_TINY, EMU3_TINY_PINK_LORA

pipe = Emu3Pipeline.from_pretrained(EMU3_TINY)
image = pipe("a small red circle in the top left corner on a black background", height=64, width=64).images[0]
pipe.load_lora_weights(EMU3_TINY_PINK_LORA, adapter_name="pink")  # the colour pink, absent from base training
```
"""
PIPELINE_BODY = """The embedded Emu3 of emu3-hf: BAAI's Emu3 architectures, special tokens and sequence layouts at tiny size.
A Llama-style Emu3 LM of 2.28 M parameters (4 layers, hidden 192, 4 heads / 2 KV heads) over a caption BPE (372
ranks), Emu3's specials and 1024 visual tokens; a MoVQGAN-style VQ of 1.1 M parameters (8x8 pixels and 4 frames per
code; its codebook covered by 128 evenly spaced codes, plus 23 reserved rows, one per (shape colour, background), that
only the LM writes). Text-to-image, image-to-text (`Describe the image.`), text-to-video and video continuation; the
default model of every `emu3` command. Its `generation_config.json` recommends greedy decoding without
classifier-free guidance (the pipelines use it when a call passes no `guidance_scale` / `do_sample`).

How it composes: the LM draws a picture as a *canonical grid*: the VQ's codes of the shape painted red, in the cells
around the shape, and one reserved "field" code, which names the colour and the background, everywhere else. The VQ's
decoder was trained to paint the shape in the field's colour, so the shape's codes carry no colour and the colour no
shape. Pink and the held-out (shape, colour) pairs were never shown to the LM.

Training data: every base caption of the world (the `train`, `validation` and `test` splits: the 520 image captions
that are not held-out pairs, and their clips; 12 epochs, then 2 finishing epochs at a lower learning rate with more
captions, mostly read off clean pictures, and more clips). The scores below come from `emu3 tiny-world eval` with its
defaults: greedy decoding and every prompt once, so each `count` is the number of distinct outputs. `text_to_image`
(104 prompts), `captions` (104 clean and 104 jittered pictures) and `video` (36 prompts) read the `test` +
`validation` captions (seen in training), `heldout` the 80 held-out pairs, which it never saw. It draws seen captions
with all five attributes right 98% of the time and the unseen (shape, colour) pairs 86%. It captions clean pictures
exactly (100%, also over all 520 base pictures), and pictures with the training jitter 75% of the time
(`captions.exact` averages the two); it does not caption the held-out pairs (13% of 80: it names the shape that went
with the colour in training). Clips: motion direction 100%, background 100%, the shape's colour
(50%) and form (39%) often not. The pink adapter draws pink (98% of 90 prompts) and leaves the
other colours as the base model draws them (98% of 104). Weights are stored in float16 and computed in float32
(the configs' dtype)."""
LORA_BODY = """A PEFT LoRA adapter (rank 16, attention and MLP projections of the LM) for the embedded Emu3 of emu3-hf, trained
on text-to-image examples of pink shapes (a colour the base model never saw) mixed with two of each caption the base
model trained on, so that it adds pink without painting the other colours pink."""


def _card(tag: str, title: str, body: str, report: Path | None) -> str:
    scores = json.loads(report.read_text()) if report else {"note": "not evaluated"}
    return CARD.format(tag=tag, title=title, body=body, scores=json.dumps(scores, indent=1))


def store_weights_in_float16(folder: Path, components: tuple[str, ...] = ("model", "vq_model")) -> None:
    """Rewrite the float32 tensors of ``folder/<component>/*.safetensors`` as float16; each component's config must
    name float32 as its dtype, which is what its loader then computes in."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    for name in components:  # every config checked before any file is rewritten
        config = json.loads((folder / name / "config.json").read_text())
        if config.get("dtype", config.get("torch_dtype")) != "float32":
            raise SystemExit(f"{folder / name}/config.json must say \"dtype\": \"float32\" so that float16 weights "
                             "load as float32; save the component in float32 first.")  # fmt: skip
    for name in components:
        for file in sorted((folder / name).glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                metadata = f.metadata()
                tensors = {key: f.get_tensor(key) for key in f.keys()}
            half = {k: v.to(torch.float16) if v.dtype == torch.float32 else v for k, v in tensors.items()}
            save_file(half, str(file), metadata=metadata)


def ship(source: Path, target: Path, required: str, card: str, half: bool = False) -> None:
    if not (source / required).is_file():
        raise SystemExit(f"{source} has no {required}: is the run finished? (emu3 tiny-world train -o RUN)")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(source, staging / "new", ignore=shutil.ignore_patterns(*LEFTOVERS))
        (staging / "new" / "README.md").write_text(card)
        if half:
            store_weights_in_float16(staging / "new")
        if target.exists():
            target.rename(staging / "old")
        (staging / "new").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"{target}: {size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the folder given to `emu3 tiny-world train -o`")
    parser.add_argument("--report", type=Path, default=None, help="emu3 tiny-world eval's JSON for the pipeline")
    parser.add_argument("--lora-report", type=Path, default=None, help="emu3 tiny-world eval --lora's JSON")
    args = parser.parse_args()
    ship(args.run / "pipeline", ASSETS / "emu3-tiny", "model_index.json",
         _card("text-to-image", "emu3-tiny", PIPELINE_BODY, args.report), half=True)  # fmt: skip
    ship(args.run / "pink-lora", ASSETS / "emu3-tiny-pink-lora", "adapter_config.json",
         _card("text-to-image", "emu3-tiny-pink-lora", LORA_BODY, args.lora_report))  # fmt: skip


if __name__ == "__main__":
    main()
