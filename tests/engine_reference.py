"""A deliberately naive Emu3 image-token generator, the reference the fast engine is tested against.

Every step re-runs the model on each full, unpadded sequence (no KV cache, no batching, no padding, default
positions), takes the full-vocabulary logits, applies guidance on full-vocabulary log-softmax, masks the tokens the
image layout forbids (layout written out as a plain Python list, BAAI's rule), then picks the token:
greedy = argmax; sampling = temperature, top-k, top-p (transformers' ascending-sort formulation), softmax, then an
exponential race with one Exp(1) variable per visual token, computed here in plain Python integers from the noise
function the engine documents (emu3_hf.generation.sampling): two seed words drawn once from the generator, hashed with
the image index (the batch row), the generated step and the code.

A callback's steering is restated just as plainly: ``edit(step, generated)`` may rewrite the lists of ids generated
so far after any step (the next step reads them, there is no cache to roll back), and ``guidance_at(step)`` gives
the guidance weight of each step.
"""

from __future__ import annotations

import torch

VISUAL = "visual"


def layout(height: int, width: int, num_frames: int, ids) -> list:
    """Allowed token at each generated position: VISUAL, or one special id."""
    out: list = []
    for _ in range(num_frames):
        for _ in range(height):
            out += [VISUAL] * width + [ids.eol]
        out.append(ids.eof)
    return out + [ids.eoi, ids.eos]


_WORD = 0xFFFFFFFF


def _mix(x: int) -> int:
    for _ in range(2):
        x ^= x >> 16
        x = (x * 0x45D9F3B) & _WORD
    return x ^ (x >> 16)


def position_noise(words: list[int], image: int, step: int, codes: int) -> torch.Tensor:
    """Exp(1) variables (codes,) of one image at one step, one Python hash per code."""
    row = _mix(words[0] ^ _mix(words[1] ^ _mix(image)))
    cell = _mix(row ^ _mix(step))
    uniform = torch.tensor([((_mix(cell ^ _mix(c)) >> 9) + 0.5) / 2**23 for c in range(codes)], dtype=torch.float32)
    return -torch.log(uniform)


def _last_logits(model, sequence: list[int]) -> torch.Tensor:
    return model(torch.tensor([sequence]), use_cache=False).logits[0, -1].float()  # (V,)


def _top_k(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    if not k or k >= scores.numel():
        return scores
    kth = scores.sort(descending=True).values[k - 1]
    return torch.where(scores < kth, torch.full_like(scores, float("-inf")), scores)


def _top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return scores
    ascending, order = scores.sort()
    cumulative = ascending.softmax(-1).cumsum(-1)
    remove_sorted = cumulative <= 1 - p
    remove_sorted[-1] = False  # always keep the best token
    remove = torch.zeros_like(remove_sorted)
    remove[order] = remove_sorted
    return torch.where(remove, torch.full_like(scores, float("-inf")), scores)


@torch.no_grad()
def reference_generate(
    model,
    prompts: list[list[int]],
    negatives: list[list[int]] | None,
    heights: list[int],
    widths: list[int],
    ids,
    *,
    num_frames: int = 1,
    guidance_scale: float = 3.0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    edit=None,
    guidance_at=None,
) -> torch.Tensor:
    """Generated ids (B, N), rows that finish early padded with the pad id."""
    layouts = [layout(h, w, num_frames, ids) for h, w in zip(heights, widths)]
    steps = max(len(x) for x in layouts)
    vocab = model.config.vocab_size
    visual = torch.arange(ids.visual_offset, ids.visual_offset + ids.codebook_size)
    generated = [[] for _ in prompts]
    words = torch.randint(0, 2**32, (2,), generator=generator).tolist() if do_sample else None
    for step in range(steps):
        allowed = [lay[step] if step < len(lay) else ids.pad for lay in layouts]
        for row, rule in enumerate(allowed):
            if rule != VISUAL:
                generated[row].append(rule)
                continue
            scores = _last_logits(model, prompts[row] + generated[row]).log_softmax(-1)
            scale = guidance_at(step) if guidance_at is not None else guidance_scale
            if scale != 1.0:
                uncond = _last_logits(model, negatives[row] + generated[row]).log_softmax(-1)
                scores = uncond + scale * (scores - uncond)
            keep = torch.zeros(vocab, dtype=torch.bool)
            keep[visual] = True
            scores = torch.where(keep, scores, torch.full_like(scores, float("-inf")))
            if not do_sample:
                generated[row].append(int(scores.argmax()))
                continue
            scores = _top_p(_top_k(scores / temperature, top_k), top_p)
            race = torch.ones(vocab)
            race[visual] = position_noise(words, row, step, ids.codebook_size)
            generated[row].append(int((scores.softmax(-1) / race).argmax()))
        if edit is not None:
            edit(step, generated)
    return torch.tensor(generated)
