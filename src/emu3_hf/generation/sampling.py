"""Scores and sampling over the visual-token slice of the vocabulary.

Everything here works on ``(..., K)`` tensors whose columns are the ``K`` visual tokens (code ``c`` = column ``c``),
never on the whole vocabulary: the grammar guarantees that a sampling step may only produce a visual token, so the
other ``V - K`` logits would be masked to ``-inf`` anyway.

Classifier-free guidance follows BAAI's recipe (transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``):
``uncond + g * (cond - uncond)`` on log-probabilities. Taking ``log_softmax`` over the slice instead of the full
vocabulary shifts each row by a constant, which changes no argmax, no top-k/top-p set and no softmax.

Sampling is an exponential race: with ``p = softmax(top_p(top_k(scores / T)))`` and one ``E_c ~ Exp(1)`` per code,
``argmax_c(p_c / E_c)`` is an exact draw from ``p`` (equivalently Gumbel-max). The noise is **keyed by position**:
``E`` at generated step ``t`` of image ``i`` is a fixed function of (the call's seed, ``i``, ``t``, ``c``), computed
with integer tensor ops (a counter-based hash, no generator state, no host sync, so it runs unchanged on CPU and
CUDA and next to compiled steps). A sampled token is therefore a deterministic function of its distribution and its
position: sequential decoding, speculative/Jacobi decoding, any batch composition or resume point reach the same
tokens, greedy and sampled alike.

The noise function (:class:`PositionNoise`), all arithmetic on unsigned 32-bit words (``mod 2**32``)::

    mix(x)      = x ^= x >> 16; x *= 0x45D9F3B; x ^= x >> 16; x *= 0x45D9F3B; x ^= x >> 16
    row(k0, k1, i) = mix(k0 ^ mix(k1 ^ mix(i)))             # k0, k1: two words drawn once from the generator
    h(i, t, c)  = mix(mix(row ^ mix(t)) ^ mix(c))
    u           = ((h >> 9) + 0.5) / 2**23                  # float32 in (0, 1), never 0 or 1
    E           = -log(u)                                   # Exp(1), float32

Keys: one ``torch.Generator`` draws ``(k0, k1)`` once per call and image ``i`` is the batch row; a list of generators
(diffusers' convention) draws ``(k0, k1)`` from generator ``i`` for row ``i`` with ``i = 0``, so row ``i`` equals its
prompt generated alone with generator ``i``. Every call draws new words, so one generator used twice gives two
different images, and the same seed gives the same image.

Example:
    ```python
    >>> import torch
    >>> from emu3_hf.generation.sampling import PositionNoise, SamplingConfig, guided_scores, pick_tokens
    >>> logits = torch.randn(4, 16)  # 2 conditional rows, then their 2 negative rows
    >>> scores = guided_scores(logits, guidance_scale=3.0)  # (2, 16)
    >>> pick_tokens(scores, SamplingConfig(do_sample=False)).tolist() == scores.argmax(-1).tolist()
    True
    >>> noise = PositionNoise.from_generator(torch.Generator().manual_seed(0), batch=2, codebook_size=16)
    >>> pick_tokens(scores, SamplingConfig(), noise, step=5).shape  # the draw of step 5 of both images
    torch.Size([2])
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
        logits: (2B, ..., K) with the B conditional rows first, or (B, ..., K) when ``guidance_scale == 1`` (no
            negative half).

    Returns:
        (B, ..., K) float32 ``uncond + g * (cond - uncond)`` of the log-softmaxed rows.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if guidance_scale == 1.0:
        return logprobs
    cond, uncond = logprobs.chunk(2, dim=0)  # (B, ..., K) each
    return uncond + guidance_scale * (cond - uncond)


def filter_top_k(scores: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Keep the ``top_k`` best scores of each row (ties with the k-th kept), ``-inf`` elsewhere; None = all."""
    if not top_k or top_k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]  # (..., 1)
    return scores.masked_fill(scores < kth, float("-inf"))


