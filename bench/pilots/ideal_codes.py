"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs, continued"): can the tiny LM
compose the held-out (shape, colour) pairs when the visual codes are ideally factorised?

The codes are made up, not a VQ's: every cell holds the id of its 8x8 shape-mask pattern (colour-free; 0 = empty)
and one colour code for (shape colour, background) goes to cell (0,0) ("first"), cell (7,7) ("last") or every empty
cell ("far"); or the shape's colour alone at (0,0) and the background's code in every empty cell ("split"). The LM of stage 2b (text-to-image only, every base split, 8 copies, 12 epochs) learns them through the
package's trainer (its VQ-encoding step replaced by the made-up codes); then the generated grids are painted exactly
and read by the analyzer. About 17 minutes on the 2-core CPU.

usage (from the repo root): python bench/pilots/ideal_codes.py OUT [DROP_P] [EPOCHS] [first|last|far|split] [EXTRA 0|1] [WD]
  DROP_P: per training caption, the chance to drop the colour word and (independently) to say "shape" for the shape
  SEED (environment, default 0): the LM's initialisation and data order
  LM=small (environment): the spec's ~2 M-parameter LM (hidden 192, 4 layers) instead of the recipe's ~5 M one
  EXTRA=1: also hold out (circle, red), (square, blue), (triangle, yellow), (circle, green)
