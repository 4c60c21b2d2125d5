"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs"): a text-to-image-only LM over
a given VQ's codes, scored greedy with no guidance on the 80 held-out specs and the first 80 of `test` + `validation`.

The LM is stage 2b's (``lm_training_examples(8, 0, LM_SPLITS, tasks=("text_to_image",))``, batch 32, lr 2e-3,
warmup 100, seed 0) over VQ, whose encoder makes the training codes and whose decoder draws the scored pictures.
About 9 minutes for the ~2 M LM, 17 for the recipe's ~5 M one, on the 2-core CPU.

usage (from the repo root): python bench/pilots/lm_pilot.py VQ OUT [EPOCHS] [DROP_P] [LM_SIZES_JSON]
  DROP_P: per training caption, the chance to say "shape" for the shape and (independently) to drop the colour word
  LM_SIZES_JSON: overrides of TINY_LM_SIZES, e.g. '{"hidden_size": 192, "intermediate_size": 528,
  "num_hidden_layers": 4}' for the spec's ~2 M LM
"""
import sys, json, random, time, os
import torch
torch.set_num_threads(2)
from emu3_hf.tiny_world.recipe import LM_SPLITS, build_base_pipeline, lm_training_examples, _train_lm
from pilot_scoring import print_held_and_seen
from emu3_hf.tiny_world.world import SHAPES, SHAPE_COLORS

vq, out = sys.argv[1], sys.argv[2]
epochs = float(sys.argv[3]) if len(sys.argv) > 3 else 12.0
drop_p = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
sizes = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
rng = random.Random(0)


def drop(text):
    words = text.split(" ")  # a {size} {color} {shape} ...
    assert words[2] in SHAPE_COLORS and words[3] in SHAPES, text
    if rng.random() < drop_p: words[3] = "shape"
    if rng.random() < drop_p: words[2] = None
    return " ".join(w for w in words if w)


data = lm_training_examples(8, 0, LM_SPLITS, tasks=("text_to_image",))
if drop_p:
    data = data.map(lambda row: {"text": drop(row["text"])})
print(data[0]["text"], data[1]["text"], data[2]["text"], sep=" | ", flush=True)
base = out + "-base"
if not os.path.isdir(base):
    build_base_pipeline(vq, base, **sizes)
t = time.time()
_train_lm(base, out, data, num_epochs=epochs, batch_size=32, learning_rate=2e-3, warmup_steps=100, seed=0,
          show_progress=False)
print("train s", round(time.time() - t), flush=True)
print_held_and_seen(out)
