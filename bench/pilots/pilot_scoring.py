"""The scoring the issue 11 LM pilots share (not part of the package, not tested): a trained pipeline folder drawn
greedy, with no guidance, on the 80 held-out specs and the first 80 of `test` + `validation`, read by the analyzer."""
import json
import torch
from emu3_hf.tiny_world.evaluate import _load, score_text_to_image
from emu3_hf.tiny_world.splits import make_splits


def print_held_and_seen(folder):
    world = make_splits()
    held = list(world.images["heldout"]); seen = [s for n in ("test", "validation") for s in world.images[n]][:80]
    pipe = _load(folder, "cpu")
    with torch.no_grad():
        for name, group, seed in (("held", held, 10**6), ("seen", seen, 0)):
            print(name, json.dumps(score_text_to_image(pipe, group, seed=seed, batch_size=16, guidance_scale=1.0,
                                                       do_sample=False)), flush=True)
