"""Exact parallel decoding of image tokens: Jacobi decoding with position-keyed sampling noise.

Sequential decoding pays one forward pass per token. Jacobi decoding keeps a window of *draft* tokens after the
settled prefix and feeds the whole window in one forward pass; causal attention yields the model's distribution
``p_t`` at every window position ``t``, conditioned on the prefix and on the drafts before ``t``. Because the
sampling noise is keyed by position (:class:`~emu3_hf.generation.sampling.PositionNoise`), the token sequential
decoding would pick at ``t`` is a deterministic function of ``p_t`` and ``t`` alone: greedy and sampled decoding are
the same fixed-point problem. Each pass picks the token of every window position; the leading drafts equal to their
pick are settled, the first draft that differs is replaced by its pick (conditioned on a settled prefix, so it is
the sequential token), and the positions after it take this pass's picks as their next drafts (Jacobi iteration).
A pass settles at least one token; all of them if the window was already right. The output equals sequential
decoding token for token, for a seed as for greedy decoding (up to float rounding of ties between two logits, the
same caveat as any change of batch shape).

Drafts for positions a window reaches for the first time (no pick computed yet) are the last pick computed. Drafts
from the token above (same column, previous row) measured worse on the embedded model (more passes), so they are not
used.

Emu3 specifics:

- the grammar's forced tokens (EOL, EOF, EOI, EOS, pad) are known in advance: never drafted, always accepted;
- CFG: every window is fed to both halves of the doubled batch, and picks use the guided scores, as sequential
  decoding does;
- rows of a batch (mixed sizes included) settle independently: row ``b`` knows its steps ``[0, a_b)``; the KV cache
  keeps the steps every row has settled and is rolled back with ``cache.crop(-n)``; a row's settled tokens beyond
  that are fed again as known tokens;
- caches: a ``DynamicCache`` is fed the window as it is (``n <= window`` tokens); a ``StaticCache`` (transformers >=
  5.24 rolls it back) is fed exactly ``window`` tokens a pass (the tail past the schedule is ignored), with a
  fixed-shape mask, so the window forward compiles to one graph (CUDA graphs on a GPU, ``compile_decode``);
- row callbacks fire in order once every row has settled an image row; an edit of codes or a change of guidance
  discards what was settled after that row (as sequential decoding would never have generated it).

The loop reads one number from the device per forward pass (how far the slowest row got), not one per token, and
verifies a whole window with tensor ops (no Python loop over positions).

Example:
    ```python
    >>> out = generate_image_tokens(model, ids, negative_input_ids=neg, height=32, width=32,
    ...                             parallel_decoding="jacobi", parallel_window=16)
    ```
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Callable

import torch
from torch import nn
from transformers.cache_utils import Cache

from ..modeling.transformers_compat import STATIC_CACHE_CAN_CROP
from .grammar import SAMPLE, SpecialIds, VisionGrammar
from .sampling import PositionNoise, SamplingConfig, guided_scores, pick_tokens
from .steps import decode_window, visual_logits
from .steering import RowProgress, RowUpdate, as_row_update, checked_guidance_scale, write_codes


class JacobiDecoder:
    """Jacobi decoding of one :func:`~emu3_hf.generation.generate_image_tokens` call.

    Args:
        model: the Emu3 causal LM (decoder at ``model.base_model``, head at ``model.get_output_embeddings()``).
        ids: the special ids; ``grammar``: the batch's schedule (on the model's device).
        sampling: how tokens are chosen (greedy or sampled).
        noise: the call's position-keyed sampling noise (None when greedy).
        window: draft tokens verified per forward pass (>= 1).
        static: the cache is a ``StaticCache`` (fixed-size windows and masks; eager or sdpa attention).
        window_fn: :func:`~emu3_hf.generation.engine.decode_window`, or its compiled form.
    """

    def __init__(
        self,
        model: nn.Module,
        ids: SpecialIds,
        grammar: VisionGrammar,
        sampling: SamplingConfig,
        noise: PositionNoise | None,
        window: int,
        static: bool = False,
        window_fn: Callable = decode_window,
    ):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"parallel_window must be an int >= 1 (draft tokens per forward pass), got {window!r}.")
        backend = model.config._attn_implementation
        if static and backend not in ("eager", "sdpa"):
            raise ValueError(
                f"parallel_decoding with the static cache builds additive masks that attn_implementation={backend!r} "
                "does not take; use 'sdpa' or 'eager', or cache_implementation='dynamic'."
            )
        if static and not STATIC_CACHE_CAN_CROP:
            raise ValueError(
                "parallel_decoding with the static cache needs a StaticCache that can be rolled back "
                "(transformers >= 5.24); use cache_implementation='dynamic' (and compile_decode=False)."
            )
        self.decoder, self.head = model.base_model, model.get_output_embeddings()
        self.ids, self.grammar, self.sampling, self.noise = ids, grammar, sampling, noise
        self.window, self.static, self.window_fn = window, static, window_fn

    @property
    def cache_room(self) -> int:
        """Cache slots needed beyond the prompt and the fed steps: a static window may run past the schedule."""
        return self.window if self.static else 0

    @torch.no_grad()
    def decode(
        self,
        hidden: torch.Tensor,  # (B2, D) the prefill's last hidden state: the distribution of step 0
        cache: Cache,  # a DynamicCache holding the prompts
        key_mask: torch.Tensor,  # (B2, L + feed_until) 1 = attend (prompt padding, then every generated step)
        first_position: torch.Tensor,  # (B2, 1) position of step 0
        guidance_scale: float,
        callback: Callable[[RowProgress], RowUpdate | dict | None] | None = None,
    ) -> torch.Tensor:
        """Decode to the end of the schedule (or to a callback's stop); returns the generated ids (B, n)."""
        g, ids, window = self.grammar, self.ids, self.window
        batch, last = g.batch_size, g.feed_until  # steps after `last` are all forced
        halves = hidden.shape[0] // batch
        prompt_len = key_mask.shape[1] - last
        device = hidden.device
        # Drafts to start from: code 0; forced ids as given.
        tokens = torch.where(g.forced == SAMPLE, ids.visual_offset, g.forced)  # (B, N)
        if self.static:  # fixed windows read up to `window` ids past the schedule: pad ids, never used
            tokens = torch.cat([tokens, tokens.new_full((batch, window), ids.pad)], dim=1)
            full_mask = self._static_mask_source(key_mask)
        accepted = torch.zeros(batch, dtype=torch.long, device=device)  # row b has settled steps [0, a_b)
        scale, fired = guidance_scale, -1
        # Invariant between passes: the cache holds steps [0, c) and every row has settled step c; after a pass it
        # holds [0, fed).
        c, end, fed, window_hidden = -1, 0, 0, hidden[:, None]  # first "pass": the prefill gives p for step 0
        while True:
            picks = self._picks(window_hidden, scale, batch, c, end)  # (B, n) codes for steps c+1 .. end
            accepted = self._verify(tokens, accepted, picks, c, end)
            settled = int(accepted.min())  # the one host read per forward pass
            next_c = min(settled - 1, end)
            if settled > last:  # every sampled step is settled; the rest is forced
                settled = g.num_steps
            if callback is not None:
                k = bisect_right(g.row_steps, fired)
                while k < len(g.row_steps) and g.row_steps[k] < settled:
                    step, k = g.row_steps[k], k + 1
                    fired = step
                    progress = RowProgress(step=step, rows_done=g.rows_done[step], total_rows=g.total_rows,
                                           generated_ids=tokens[:, : step + 1], grammar=g, guidance_scale=scale)
                    update = as_row_update(callback(progress))
                    if update.stop:
                        return tokens[:, : step + 1].clone()
                    discard = False
                    if update.guidance_scale is not None:
                        new_scale = checked_guidance_scale(update.guidance_scale, halves)
                        discard, scale = new_scale != scale, new_scale
                    if update.codes is not None:
                        first = write_codes(g, tokens, step + 1, update.codes)
                        if first is not None:  # ids from `first` on changed: their keys/values go
                            discard, next_c = True, min(next_c, first)
                    if discard:  # what was settled after this row came from the old codes / guidance
                        accepted = accepted.clamp(max=step + 1)
                        settled, next_c = step + 1, min(next_c, step)
                        break
            if settled > last:
                return tokens[:, : g.num_steps].clone()
            self._redraft(tokens, accepted, picks, c, end, next_c)
            if fed > next_c:
                cache.crop(-(fed - next_c))  # negative = how many tokens to remove (transformers >= 5.18)
            c, end = next_c, min(next_c + window, last)
            fed = c + window if self.static else end
            mask = self._window_mask(full_mask, prompt_len + c) if self.static else key_mask[:, : prompt_len + end]
            window_hidden = self.window_fn(
                self.decoder,
                tokens[:, c:fed].repeat(halves, 1),  # (B2, n): the same tokens for both CFG halves
                first_position + torch.arange(c, fed, device=device),
                cache,
                mask,
            )[:, : end - c]  # (B2, n, D): the distributions of steps c+1 .. end

    def _static_mask_source(self, key_mask: torch.Tensor) -> torch.Tensor:
        """(B2, 1, 1, S) additive mask over the whole static cache (S = prompt + fed steps + window): padding only."""
        full = torch.cat([key_mask, key_mask.new_ones(key_mask.shape[0], self.window)], dim=1)  # (B2, S)
        dtype = self.head.weight.dtype
        additive = torch.zeros(full.shape, dtype=dtype, device=full.device)
        return additive.masked_fill(full == 0, torch.finfo(dtype).min)[:, None, None, :]

    def _window_mask(self, padding: torch.Tensor, first_slot: int) -> torch.Tensor:
        """(B2, 1, window, S): ``padding`` plus causality, query ``i`` (cache slot ``first_slot + i``) sees the
        slots up to its own."""
        slots = torch.arange(padding.shape[-1], device=padding.device)  # (S,)
        future = slots > first_slot + torch.arange(self.window, device=padding.device)[:, None]  # (window, S)
        return padding.masked_fill(future, torch.finfo(padding.dtype).min)

    def _picks(self, hidden: torch.Tensor, scale: float, batch: int, c: int, end: int) -> torch.Tensor:
        """(B2, n, D) hidden states of steps c+1 .. end -> (B, n) the code sequential decoding picks at each step
        given the tokens before it (argmax, or the exponential race with the position-keyed noise)."""
        logits = visual_logits(hidden, self.head, self.ids)  # (B2, n, K)
        scores = guided_scores(logits if scale != 1.0 else logits[:batch], scale)  # (B, n, K)
        steps = torch.arange(c + 1, end + 1, device=hidden.device)  # (n,)
        return pick_tokens(scores, self.sampling, self.noise, steps)

    def _verify(self, tokens, accepted, picks, c: int, end: int) -> torch.Tensor:
        """Check the drafts of steps c+1 .. end in ``tokens`` (B, N) against ``picks`` (B, n); write each row's
        first wrong draft's pick (right: the steps before it are settled); return the new settled counts (B,)."""
        n, offset = end - c, self.ids.visual_offset
        steps = torch.arange(c + 1, end + 1, device=tokens.device)  # (n,)
        drafts = tokens[:, c + 1 : end + 1]  # (B, n)
        checked = (self.grammar.forced[:, c + 1 : end + 1] == SAMPLE) & (steps >= accepted[:, None])
        ok = ~checked | (drafts - offset == picks)
        kept = ok.long().cumprod(-1).sum(-1)  # (B,) leading drafts kept
        rejected = kept < n
        at = kept.clamp(max=n - 1)[:, None]  # (B, 1) the first wrong position, where there is one
        where = c + 1 + at
        fix = torch.where(rejected[:, None], picks.gather(1, at) + offset, tokens.gather(1, where))
        tokens.scatter_(1, where, fix)
        return torch.maximum(accepted, c + 1 + kept + rejected.long())

    def _redraft(self, tokens, accepted, picks, c: int, end: int, next_c: int) -> None:
        """New drafts for the unsettled sampled steps of the next window, next_c+1 .. next_c+window: this pass's
        pick where one was computed (t <= end), else the last pick (drafting from the token above measured worse on
        the embedded model, BENCHMARKS.md)."""
        high = min(next_c + self.window, self.grammar.feed_until)
        if high <= next_c:
            return
        steps = torch.arange(next_c + 1, high + 1, device=tokens.device)  # (R,)
        fresh = (self.grammar.forced[:, next_c + 1 : high + 1] == SAMPLE) & (steps >= accepted[:, None])
        drafts = picks[:, steps.clamp(max=end) - (c + 1)] + self.ids.visual_offset  # (B, R)
        span = tokens[:, next_c + 1 : high + 1]
        span.copy_(torch.where(fresh, drafts, span))


__all__ = ["JacobiDecoder"]
