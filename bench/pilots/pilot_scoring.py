"""What the issue 11 LM pilots share (not part of the package, not tested): training the LM on given visual grids
through the package's trainer, and scoring a trained pipeline folder greedy, with no guidance, on the 80 held-out
specs and the first 80 of `test` + `validation`, read by the analyzer."""
import json, os, time
import torch
from emu3_hf.tiny_world.evaluate import _load, score_text_to_image
from emu3_hf.tiny_world.splits import make_splits

SMALL_LM = dict(hidden_size=192, intermediate_size=528, num_hidden_layers=4)
"""TINY_WORLD.md's ~2 M-parameter LM, chosen with the environment's LM=small."""


def train_on_grids(vq_dir, out, rows, *, epochs, seed):
    """Stage 2b's LM (the spec's 2 M one with LM=small) trained on ``rows`` (dicts of codes, grid, text, question,
    answer): the trainer's VQ-encoding step is replaced by these rows. The untrained pipeline goes to OUT-base."""
    import datasets
    import emu3_hf.training.trainer as trainer_mod
    from emu3_hf.tiny_world.recipe import build_base_pipeline, _train_lm

    features = datasets.Features(codes=datasets.Sequence(datasets.Value("int64")),
                                 grid=datasets.Sequence(datasets.Value("int64")), text=datasets.Value("string"),
                                 question=datasets.Value("string"), answer=datasets.Value("string"))
    synth = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]}, features=features)
    trainer_mod.tokenize_dataset = lambda examples, processor, cache, **kw: synth
    dummy = datasets.Dataset.from_dict({"image": [None] * len(rows), "text": [r["text"] for r in rows]})
    base = out + "-base"
    if not os.path.isdir(base):
        build_base_pipeline(vq_dir, base, seed=seed, **(SMALL_LM if os.environ.get("LM") == "small" else {}))
    t = time.time()
    _train_lm(base, out, dummy, num_epochs=epochs, batch_size=32, learning_rate=2e-3, warmup_steps=100, seed=seed,
              show_progress=False)
    print("train s", round(time.time() - t), flush=True)


def print_held_and_seen(folder):
    world = make_splits()
    held = list(world.images["heldout"]); seen = [s for n in ("test", "validation") for s in world.images[n]][:80]
    pipe = _load(folder, "cpu")
    with torch.no_grad():
        for name, group, seed in (("held", held, 10**6), ("seen", seen, 0)):
            print(name, json.dumps(score_text_to_image(pipe, group, seed=seed, batch_size=16, guidance_scale=1.0,
                                                       do_sample=False)), flush=True)