def filter_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of best tokens whose probability reaches ``top_p`` (at least one)."""
    if top_p >= 1.0:
        return scores
    sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # (..., K)
    probs = torch.softmax(sorted_scores, dim=-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the strictly better tokens
    drop_sorted = mass_before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


Generators = torch.Generator | list[torch.Generator] | None

_WORD = 0xFFFFFFFF
_MULTIPLIER = 0x45D9F3B  # < 2**31: a 32-bit word times it fits int64 exactly, no overflow on any backend


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The 32-bit integer hash of :class:`PositionNoise` on int64 tensors holding words in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIER) & _WORD
    x = x ^ (x >> 16)
    x = (x * _MULTIPLIER) & _WORD
    return x ^ (x >> 16)


class PositionNoise:
    """Exp(1) sampling noise keyed by (seed words, image index, step, code): see the module docstring for the exact
    function. ``row_keys`` is (B,) int64, one hashed key per image; ``codebook_size`` the number of codes ``K``."""

    def __init__(self, row_keys: torch.Tensor, codebook_size: int):
        self.row_keys = row_keys  # (B,)
        self.code_keys = mix32(torch.arange(codebook_size, device=row_keys.device))  # (K,)

    @classmethod
    def from_generator(
        cls, generator: Generators, batch: int, codebook_size: int, device: torch.device | str = "cpu"
    ) -> "PositionNoise":
        """Draw the seed words once: from one generator (or torch's default one) for the whole batch, image index =
        row; or from ``generator[i]`` for row ``i`` (a list of one per row), image index 0."""
        gens = generator if isinstance(generator, list) else [generator]
        words = torch.stack([
            torch.randint(0, 2**32, (2,), generator=g, device=g.device if g is not None else "cpu").to(device)
            for g in gens
        ])  # (G, 2) int64
        if isinstance(generator, list):
            index = torch.zeros(batch, dtype=torch.long, device=device)
        else:
            index, words = torch.arange(batch, device=device), words.expand(batch, 2)
        return cls(mix32(words[:, 0] ^ mix32(words[:, 1] ^ mix32(index))), codebook_size)

    def exponential(self, steps: torch.Tensor) -> torch.Tensor:
        """(B, n, K) float32 Exp(1) noise at the generated steps ``steps`` (n,) or (B, n) int64 of every image."""
        steps = steps.to(self.row_keys.device).expand(self.row_keys.shape[0], -1)  # (B, n)
        cells = mix32(self.row_keys[:, None] ^ mix32(steps))  # (B, n)
        words = mix32(cells[..., None] ^ self.code_keys)  # (B, n, K)
        uniform = ((words >> 9).float() + 0.5) * 2.0**-23  # exact in float32: 23 bits + the half
        return -torch.log(uniform)


def sampling_probs(scores: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """The distribution a sampled token is drawn from: ``softmax(top_p(top_k(scores / T)))`` over the last dim of
    ``scores`` (..., K)."""
    scores = scores / sampling.temperature
    return torch.softmax(filter_top_p(filter_top_k(scores, sampling.top_k), sampling.top_p), dim=-1)


def pick_tokens(
    scores: torch.Tensor,
    sampling: SamplingConfig,
    noise: PositionNoise | None = None,
    step: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Choose one column of ``scores`` (B, K) or (B, n, K): argmax when greedy, else the exponential race with the
    position-keyed ``noise`` of generated step ``step`` (an int for (B, K) scores, an (n,) or (B, n) tensor of steps
    for (B, n, K) scores). Returns (B,) or (B, n) int64."""
    if not sampling.do_sample:
        return scores.argmax(dim=-1)
    if noise is None or step is None:
        raise ValueError("Sampling needs `noise` (a PositionNoise, e.g. PositionNoise.from_generator(generator, "
                         "batch, codebook_size)) and the generated `step` of each token; pass both, or greedy.")
    flat = scores.ndim == 2
    if flat:
        scores = scores[:, None]
        # an int becomes a device tensor by a fill kernel: no host-to-device copy, no sync
        step = torch.full((1,), step, device=noise.row_keys.device) if isinstance(step, int) else step.reshape(-1)
    race = noise.exponential(step)  # (B, n, K)
    picks = (sampling_probs(scores, sampling) / race).argmax(dim=-1)  # (B, n)
    return picks[:, 0] if flat else picks


__all__ = ["PositionNoise", "SamplingConfig", "filter_top_k", "filter_top_p", "guided_scores", "mix32", "pick_tokens",
           "sampling_probs"]
