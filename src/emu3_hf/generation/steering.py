"""Row callbacks: what :func:`~emu3_hf.generation.generate_image_tokens` reports after each image row
(:class:`RowProgress`) and how a callback steers the rest (:class:`RowUpdate`), shared by sequential and parallel
decoding (:mod:`~emu3_hf.generation.parallel`), so both fire the same events and apply the same edits.

Example:
    ```python
    >>> from emu3_hf.generation.steering import RowUpdate, as_row_update
    >>> as_row_update({"guidance_scale": 2.0})
    RowUpdate(codes=None, guidance_scale=2.0, stop=False)
    ```
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .grammar import VisionGrammar
from ..processing.arguments import check_finite


@dataclass
class RowProgress:
    """Passed to the ``callback`` of :func:`generate_image_tokens` each time an image row is completed.

    Attributes:
        step: index of the token just generated (its EOL), so ``generated_ids`` holds ``step + 1`` tokens.
        rows_done: image rows each sequence has completed so far (frames included: frame f, row r -> ``f*H + r + 1``).
        total_rows: image rows each sequence generates in all.
        generated_ids: (B, step + 1) view of the ids generated so far (valid during the callback).
        guidance_scale: the guidance weight in force.

    The callback may return a :class:`RowUpdate` (or a dict with its field names) to steer what follows.
    """

    step: int
    rows_done: list[int]
    total_rows: list[int]
    generated_ids: torch.Tensor
    grammar: VisionGrammar
    guidance_scale: float

    @property
    def codes(self) -> torch.Tensor:
        """Partial code grids (B, T, Hmax, Wmax), -1 where not generated yet: decode them for a preview."""
        return self.grammar.codes_from_tokens(self.generated_ids)


@dataclass
class RowUpdate:
    """What a row callback may return to steer the rest of the generation (every field optional).

    Attributes:
        codes: (B, T, Hmax, Wmax) edited partial grids (the shape of :attr:`RowProgress.codes`); the codes already
            generated are replaced and the tokens after them are generated from the edited ones. Edits of rows
            already in the KV cache re-feed them, which needs the dynamic cache.
        guidance_scale: the guidance weight from now on (a call started with guidance 1.0 has no negative rows to
            guide with, so it cannot turn guidance on).
        stop: end generation now; the output holds what exists (codes not generated are -1).
    """

    codes: torch.Tensor | None = None
    guidance_scale: float | None = None
    stop: bool = False


def write_codes(grammar: VisionGrammar, generated: torch.Tensor, done: int, codes: torch.Tensor) -> int | None:
    """Write a callback's edited code grids into the first ``done`` generated ids; returns the earliest step whose id
    changed (None when nothing changed).

    ``codes`` is (B, T, Hmax, Wmax) like :attr:`RowProgress.codes`; only codes already generated are read.
    """
    steps = grammar.code_steps.to(generated.device)
    if tuple(codes.shape) != tuple(steps.shape):
        raise ValueError(f"Edited codes must have the shape of the partial grids {tuple(steps.shape)}, got "
                         f"{tuple(codes.shape)}.")
    known = (steps >= 0) & (steps < done)  # (B, T, Hmax, Wmax)
    values = codes.to(generated.device).long()[known]
    if bool(((values < 0) | (values >= grammar.ids.codebook_size)).any()):
        raise ValueError(f"Edited codes must lie in [0, {grammar.ids.codebook_size}) where they were generated.")
    rows = torch.arange(generated.shape[0], device=generated.device)[:, None, None, None].expand_as(steps)[known]
    before = generated.clone()
    generated[rows, steps[known]] = values + grammar.ids.visual_offset
    changed = torch.nonzero((generated[:, :done] != before[:, :done]).any(0)).flatten()
    return int(changed[0]) if changed.numel() else None



def as_row_update(returned) -> RowUpdate:
    """A row callback's return value (None, a :class:`RowUpdate` or a dict of its fields) as a :class:`RowUpdate`;
    anything else is refused naming the type."""
    if returned is None:
        return RowUpdate()
    if isinstance(returned, RowUpdate):
        return returned
    if isinstance(returned, dict):
        unknown = set(returned) - {"codes", "guidance_scale", "stop"}
        if unknown:
            raise ValueError(f"A row callback returned unknown keys {sorted(unknown)}; use codes, guidance_scale, stop.")
        return RowUpdate(**returned)
    raise TypeError(f"A row callback must return None, a RowUpdate or a dict, got {type(returned).__name__}.")


def checked_guidance_scale(scale: float, halves: int) -> float:
    """A guidance weight a callback asks for, checked: > 0, and 1.0 only when the call has no negative rows
    (``halves == 1``, the batch was not doubled). Returns it as a float."""
    if not check_finite("guidance_scale", scale) > 0:
        raise ValueError(f"guidance_scale must be > 0 (1.0 disables guidance), got {scale}.")
    if halves == 1 and scale != 1.0:
        raise ValueError(
            f"Cannot switch guidance on (guidance_scale={scale}) in a call started with guidance_scale=1.0: it has "
            "no negative prompts to guide with. Start with guidance_scale > 1 and lower it from the callback instead."
        )
    return float(scale)


__all__ = ["RowProgress", "RowUpdate", "as_row_update", "checked_guidance_scale", "write_codes"]
