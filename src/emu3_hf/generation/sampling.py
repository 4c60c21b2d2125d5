"""Scores and sampling over the visual-token slice of the vocabulary.

Everything here works on ``(B, K)`` tensors whose columns are the ``K`` visual tokens (code ``c`` = column ``c``),
never on the whole vocabulary: the grammar guarantees that a sampling step may only produce a visual token, so the
other ``V - K`` logits would be masked to ``-inf`` anyway.

Classifier-free guidance follows BAAI's recipe (transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``):
``uncond + g * (cond - uncond)`` on log-probabilities. Taking ``log_softmax`` over the slice instead of the full
vocabulary shifts each row by a constant, which changes no argmax, no top-k/top-p set and no softmax.

Sampling draws one ``Exp(1)`` variable per token and picks ``argmax(p / E)``: an exact draw from the categorical
distribution ``p`` (the "exponential race"), with no host synchronisation (unlike ``torch.multinomial`` on some
devices) and with the randomness coming only from the caller's ``torch.Generator``. With a list of generators (one
per row, diffusers' convention) row ``i`` draws its own ``(1, K)`` noise from generator ``i`` exactly as a batch of
one would, and only at the steps where it samples, so row ``i`` of a batch equals that prompt generated alone with
generator ``i``.

Example:
    ```python
    >>> import torch
    >>> from emu3_hf.generation.sampling import SamplingConfig, guided_scores, pick_tokens
    >>> logits = torch.randn(4, 16)  # 2 conditional rows, then their 2 negative rows
    >>> scores = guided_scores(logits, guidance_scale=3.0)  # (2, 16)
    >>> pick_tokens(scores, SamplingConfig(do_sample=False)).tolist() == scores.argmax(-1).tolist()
    True
    ```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..processing.arguments import check_finite


@dataclass(frozen=True)
class SamplingConfig:
    """How a visual token is chosen from the guided scores (BAAI's defaults: sampling, top-k 2048)."""

    do_sample: bool = True
    temperature: float = 1.0
    top_k: int | None = 2048
    top_p: float = 1.0

    def __post_init__(self):
        check_finite("temperature", self.temperature)
        check_finite("top_p", self.top_p)
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}; use do_sample=False.")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be an int >= 1, or None for no cut, got {self.top_k!r}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}.")


def guided_scores(logits: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Combine conditional and negative rows into guided log-probabilities.

    Args:
        logits: (2B, K) with the B conditional rows first, or (B, K) when ``guidance_scale == 1`` (no negative half).

    Returns:
        (B, K) float32 ``uncond + g * (cond - uncond)`` of the log-softmaxed rows.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if guidance_scale == 1.0:
        return logprobs
    cond, uncond = logprobs.chunk(2, dim=0)  # (B, K) each
    return uncond + guidance_scale * (cond - uncond)


def filter_top_k(scores: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the ``top_k`` best scores of each row (ties with the k-th kept), ``-inf`` elsewhere; None = all."""
    if not top_k or top_k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, float("-inf"))


def filter_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of best tokens whose probability reaches ``top_p`` (at least one)."""
    if top_p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # (B, K)
    probs = torch.softmax(sorted_scores, dim=-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the strictly better tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


Generators = torch.Generator | list[torch.Generator] | None


def exponential_noise(
    shape: tuple[int, int],
    dtype: torch.dtype,
    device: torch.device,
    generator: Generators = None,
    active_rows: list[bool] | None = None,
) -> torch.Tensor:
    """(B, K) ~ Exp(1) on ``device``, drawn where each generator lives (a CPU generator may drive a GPU model).

    One generator (or None) draws the whole block. A list draws row ``i`` from ``generator[i]``, and only for rows
    whose ``active_rows`` entry is true (the others get ones and leave their generator untouched).
    """
    if not isinstance(generator, list):
        noise_device = generator.device if generator is not None else device
        return torch.empty(shape, dtype=dtype, device=noise_device).exponential_(1.0, generator=generator).to(device)
    rows = [
        torch.empty((1, shape[1]), dtype=dtype, device=g.device).exponential_(1.0, generator=g).to(device)
        if active_rows is None or active_rows[i]
        else torch.ones((1, shape[1]), dtype=dtype, device=device)
        for i, g in enumerate(generator)
    ]
    return torch.cat(rows)


def sampling_probs(scores: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """The distribution a sampled token is drawn from: ``softmax(top_p(top_k(scores / T)))`` over the last dim of
    ``scores`` (..., K); speculative decoding checks its drafts against exactly this."""
    scores = scores / sampling.temperature
    return torch.softmax(filter_top_p(filter_top_k(scores, sampling.top_k), sampling.top_p), dim=-1)


def pick_tokens(
    scores: torch.Tensor,
    sampling: SamplingConfig,
    generator: Generators = None,
    active_rows: list[bool] | None = None,
) -> torch.Tensor:
    """Choose one column per row of ``scores`` (B, K): argmax when greedy, else a seeded draw. Returns (B,) int64.

    ``generator`` is one ``torch.Generator`` for the batch or a list of one per row; ``active_rows`` (host bools)
    marks the rows that really sample at this step (a per-row generator is not advanced for the others).
    """
    if not sampling.do_sample:
        return scores.argmax(dim=-1)
    probs = sampling_probs(scores, sampling)  # (B, K)
    race = exponential_noise(probs.shape, probs.dtype, probs.device, generator, active_rows)
    race.clamp_min_(torch.finfo(race.dtype).tiny)  # an exact 0 would make a filtered token (p = 0) win with 0/0
    return (probs / race).argmax(dim=-1)


__all__ = ["SamplingConfig", "exponential_noise", "filter_top_k", "filter_top_p", "guided_scores", "pick_tokens",
           "sampling_probs"]
