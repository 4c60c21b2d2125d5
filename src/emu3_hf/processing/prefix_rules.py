"""BAAI's prefix-constraint rule for transformers' ``PrefixConstrainedLogitsProcessor``, restated (not copied).

BAAI's README generates images with ``model.generate`` plus a Python callback that, per row and per token, returns
the ids the image layout allows next. The rule, per batch row: ``offset = len(sequence) - index of the FIRST img
token``; ``offset % (W+1) == 0`` -> EOL; ``offset == (W+1)*H + 1`` -> EOF; ``+2`` -> EOI; ``+3`` -> EOS; beyond ->
pad; otherwise any visual token. It is kept as BAAI wrote it (single frames only; for W = 0 ... its arithmetic is
BAAI's) so scripts written for BAAI's processor behave identically; the engine's schedule comes from
:func:`~emu3_hf.processing.layout.frames_template` instead, and tests check that the two agree.

This module imports only torch and its sibling ``layout`` so that it can be exported as Hub remote code.

Example:
    ```python
    >>> rules = BaaiPrefixRules(special, heights=[3], widths=[4])
    >>> rules(0, prompt_ids)  # -> every visual id: the first token after [IMG] is a code
    ```
"""

from __future__ import annotations

from typing import Sequence

import torch

from .layout import SpecialIds


class BaaiPrefixRules:
    """``prefix_allowed_tokens_fn(batch_id, ids) -> allowed ids`` following BAAI's prefix-constraint helper.

    Build a fresh instance for every ``generate`` call: the first-img-token index of each row is cached.
    """

    def __init__(self, token_ids: SpecialIds, heights: Sequence[int], widths: Sequence[int]):
        self.ids = token_ids
        self.heights, self.widths = list(heights), list(widths)
        self.visual = list(range(token_ids.visual_offset, token_ids.visual_offset + token_ids.codebook_size))
        self._first_img: dict[int, int] = {}

    def __call__(self, batch_id: int, sequence: torch.Tensor) -> list[int]:
        if batch_id not in self._first_img:
            hits = torch.nonzero(sequence == self.ids.img).flatten()
            if hits.numel() == 0:
                raise ValueError(f"Row {batch_id} has no image token ({self.ids.img}); the prompt must end with it.")
            self._first_img[batch_id] = int(hits[0])
        offset = sequence.shape[0] - self._first_img[batch_id]
        height, width = self.heights[batch_id], self.widths[batch_id]
        image_end = (width + 1) * height
        if offset % (width + 1) == 0:
            return [self.ids.eol]
        if offset == image_end + 1:
            return [self.ids.eof]
        if offset == image_end + 2:
            return [self.ids.eoi]
        if offset == image_end + 3:
            return [self.ids.eos]
        if offset > image_end + 3:
            return [self.ids.pad]
        return self.visual


__all__ = ["BaaiPrefixRules"]
