"""Picture helpers the issue 11 VQ pilots share (not part of the package, not tested): tiny-world renders to the
VQ's input range and back, and the 8x8 cells a shape touches."""
import numpy as np, torch
from emu3_hf.tiny_world.render import shape_mask, NO_JITTER


def tensor(images):
    """(B, 64, 64, 3) uint8 renders -> (B, 3, 64, 64) float in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_images(rec):
    """A decoder's (B, 3, 64, 64) output -> (B, 64, 64, 3) uint8."""
    return ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def mask(spec, jitter=NO_JITTER):
    """(64, 64) bool numpy: the pixels of the spec's shape, jittered."""
    cx, cy = spec.center
    return shape_mask(spec.shape, spec.pixels + jitter.ds, (cx + jitter.dx, cy + jitter.dy))


def touched(spec, jitter=NO_JITTER):
    """(8, 8) bool: the cells the shape covers at least one pixel of."""
    return torch.from_numpy(mask(spec, jitter).reshape(8, 8, 8, 8).any(axis=(1, 3)))


def warmup_cosine(opt, steps):
    """The pilots' schedule: 50 warm-up steps, then a cosine to 0 at ``steps``."""
    import math
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1, (i + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))


def draw_batch(specs, rng, size=8):
    """``size`` specs drawn with ``rng`` (numpy), and their jitters: every second one jittered."""
    from emu3_hf.tiny_world.render import Jitter
    return [specs[i] for i in rng.integers(0, len(specs), size)], [Jitter.sample(rng) if k % 2 else NO_JITTER
                                                                   for k in range(size)]
