"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md): a VQ whose decoder takes the shape's colour from
the background cells and the shape from the shape's cells, trained by swapped decoding.

Each step draws 8 seen specs with one jitter each and renders three pictures: A, A' (A with another seen shape colour)
and B (A with another seen shape, same colour). Besides the usual reconstruction of all three, two swapped grids are
decoded (straight-through, weight SWAPW): A's codes in the cells A's shape touches with A''s codes elsewhere must give
A' (so the shape's cells carry no colour the decoder uses), and A's codes with B's in the cells neither shape touches
must give A (so background cells do not depend on the shape). Scores (every 500 steps): validation and held-out
reconstruction (all five), and composed grids for the 80 held-out specs: a same-shape parent's codes in the shape's
cells, a same-colour parent's elsewhere (its commonest background code where its own shape was), decoded and read by the analyzer. No dead-code restarts: the codebook keeps
START's used codes (the shipped VQ's 128). About 1 s a step on the 2-core CPU.

usage (from the repo root): python bench/pilots/swap_vq.py OUT STEPS [SWAPW] [LR] [START] [INVW]
  INVW: weight of a relative squared error pulling the same latents together (the shape's cells of A and A', the
  cells neither shape touches of A and B), so that the codes, not only the decoder, ignore the colour and the shape
  STEPS 0: only score START (default: the shipped VQ)
"""
import sys, json, random, time
import numpy as np, torch
torch.set_num_threads(2)
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
from emu3_hf.tiny_world.world import ImageSpec, SHAPE_COLORS, LORA_COLOR
from emu3_hf.tiny_world.render import render_image
from emu3_hf.tiny_world.recipe import vq_training_specs
from emu3_hf.tiny_world.splits import make_splits
from emu3_hf.tiny_world.analyze import score_image, aggregate_scores
from pilot_pictures import tensor, to_images, touched, warmup_cosine, draw_batch

out, steps = sys.argv[1], int(sys.argv[2])
swap_w = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
inv_w = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
start = sys.argv[5] if len(sys.argv) > 5 else "src/emu3_hf/assets/emu3-tiny/vq_model"
HELD = {("triangle", "purple"), ("circle", "orange"), ("square", "white")}
COLORS = (*SHAPE_COLORS, LORA_COLOR)
SHAPES = ("circle", "square", "triangle")
model = Emu3VisionVQModel.from_pretrained(start).to(torch.float32)
specs = list(vq_training_specs()[0])
rng = np.random.default_rng(0); pyr = random.Random(0)


def recolour(spec):
    choices = [c for c in COLORS if c not in (spec.color, spec.background) and (spec.shape, c) not in HELD]
    return ImageSpec(spec.shape, pyr.choice(choices), spec.size, spec.position, spec.background)


def reshape(spec):
    choices = [s for s in SHAPES if s != spec.shape and (s, spec.color) not in HELD]
    return ImageSpec(pyr.choice(choices), spec.color, spec.size, spec.position, spec.background)


def straight_through(x):
    lat = model.encode_to_latent(x)
    codes = model.quantize(lat.detach())
    q = model.quantize.embedding(codes).permute(0, 1, 4, 2, 3).to(lat.dtype)
    return lat, q, codes, lat + (q - lat).detach()  # (B, 1, C, 8, 8) each but codes


def decode(st):
    st = st.transpose(1, 2)
    return model.decoder(model.post_quant_conv(st), st, first_frame_only=True)[:, 0]


world = make_splits()
val = list(world.images["validation"]); held = list(world.images["heldout"])
seen_all = [s for n in ("train", "validation", "test") for s in world.images[n]]


@torch.no_grad()
def score():
    model.eval()
    res = {}
    for name, group in (("val", val), ("held", held)):
        rec = model.decode(model.encode(tensor([render_image(s) for s in group])))
        res[name] = aggregate_scores([score_image(i, s) for i, s in zip(to_images(rec), group)])["all"]
    grids = []
    for s in held:
        same = dict(size=s.size, position=s.position, background=s.background)
        geo = next(p for p in seen_all if p.shape == s.shape and p.color != s.color and p.color != "white"
                   and all(getattr(p, k) == v for k, v in same.items()))
        col = next(p for p in seen_all if p.color == s.color and p.shape != s.shape
                   and all(getattr(p, k) == v for k, v in same.items()))
        g = model.encode(tensor([render_image(geo), render_image(col)]))
        free = ~touched(col)  # the same-colour parent's background cells; where its shape was, its commonest one
        fill = torch.where(free, g[1], g[1][free].mode().values)
        grids.append(torch.where(touched(s), g[0], fill))
    rec = model.decode(torch.stack(grids))
    res["composed"] = aggregate_scores([score_image(i, s) for i, s in zip(to_images(rec), held)])
    # code invariance on clean validation pictures: the shape's cells under a recolouring, the cells neither shape
    # touches under a reshaping
    recol, resh = [recolour(s) for s in val], [reshape(s) for s in val]
    x = model.encode(tensor([render_image(s) for g in (val, recol, resh) for s in g]))
    a, a2, b = x[:len(val)], x[len(val):2 * len(val)], x[2 * len(val):]
    ta = torch.stack([touched(s) for s in val]); tb = torch.stack([touched(s) for s in resh])
    res["shape_cells_same"] = float((a == a2)[ta].float().mean())
    res["background_cells_same"] = float((a == b)[~(ta | tb)].float().mean())
    model.train()
    return res


def pixel_loss(rec, x):
    err = rec - x
    return err.abs().mean() + err.square().mean()


print("start", json.dumps(score()), flush=True)
if steps:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    t0 = time.time(); logs = []
    for step in range(1, steps + 1):
        batch, jit = draw_batch(specs, rng)
        recol, resh = [recolour(s) for s in batch], [reshape(s) for s in batch]
        x = tensor([render_image(s, j) for group in (batch, recol, resh) for s, j in zip(group, jit)])
        lat, q, _, st = straight_through(x)
        a, a2, b = st[:8], st[8:16], st[16:]
        ta = torch.stack([touched(s, j) for s, j in zip(batch, jit)])[:, None, None]  # (8, 1, 1, 8, 8)
        tb = torch.stack([touched(s, j) for s, j in zip(resh, jit)])[:, None, None]
        mixed = torch.cat([torch.where(ta, a, a2), torch.where(ta | tb, a, b)])
        plain = pixel_loss(decode(st), x)
        swapped = pixel_loss(decode(mixed), torch.cat([x[8:16], x[:8]]))
        vq = torch.nn.functional.mse_loss(q, lat.detach()) + 0.25 * torch.nn.functional.mse_loss(lat, q.detach())
        za, za2, zb = lat[:8], lat[8:16], lat[16:]
        scale = za.detach().square().sum(2).mean().clamp_min(1e-12)
        inv = (((za - za2).square().sum(2) * ta[:, :, 0]).sum() / ta.sum().clamp_min(1)
               + ((za - zb).square().sum(2) * ~(ta | tb)[:, :, 0]).sum() / (~(ta | tb)).sum().clamp_min(1)) / scale
        (plain + vq + swap_w * swapped + inv_w * inv).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        logs.append((float(plain), float(swapped)))
        if step % 100 == 0:
            p, s = np.mean(logs[-100:], 0)
            print(f"step {step} plain {p:.4f} swapped {s:.4f} {time.time() - t0:.0f}s", flush=True)
        if step % 500 == 0 or step == steps:
            print("score", step, json.dumps(score()), flush=True)
            model.eval().save_pretrained(out); model.train()
