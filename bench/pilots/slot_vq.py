"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs, continued"): a colour-slot VQ.
Fine-tune a VQ on pairs (a seen picture, the same picture with another seen colour, one jitter) so that recolouring
the shape changes only the code of cell (0,0): every other cell's latent is pulled to the other copy's (relative
squared error, weight WEIGHT), optionally each copy's latents to the other copy's codes (CROSS), and with "swap" the
recoloured copy is decoded from the original's codes but its own (0,0). Scores (every 1000 steps): validation and
held-out reconstruction (all five), the share of cells other than (0,0) keeping their code when recoloured, the share
of recolourings that change (0,0), and composed grids (a same-shape parent's codes with a same-colour parent's (0,0)).
About 0.46 s a step on the 2-core CPU.

usage (from the repo root): python bench/pilots/slot_vq.py OUT STEPS WEIGHT [LR] [START] [CROSS] [swap]
  STEPS 0: only score START (default: the shipped VQ)
"""
import sys, json, math, random, time
import numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(2)
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
from emu3_hf.training.vq import vq_forward, VQForward
from emu3_hf.tiny_world.world import ImageSpec, SHAPE_COLORS, LORA_COLOR
from emu3_hf.tiny_world.render import render_image, Jitter
from emu3_hf.tiny_world.recipe import vq_training_specs
from emu3_hf.tiny_world.splits import make_splits
from emu3_hf.tiny_world.analyze import score_image, aggregate_scores
from pilot_pictures import tensor

out, steps, weight = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 5e-4
start = sys.argv[5] if len(sys.argv) > 5 else "src/emu3_hf/assets/emu3-tiny/vq_model"
cross = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
swap = len(sys.argv) > 7 and sys.argv[7] == "swap"  # decode the recoloured copy from the original's codes but its own (0,0)  # weight of the cross-commitment (each copy's latents to the other's codes)
HELD = {("triangle", "purple"), ("circle", "orange"), ("square", "white")}
COLORS = (*SHAPE_COLORS, LORA_COLOR)
model = Emu3VisionVQModel.from_pretrained(start).to(torch.float32)
specs = list(vq_training_specs()[0])
rng = np.random.default_rng(0); pyr = random.Random(0)
def recolour(spec):
    choices = [c for c in COLORS if c != spec.color and c != spec.background and (spec.shape, c) not in HELD]
    return ImageSpec(spec.shape, pyr.choice(choices), spec.size, spec.position, spec.background)
keep = torch.ones(8, 8, dtype=torch.bool); keep[0, 0] = False
world = make_splits()
val = list(world.images["validation"]); held = list(world.images["heldout"])
seen_all = [s for n in ("train", "validation", "test") for s in world.images[n]]

@torch.no_grad()
def score(model):
    model.eval()
    res = {}
    for name, group in (("val", val), ("held", held)):
        x = tensor([render_image(s) for s in group])
        rec = model.decode(model.encode(x))
        imgs = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        res[name] = aggregate_scores([score_image(i, s) for i, s in zip(imgs, group)])["all"]
    # invariance: validation pictures vs a recoloured copy, share of cells (not (0,0)) with the same code
    x = tensor([render_image(s) for s in val]); y = tensor([render_image(recolour(s)) for s in val])
    cx, cy = model.encode(x), model.encode(y)
    res["same_code"] = float((cx == cy)[:, keep].float().mean())
    res["slot_differs"] = float((cx[:, 0, 0] != cy[:, 0, 0]).float().mean())
    # composed grids: geometry from a same-shape parent (another colour), slot from a same-colour parent
    grids, targets = [], []
    for s in held:
        geo = next(p for p in seen_all if p.shape == s.shape and p.size == s.size and p.position == s.position
                   and p.background == s.background and p.color not in ("white",) and p.color != s.color)
        col = next(p for p in seen_all if p.color == s.color and p.background == s.background and p.shape != s.shape
                   and p.size == s.size and p.position == s.position)
        g = model.encode(tensor([render_image(geo), render_image(col)]))
        comp = g[0].clone(); comp[0, 0] = g[1][0, 0]
        grids.append(comp); targets.append(s)
    rec = model.decode(torch.stack(grids))
    imgs = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    res["composed"] = aggregate_scores([score_image(i, s) for i, s in zip(imgs, targets)])
    model.train()
    return res

print("start", json.dumps(score(model)), flush=True)
if steps:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1, (i + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    last_used = torch.zeros(model.codebook_size, dtype=torch.long)
    t0 = time.time(); logs = []
    for step in range(1, steps + 1):
        batch = [specs[i] for i in rng.integers(0, len(specs), 8)]
        jit = [Jitter.sample(rng) for _ in batch]
        x = tensor([render_image(s, j) for s, j in zip(batch, jit)] + [render_image(recolour(s), j) for s, j in zip(batch, jit)])
        if swap:
            lat = model.encode_to_latent(x)
            codes = model.quantize(lat.detach())
            qv = model.quantize.embedding(codes).permute(0, 1, 4, 2, 3).to(lat.dtype)
            st = lat + (qv - lat).detach()
            mixed = torch.cat([st[:8], st[:8]], 0).clone()
            mixed[8:, :, :, 0, 0] = st[8:, :, :, 0, 0]
            mixed = mixed.transpose(1, 2)
            rec = model.decoder(model.post_quant_conv(mixed), mixed, first_frame_only=True)[:, 0]
            o = VQForward(reconstruction=rec, latents=lat, quantized=qv, codes=codes)
        else:
            o = vq_forward(model, x)
        err = o.reconstruction - x
        loss = err.abs().mean() + err.square().mean()
        loss = loss + F.mse_loss(o.quantized, o.latents.detach()) + 0.25 * F.mse_loss(o.latents, o.quantized.detach())
        z, zr = o.latents[:8, 0], o.latents[8:, 0]
        inv = (z - zr).square().sum(1)[:, keep].mean() / z.detach().square().sum(1).mean().clamp_min(1e-12)
        if cross:
            q, qr = o.quantized[:8, 0].detach(), o.quantized[8:, 0].detach()
            xc = ((zr - q).square().sum(1)[:, keep].mean() + (z - qr).square().sum(1)[:, keep].mean()) / q.shape[1]
            loss = loss + cross * xc
        (loss + weight * inv).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            last_used[o.codes.flatten().unique()] = step
            dead = (last_used < step - 100).nonzero().flatten()
            if step % 20 == 0 and len(dead):
                pool = o.latents.detach().permute(0, 1, 3, 4, 2).reshape(-1, o.latents.shape[2])
                model.quantize.embedding.weight[dead] = pool[torch.randint(0, len(pool), (len(dead),))]
                last_used[dead] = step
        logs.append((float(loss), float(inv)))
        if step % 100 == 0:
            l, i = np.mean(logs[-100:], 0)
            print(f"step {step} loss {l:.4f} inv {i:.4f} {time.time() - t0:.0f}s", flush=True)
        if step % 1000 == 0 or step == steps:
            print("score", step, json.dumps(score(model)), flush=True)
    model.eval().save_pretrained(out)
