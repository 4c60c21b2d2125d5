"""Issue 11 pilot (not part of the package, not tested; BENCHMARKS.md, "Held-out pairs, fourth part"): canonical
grids. A picture's text-to-image target is written with codes that factorise by construction: in the cells its shape
touches, the codes of the same picture drawn in red (so they carry the shape, never the colour); in every other cell
one "field" code per (shape colour, background), a codebook row the encoder does not use (the compacted VQ uses 128
of its 1024 rows). The pilot teaches the VQ's decoder to draw these grids, for the seen specs of its training splits
(`train` + `lora`, half of them jittered), while it keeps reconstructing the encoder's own codes. The encoder, the
quantiser's used rows and so every real encoding stay as they were; the decoder, post_quant_conv and the field rows
train.

Scores (every 250 steps): reconstruction of `validation` and of the held-out specs; canonical grids of `validation`
and of the 80 held-out specs (their shape cells from a red picture, a seen pair, and their field code), decoded and
read by the analyzer (all five; for held-out also shape and colour); and the share of validation cells the encoder
maps to a field row (0 while the fields stay apart from the latents).

usage (from the repo root): python bench/pilots/canon_vq.py OUT STEPS [CANONW] [LR] [START]
  the field rows move at 10 x LR; a hinge keeps every training latent twice as far from each field as from its code
  RING (environment, default 0): the red picture's codes also fill the cells within RING cells of the shape
  RANDCOL (environment, default 0): the field of a (colour, background) becomes a learnt linear function of the
    colour's RGB and the background (fitted first to START's fields), and this share of the canonical grids draws the
    shape in a random RGB colour instead (never one the analyzer would read as the held-out colour of that shape), so
    that the decoder sees every shape in a continuum of colours
  FIXMAP=1 (environment, with RANDCOL): the fitted field map stays fixed; only the decoder and post_quant_conv train
  SHAPEW (environment, default 0): the pixels within 2 px of the shape weigh 1 + SHAPEW in both losses
  STEPS 0: only score START (default: the shipped VQ) with fields initialised from its background codes
"""
import sys, json, time, os
import numpy as np, torch
torch.set_num_threads(2)
from emu3_hf.modeling.modeling_emu3visionvq import Emu3VisionVQModel
from emu3_hf.tiny_world.world import ImageSpec, SHAPE_COLORS, LORA_COLOR, BACKGROUND_COLORS, PALETTE
from emu3_hf.tiny_world.render import render_image, NO_JITTER
from emu3_hf.tiny_world.recipe import vq_training_specs
from emu3_hf.tiny_world.splits import make_splits
from emu3_hf.tiny_world.analyze import score_image, aggregate_scores
from pilot_pictures import tensor, to_images, touched, mask, warmup_cosine, draw_batch

CANON = "red"
FIELDS = [(c, b) for c in (*SHAPE_COLORS, LORA_COLOR) for b in BACKGROUND_COLORS if c != b]


def in_red(spec):
    return ImageSpec(spec.shape, CANON, spec.size, spec.position, spec.background)


def field_rows(vq):
    """The field code of each (colour, background): the first codebook rows the encoder does not use."""
    specs = [s for n in ("train", "lora") for s in make_splits().images[n]]
    with torch.no_grad():
        used = set(torch.unique(vq.encode(tensor([render_image(s) for s in specs]))).tolist())
    free = [k for k in range(vq.config.codebook_size) if k not in used]
    return dict(zip(FIELDS, free))


RING = int(os.environ.get("RING", 0))


def canonical(spec, red_codes, fields, jitter=NO_JITTER, ring=None):
    """(8, 8) grid: red_codes (the codes of in_red(spec) with the same jitter) in the cells the shape touches and
    the ``ring`` cells around them (default: env RING, 0), the field elsewhere."""
    ring = RING if ring is None else ring
    near = touched(spec, jitter).float()[None, None]
    near = torch.nn.functional.max_pool2d(near, 2 * ring + 1, 1, ring)[0, 0].bool() if ring else near[0, 0].bool()
    return torch.where(near, red_codes, torch.tensor(fields[(spec.color, spec.background)]))


