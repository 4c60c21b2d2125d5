"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs, continued"): classifier-free
guidance (empty negative prompt, greedy) on the 80 held-out specs and 80 seen ones (test + validation).

usage (from the repo root): python bench/pilots/guidance.py [PIPELINE] [SCALES, e.g. 1,1.5,2,3]
"""
import sys, json, time, torch
from emu3_hf.tiny_world.evaluate import _load, score_text_to_image
from emu3_hf.tiny_world.splits import make_splits
torch.set_num_threads(2)
model = sys.argv[1] if len(sys.argv) > 1 else "src/emu3_hf/assets/emu3-tiny"
scales = [float(s) for s in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["1", "1.5", "2", "3"])]
w = make_splits()
held = list(w.images["heldout"])
seen = [s for n in ("test", "validation") for s in w.images[n]][:80]
pipe = _load(model, "cpu")
with torch.no_grad():
    for g in scales:
        t = time.time()
        kw = dict(guidance_scale=g, do_sample=False)
        if g != 1.0:
            kw["negative_prompt"] = ""
        h = score_text_to_image(pipe, held, seed=10**6, batch_size=16, **kw)
        s = score_text_to_image(pipe, seen, seed=0, batch_size=16, **kw)
        print(json.dumps({"g": g, "held": h, "seen": s, "sec": round(time.time() - t)}), flush=True)
