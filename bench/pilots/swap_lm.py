"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs, third part"): the LM of
``lm_pilot.py`` over a swap-trained VQ (``swap_vq.py``), its text-to-image grids augmented with swapped codes.

A swap-trained VQ decodes A's codes with a recoloured copy's codes in the shape's cells as A (the colour comes from
the background cells), and with a reshaped copy's codes in the cells neither shape touches as A too. So for a seen
caption, such a grid is one more way to write its picture. Each of the 8 copies of a seen spec (clean renders) takes,
with chance P each and independently, the shape's cells from a copy in another seen colour and the untouched cells
from a copy with another seen shape. No held-out pair is drawn, captioned or encoded for training. The LM is trained
through the package's trainer, its VQ-encoding step replaced by these grids (as in ``ideal_codes.py``); the scored
pictures are the VQ's decoding of the LM's greedy grids. First reported: the share of augmented grids of seen specs
that decode to their spec (all five). About 10 minutes with ``LM=small``.

usage (from the repo root): python bench/pilots/swap_lm.py VQ OUT [P] [EPOCHS]
  SEED (environment, default 0): the LM's initialisation, data order and the augmentation draws
  LM=small (environment): the spec's ~2 M-parameter LM (hidden 192, 4 layers) instead of the recipe's ~5 M one
"""
import sys, json, random, os
import numpy as np, torch
torch.set_num_threads(2)
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
from emu3_hf.tiny_world.world import ImageSpec, SHAPES, SHAPE_COLORS
from emu3_hf.tiny_world.render import render_image
from emu3_hf.tiny_world.recipe import LM_SPLITS
from pilot_scoring import print_held_and_seen, train_on_grids
from pilot_pictures import touched
from emu3_hf.tiny_world.analyze import score_image, aggregate_scores
from emu3_hf.tiny_world.splits import make_splits

vq_dir, out = sys.argv[1], sys.argv[2]
p_swap = float(sys.argv[3]) if len(sys.argv) > 3 else 0.5
epochs = float(sys.argv[4]) if len(sys.argv) > 4 else 12.0
seed = int(os.environ.get("SEED", 0))
HELD = {("triangle", "purple"), ("circle", "orange"), ("square", "white")}
rng = random.Random(seed)
vq = Emu3VisionVQModel.from_pretrained(vq_dir).eval()
world = make_splits()
train_specs = [s for n in LM_SPLITS for s in world.images[n]]
assert not any((s.shape, s.color) in HELD for s in train_specs)


codes = {}


@torch.no_grad()
def encode(specs):
    todo = [s for s in dict.fromkeys(specs) if s not in codes]
    for k in range(0, len(todo), 64):
        x = torch.from_numpy(np.stack([render_image(s) for s in todo[k:k + 64]])).permute(0, 3, 1, 2).float()
        for s, g in zip(todo[k:k + 64], vq.encode(x / 127.5 - 1)):
            codes[s] = g


def recolours(s):
    return [ImageSpec(s.shape, c, s.size, s.position, s.background) for c in SHAPE_COLORS
            if c not in (s.color, s.background) and (s.shape, c) not in HELD]


def reshapes(s):
    return [ImageSpec(h, s.color, s.size, s.position, s.background) for h in SHAPES
            if h != s.shape and (h, s.color) not in HELD]


encode(train_specs + [r for s in train_specs for r in recolours(s) + reshapes(s)])
rows, augmented = [], []
for copy in range(8):
    for s in train_specs:
        g, ts = codes[s].clone(), touched(s)
        swapped = False
        if rng.random() < p_swap and recolours(s):
            g = torch.where(ts, codes[rng.choice(recolours(s))], g); swapped = True
        if rng.random() < p_swap and reshapes(s):
            b = rng.choice(reshapes(s))
            g = torch.where(ts | touched(b), g, codes[b]); swapped = True
        if swapped:
            augmented.append((s, g))
        rows.append({"codes": g.flatten().tolist(), "grid": [0, 8, 8], "text": s.caption(), "question": None,
                     "answer": None})
with torch.no_grad():
    sample = augmented[:: max(1, len(augmented) // 200)]
    pictures = vq.decode(torch.stack([g for _, g in sample]))
    pictures = ((pictures.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    print("augmented", len(augmented), "of", len(rows), "decode right:",
          json.dumps(aggregate_scores([score_image(i, s) for i, (s, _) in zip(pictures, sample)])), flush=True)
train_on_grids(vq_dir, out, rows, epochs=epochs, seed=seed)
print_held_and_seen(out)