if __name__ == "__main__":
    out, steps = sys.argv[1], int(sys.argv[2])
    canon_w = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3
    start = sys.argv[5] if len(sys.argv) > 5 else "src/emu3_hf/assets/emu3-tiny/vq_model"
    model = Emu3VisionVQModel.from_pretrained(start).to(torch.float32)
    if os.path.isfile(f"{start}/fields.json"):  # a canon_vq.py folder: its fields, not a fresh choice
        with open(f"{start}/fields.json") as f:
            fields = {(c, b): r for c, b, r in json.load(f)}
    else:
        fields = field_rows(model)
    if start.endswith("emu3-tiny/vq_model"):  # fields start at the commonest background code of their background
        with torch.no_grad():
            emb = model.quantize.embedding.weight
            bg = {b: model.encode(tensor([render_image(ImageSpec("circle", "red", "small", "center", b))]))[0, 0, 0]
                  for b in BACKGROUND_COLORS}
            gen = torch.Generator().manual_seed(0)
            for (c, b), row in fields.items():
                emb[row] = emb[bg[b]] + emb[bg[b]].norm() * torch.randn(emb.shape[1], generator=gen)
    field_ids = torch.tensor(sorted(fields.values()))
    specs = list(vq_training_specs()[0])
    world = make_splits()
    val = list(world.images["validation"]); held = list(world.images["heldout"])
    assert not any((s.shape, s.color) in {(h.shape, h.color) for h in held} for s in specs)
    rng = np.random.default_rng(0)

    def decode(vectors):  # (B, 8, 8, C) code vectors -> (B, 3, 64, 64), differentiable
        q = vectors[:, None].permute(0, 4, 1, 2, 3)
        return model.decoder(model.post_quant_conv(q), q, first_frame_only=True)[:, 0]

    @torch.no_grad()
    def score():
        model.eval()
        res = {}
        for name, group in (("val", val), ("held", held)):
            codes = model.encode(tensor([render_image(s) for s in group]))
            res[name] = aggregate_scores([score_image(i, s) for i, s in zip(to_images(model.decode(codes)), group)])["all"]
            if name == "val":
                res["val_cells_on_fields"] = float(torch.isin(codes, field_ids).float().mean())
            red = model.encode(tensor([render_image(in_red(s)) for s in group]))
            grids = torch.stack([canonical(s, r, fields) for s, r in zip(group, red)])
            agg = aggregate_scores([score_image(i, s) for i, s in zip(to_images(model.decode(grids)), group)])
            res[name + "_canon"] = {k: agg[k] for k in ("all", "shape", "color")}
        model.train(); model.encoder.eval(); model.quant_conv.eval()
        return res

    shape_w = float(os.environ.get("SHAPEW", 0))

    def pixel_loss(rec, x, weight=None):
        err = rec - x
        per = err.abs() + err.square()
        return per.mean() if weight is None else (per * weight).sum() / (weight.sum() * per.shape[1])

    def near_shape(batch, jit):  # (8, 1, 64, 64): 1 + SHAPEW within 2 px of the shape, 1 elsewhere
        masks = torch.stack([torch.from_numpy(mask(s, j))
                             for s, j in zip(batch, jit)]).float()[:, None]
        return 1 + shape_w * torch.nn.functional.max_pool2d(masks, 5, 1, 2)

    print("fields", json.dumps({f"{c}/{b}": r for (c, b), r in fields.items()}), flush=True)
    print("start", json.dumps(score()), flush=True)
    randcol = float(os.environ.get("RANDCOL", 0))
    held_colour = {h.shape: h.color for h in held}
    names = list(PALETTE); table = np.array([PALETTE[n] for n in names], dtype=np.float64)
    field_list = list(fields)

    def field_inputs(rgb, bg):  # (3,) uint8-range RGB, background name -> (6,) the fields' linear inputs
        onehot = torch.zeros(3); onehot[list(BACKGROUND_COLORS).index(bg)] = 1
        return torch.cat([torch.as_tensor(rgb, dtype=torch.float32) / 127.5 - 1, onehot])

    def random_rgb(spec):
        while True:
            rgb = rng.integers(0, 256, 3)
            nearest = names[int(((table - rgb) ** 2).sum(1).argmin())]
            if nearest != held_colour.get(spec.shape) and np.linalg.norm(rgb - PALETTE[spec.background]) >= 100:
                return rgb

    if steps:
        for p in (*model.encoder.parameters(), *model.quant_conv.parameters()):
            p.requires_grad_(False)
        keep = torch.ones(model.config.codebook_size, 1); keep[field_ids] = 0
        emb = model.quantize.embedding.weight
        if randcol:
            emb.requires_grad_(False)
            xs = torch.stack([field_inputs(PALETTE[c], b) for c, b in field_list])
            fmap = torch.nn.Parameter(torch.linalg.lstsq(xs, emb[[fields[f] for f in field_list]].detach()).solution)
            print("field fit residual", float((xs @ fmap.detach() - emb[[fields[f] for f in field_list]]).norm()), flush=True)
            if os.environ.get("FIXMAP") == "1":  # the fitted map stays as it is: only the decoder side learns
                fmap.requires_grad_(False)
        else:
            emb.register_hook(lambda g: g * (1 - keep))  # only the field rows of the codebook move
        model.train()
        model.encoder.eval(); model.quant_conv.eval()  # its BatchNorm statistics must not move, or the codes would
        params = [p for p in model.parameters() if p.requires_grad]
        rest = [p for p in params if p is not emb]
        special = [p for p in ([fmap] if randcol else [emb]) if p.requires_grad]
        groups = [{"params": rest}] + ([{"params": special, "lr": 10 * lr}] if special else [])
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
        sched = warmup_cosine(opt, steps)
        t0 = time.time(); logs = []
        for step in range(1, steps + 1):
            batch, jit = draw_batch(specs, rng)
            x = tensor([render_image(s, j) for s, j in zip(batch, jit)])
            with torch.no_grad():
                lat = model.encode_to_latent(torch.cat([x, tensor([render_image(in_red(s), j) for s, j in zip(batch, jit)])]))
                codes = model.quantize(lat)[:, 0]
                z = lat.permute(0, 1, 3, 4, 2).reshape(-1, lat.shape[2])
                nearest_real = (z - emb[codes.flatten()]).square().sum(1)
            grids = torch.stack([canonical(s, r, fields, j) for s, r, j in zip(batch, codes[8:], jit)])
            if randcol:  # the field cells take the linear field of the (maybe random) colour
                rgbs = [random_rgb(s) if rng.random() < randcol else np.array(PALETTE[s.color]) for s in batch]
                targets = []
                for s, j, rgb in zip(batch, jit, rgbs):
                    img = np.empty((64, 64, 3), np.uint8); img[...] = PALETTE[s.background]
                    img[mask(s, j)] = rgb
                    targets.append(img)
                target = tensor(targets)
                vec = torch.stack([field_inputs(rgb, s.background) for s, rgb in zip(batch, rgbs)]) @ fmap  # (8, 4)
                is_field = torch.isin(grids, field_ids)[..., None]
                canon_vectors = torch.where(is_field, vec[:, None, None], emb[grids])  # (8, 8, 8, 4)
                rec = decode(torch.cat([emb[codes[:8]], canon_vectors]))
                palette_fields = xs @ fmap
            else:
                target = x
                rec = decode(model.quantize.embedding(torch.cat([codes[:8], grids])))
                palette_fields = emb[field_ids]
            weight = near_shape(batch, jit) if shape_w else None
            plain, canon = pixel_loss(rec[:8], x, weight), pixel_loss(rec[8:], target, weight)
            # the fields stay apart: every latent at least twice as far from each field as from its own code
            to_fields = (z[:, None] - palette_fields[None]).square().sum(2)  # (N, F)
            apart = torch.relu(2 * nearest_real[:, None] + 1e-3 - to_fields).mean()
            (plain + canon_w * canon + apart).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            if randcol:  # the codebook's field rows follow the map
                with torch.no_grad():
                    for f, v in zip(field_list, xs @ fmap):
                        emb[fields[f]] = v
            logs.append((plain.item(), canon.item(), apart.item()))
            if step % 50 == 0:
                p, c, a = np.mean(logs[-50:], 0)
                print(f"step {step} plain {p:.4f} canon {c:.4f} apart {a:.5f} {time.time() - t0:.0f}s", flush=True)
            if step % 250 == 0 or step == steps:
                print("score", step, json.dumps(score()), flush=True)
                model.eval().save_pretrained(out); model.train(); model.encoder.eval(); model.quant_conv.eval()
                with open(f"{out}/fields.json", "w") as f:
                    json.dump([[c, b, r] for (c, b), r in fields.items()], f)