"""
import sys, json, random, time, os
import numpy as np, torch
torch.set_num_threads(2)
from emu3_hf.tiny_world.world import all_image_specs, PALETTE
from emu3_hf.tiny_world.render import shape_mask
from emu3_hf.tiny_world.splits import make_splits
from emu3_hf.tiny_world.recipe import LM_SPLITS, build_base_pipeline, _train_lm
from emu3_hf.tiny_world.analyze import score_image, aggregate_scores
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
from emu3_hf.modeling.configuration_emu3visionvq import Emu3VisionVQConfig
import emu3_hf.training.trainer as trainer_mod
import datasets

out = sys.argv[1]; drop_p = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
epochs = float(sys.argv[3]) if len(sys.argv) > 3 else 12.0
mode = sys.argv[4] if len(sys.argv) > 4 else "first"
extra = sys.argv[5] == "1" if len(sys.argv) > 5 else False
wd = float(sys.argv[6]) if len(sys.argv) > 6 else 0.01
EXTRA = {("circle", "red"), ("square", "blue"), ("triangle", "yellow"), ("circle", "green")} if extra else set()  # header cell: first (0,0), last (7,7), far (every empty cell)
specs_all = all_image_specs()
patterns = {}
pairs = sorted({(s.color, s.background) for s in specs_all})
HEADER0, BG0 = 900, 950
COLS = sorted({s.color for s in specs_all}); BACKS = sorted({s.background for s in specs_all})
def cells(spec):
    m = shape_mask(spec.shape, spec.pixels, spec.center)
    g = np.zeros((8, 8), dtype=np.int64)
    for i in range(8):
        for j in range(8):
            p = m[8*i:8*i+8, 8*j:8*j+8]
            key = p.tobytes()
            if not p.any():
                g[i, j] = 0
            else:
                g[i, j] = patterns.setdefault(key, len(patterns) + 1)
    if mode == "split":  # the shape's colour alone at (0,0), the background's code in every empty cell
        g[g == 0] = BG0 + BACKS.index(spec.background)
        g[0, 0] = HEADER0 + COLS.index(spec.color)
    else:
        h = HEADER0 + pairs.index((spec.color, spec.background))
        if mode == "first": g[0, 0] = h
        elif mode == "last": g[7, 7] = h
        else: g[g == 0] = h
    return g
grids = {s: cells(s) for s in specs_all}
assert len(patterns) < HEADER0, len(patterns)
inv = {v: np.frombuffer(k, dtype=bool).reshape(8, 8) for k, v in patterns.items()}
print("patterns", len(patterns), "pairs", len(pairs), flush=True)

def paint(g):
    if mode == "split":
        bs = [int(c) - BG0 for c in g.flatten() if int(c) >= BG0]
        b = max(set(bs), key=bs.count) if bs else 0
        c0 = int(g[0, 0]) - HEADER0
        color, bg = (COLS[c0] if 0 <= c0 < len(COLS) else "white"), BACKS[b] if b < len(BACKS) else "black"
        return paint_with(g, color, bg)
    hs = [int(c) - HEADER0 for c in g.flatten() if int(c) >= HEADER0]
    h = max(set(hs), key=hs.count) if hs else -1
    color, bg = pairs[h] if 0 <= h < len(pairs) else ("white", "black")
    return paint_with(g, color, bg)

def paint_with(g, color, bg):
    img = np.empty((64, 64, 3), np.uint8); img[...] = PALETTE[bg]
    for i in range(8):
        for j in range(8):
            c = int(g[i, j])
            if c in inv:
                img[8*i:8*i+8, 8*j:8*j+8][inv[c]] = PALETTE[color]
    return img

def caption(spec, rng):
    words = {"size": spec.size, "color": spec.color, "shape": spec.shape}
    if rng.random() < drop_p: words["color"] = None
    if rng.random() < drop_p: words["shape"] = "shape"
    head = " ".join(w for w in (words["size"], words["color"], words["shape"]) if w)
    full = spec.caption()
    rest = full.split(" " + spec.shape + " ", 1)[1]
    return f"a {head} {rest}"

world = make_splits()
train_specs = [s for n in LM_SPLITS for s in world.images[n] if (s.shape, s.color) not in EXTRA]
rng = random.Random(0)
rows = []
for copy in range(8):
    for s in train_specs:
        rows.append({"codes": grids[s].flatten().tolist(), "grid": [0, 8, 8], "text": caption(s, rng), "question": None, "answer": None})
print(rows[0]["text"], rows[1]["text"], rows[2]["text"], sep="\n")
feats = datasets.Features(codes=datasets.Sequence(datasets.Value("int64")), grid=datasets.Sequence(datasets.Value("int64")),
                          text=datasets.Value("string"), question=datasets.Value("string"), answer=datasets.Value("string"))
synth = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]}, features=feats)
trainer_mod.tokenize_dataset = lambda examples, processor, cache, **kw: synth
dummy = datasets.Dataset.from_dict({"image": [None] * len(rows), "text": [r["text"] for r in rows]})

base = out + "-base"
if not os.path.isdir(base):
    cfg = Emu3VisionVQConfig.from_pretrained("src/emu3_hf/assets/emu3-tiny/vq_model"); cfg.codebook_size = 1024
    torch.manual_seed(0)
    small = dict(hidden_size=192, intermediate_size=528, num_hidden_layers=4) if os.environ.get("LM") == "small" else {}
    build_base_pipeline(Emu3VisionVQModel(cfg), base, seed=int(os.environ.get('SEED', 0)), **small)
t = time.time()
_train_lm(base, out, dummy, num_epochs=epochs, batch_size=32, learning_rate=2e-3, warmup_steps=100, seed=int(os.environ.get('SEED', 0)), show_progress=False, weight_decay=wd)
print("train s", round(time.time() - t), flush=True)

from emu3_hf.pipelines import Emu3Pipeline
pipe = Emu3Pipeline.from_pretrained(out); pipe.set_progress_bar_config(disable=True)
held = list(world.images["heldout"]) + [s for n in LM_SPLITS for s in world.images[n] if (s.shape, s.color) in EXTRA]
seen = [s for n in ("test", "validation") for s in world.images[n]][:80]
res = {}
for name, group in (("held", held), ("seen", seen)):
    scores, cellacc, exact, hdr = [], [], [], []
    for k in range(0, len(group), 16):
        chunk = group[k:k+16]
        with torch.no_grad():
            toks = pipe([s.caption() for s in chunk], height=64, width=64, output_type="tokens", guidance_scale=1.0, do_sample=False).images
        for s, tk in zip(chunk, toks):
            g = np.asarray(tk.cpu() if hasattr(tk, "cpu") else tk).reshape(8, 8)
            truth = grids[s]
            cellacc.append(float((g == truth).mean())); exact.append(bool((g == truth).all())); hdr.append(bool(((g >= HEADER0) == (truth >= HEADER0)).all() and (g[truth >= HEADER0] == truth[truth >= HEADER0]).all()))
            scores.append(score_image(paint(g), s))
    res[name] = {"painted": aggregate_scores(scores), "cell": float(np.mean(cellacc)), "exact": float(np.mean(exact)), "header": float(np.mean(hdr))}
    print(name, json.dumps(res[name]), flush=True)
    if name == "held":
        import collections
        per = collections.defaultdict(list)
        for s, sc in zip(group, scores): per[(s.shape, s.color)].append(sc["all"])
        print("per pair", {f"{k[0]}-{k[1]}": round(float(np.mean(v)), 2) for k, v in per.items()}, flush=True)
