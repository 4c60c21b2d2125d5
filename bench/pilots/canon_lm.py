"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs, fourth part"): the LM of
``lm_pilot.py`` trained on canonical grids (``canon_vq.py``) instead of the VQ's own codes, for text-to-image.

Each seen spec's target is its canonical grid: the codes of the same picture drawn in red in the cells its shape
touches, its (colour, background) field code elsewhere. No held-out pair is drawn, captioned or encoded for training.
The scored pictures are the VQ's decoding of the LM's greedy grids. About 10 minutes with ``LM=small``.

usage (from the repo root): python bench/pilots/canon_lm.py VQ OUT [EPOCHS]
  VQ: a folder written by canon_vq.py (its fields.json names the field rows)
  SEED (environment, default 0): the LM's initialisation and data order
  LM=small (environment): the spec's ~2 M-parameter LM (hidden 192, 4 layers) instead of the recipe's ~5 M one
"""
import sys, json, os
import torch
torch.set_num_threads(2)
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
from emu3_hf.tiny_world.render import render_image
from emu3_hf.tiny_world.recipe import LM_SPLITS
from emu3_hf.tiny_world.splits import make_splits
from canon_vq import canonical, in_red, tensor
from pilot_scoring import print_held_and_seen, train_on_grids

vq_dir, out = sys.argv[1], sys.argv[2]
epochs = float(sys.argv[3]) if len(sys.argv) > 3 else 12.0
seed = int(os.environ.get("SEED", 0))
with open(f"{vq_dir}/fields.json") as f:
    fields = {(c, b): r for c, b, r in json.load(f)}
vq = Emu3VisionVQModel.from_pretrained(vq_dir).eval()
world = make_splits()
held_pairs = {(s.shape, s.color) for s in world.images["heldout"]}
train_specs = [s for n in LM_SPLITS for s in world.images[n]]
assert not any((s.shape, s.color) in held_pairs for s in train_specs)
with torch.no_grad():
    red = vq.encode(tensor([render_image(in_red(s)) for s in train_specs]))
grids = [canonical(s, r, fields) for s, r in zip(train_specs, red)]
rows = [{"codes": g.flatten().tolist(), "grid": [0, 8, 8], "text": s.caption(), "question": None, "answer": None}
        for _ in range(8) for s, g in zip(train_specs, grids)]
train_on_grids(vq_dir, out, rows, epochs=epochs, seed=seed)
print_held_and_seen(out)
