"""The vision-token grammar of Emu3, precomputed as tensors.

After an image prompt (``... <boi> "H*W" <img>``) Emu3 writes, for each of ``T`` latent frames, ``H`` rows of
``W`` visual tokens each closed by EOL, then EOF; after the last frame come EOI and EOS. Only the visual tokens are
sampled: every other position is fully determined by ``(T, H, W)``. BAAI enforces this with a Python callback per
token (a prefix constraint); here the whole schedule is built once per batch, so the decode loop reads a column of
a tensor instead of calling back into Python, and never asks the device what it just generated.

Rows of one batch may have different grids (mixed aspect ratios). A row that has finished (after its EOS) emits the
pad id until the longest row is done.

Example:
    ```python
    >>> from emu3_hf.generation.grammar import SpecialIds, VisionGrammar
    >>> ids = SpecialIds(bos=6, eos=1, pad=0, img=5, boi=7, eoi=4, eol=2, eof=3, visual_offset=10, codebook_size=100)
    >>> g = VisionGrammar.build(ids, heights=[2], widths=[3])
    >>> g.forced[0].tolist()  # -1 = a visual token is sampled there
    [-1, -1, -1, 2, -1, -1, -1, 2, 3, 4, 1]
    ```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..processing.layout import CODE, SpecialIds, frames_template

SAMPLE = -1  # marker in `VisionGrammar.forced`: this position samples a visual token


# Every special id of an Emu3LMConfig (a clear error names the ones a config lacks).
token_ids_from_config = SpecialIds.from_config


def sequence_length(height: int, width: int, num_frames: int = 1) -> int:
    """Tokens generated after the prompt for one ``num_frames x height x width`` grid (EOL/EOF/EOI/EOS included)."""
    return num_frames * (height * (width + 1) + 1) + 2


def fed_length(heights: Sequence[int], widths: Sequence[int], num_frames: int = 1) -> int:
    """Tokens the model consumes after the prompt for a batch of grids: every step up to the longest row's last
    visual token (its last EOL, EOF, EOI and EOS are written, never fed). Host arithmetic only: what the KV cache
    budget needs before :meth:`VisionGrammar.build` allocates anything of the request's size."""
    return max(sequence_length(h, w, num_frames) for h, w in zip(heights, widths)) - 5


def _row_schedule(ids: SpecialIds, height: int, width: int, num_frames: int, length: int) -> torch.Tensor:
    """Forced ids for one sequence, ``SAMPLE`` where a visual token is drawn, padded with ``ids.pad`` to ``length``:
    the processor's frame template (:func:`~emu3_hf.processing.layout.frames_template`), then EOI and EOS."""
    row = torch.cat([frames_template(ids, height, width, num_frames), torch.tensor([ids.eoi, ids.eos])])
    row[row == CODE] = SAMPLE
    out = torch.full((length,), ids.pad, dtype=torch.long)
    out[: row.numel()] = row
    return out


@dataclass
class VisionGrammar:
    """The generation schedule of one batch, built on the host once, then moved to the device.

    Attributes:
        forced: (B, N) int64, the id forced at each step, or ``SAMPLE`` (-1) where a visual token is sampled.
        heights, widths: (B,) int64 token grid of each row; ``num_frames`` latent frames each.
        code_steps: (B, T, Hmax, Wmax) int64, the step at which each code of the grid is generated (-1 outside the
            row's own grid); gathers the codes out of the generated ids.
        sample_steps: host list of N bools: does any row sample at this step (only then is the LM head evaluated).
        mixed_steps: host list of N bools: at this sampling step, is some row forced (mixed sizes) - then the sampled
            id is overridden by the forced one for those rows.
        feed_until: the model must consume the tokens of steps ``[0, feed_until)``; the trailing forced tokens
            (last EOL, EOF, EOI, EOS) are never fed, nothing is sampled after them.
        rows_done: host list (N) of per-row completed image-row counts after each step; the callback fires at the
            steps where some row completes an image row (``row_steps``).
    """

    ids: SpecialIds
    forced: torch.Tensor
    heights: torch.Tensor
    widths: torch.Tensor
    num_frames: int
    code_steps: torch.Tensor
    sample_steps: list[bool]
    mixed_steps: list[bool]
    feed_until: int
    rows_done: list[list[int]]
    row_steps: list[int]

    @property
    def num_steps(self) -> int:
        return self.forced.shape[1]

    @property
    def batch_size(self) -> int:
        return self.forced.shape[0]

    @property
    def total_rows(self) -> list[int]:
        """Image rows each sequence generates (``num_frames * height``)."""
        return [self.num_frames * int(h) for h in self.heights]

    @classmethod
    def build(
        cls,
        ids: SpecialIds,
        heights: Sequence[int] | torch.Tensor | int,
        widths: Sequence[int] | torch.Tensor | int,
        num_frames: int = 1,
        batch_size: int | None = None,
    ) -> "VisionGrammar":
        """Precompute the schedule for a batch; ``heights``/``widths`` are ints (whole batch) or one per row."""
        heights = as_host_list(heights, "height", batch_size)
        widths = as_host_list(widths, "width", batch_size)
        if len(heights) != len(widths):
            raise ValueError(f"Got {len(heights)} heights but {len(widths)} widths; give one (h, w) per batch row.")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}.")
        for h, w in zip(heights, widths):
            if h < 1 or w < 1:
                raise ValueError(f"Token grids must be at least 1x1, got height={h}, width={w}.")
        length = max(sequence_length(h, w, num_frames) for h, w in zip(heights, widths))
        forced = torch.stack([_row_schedule(ids, h, w, num_frames, length) for h, w in zip(heights, widths)])  # (B, N)

        hmax, wmax = max(heights), max(widths)
        code_steps = torch.full((len(heights), num_frames, hmax, wmax), -1, dtype=torch.long)  # (B, T, Hmax, Wmax)
        for b, (h, w) in enumerate(zip(heights, widths)):
            steps = torch.nonzero(forced[b] == SAMPLE).flatten()  # (T*h*w,) in generation order
            code_steps[b, :, :h, :w] = steps.view(num_frames, h, w)

        sampled = forced == SAMPLE  # (B, N)
        sample_steps = sampled.any(0).tolist()
        mixed_steps = (sampled.any(0) & ~sampled.all(0)).tolist()
        eol_counts = (forced == ids.eol).long().cumsum(1)  # (B, N) image rows completed after each step
        row_steps = torch.nonzero((forced == ids.eol).any(0)).flatten().tolist()
        return cls(
            ids=ids,
            forced=forced,
            heights=torch.tensor(heights),
            widths=torch.tensor(widths),
            num_frames=num_frames,
            code_steps=code_steps,
            sample_steps=sample_steps,
            mixed_steps=mixed_steps,
            feed_until=fed_length(heights, widths, num_frames),  # the step of the last sampled token
            rows_done=eol_counts.t().tolist(),
            row_steps=row_steps,
        )

    def to(self, device: torch.device | str) -> "VisionGrammar":
        """The same schedule with its tensors on ``device`` (host lists stay on the host)."""
        return VisionGrammar(
            ids=self.ids,
            forced=self.forced.to(device),
            heights=self.heights,
            widths=self.widths,
            num_frames=self.num_frames,
            code_steps=self.code_steps.to(device),
            sample_steps=self.sample_steps,
            mixed_steps=self.mixed_steps,
            feed_until=self.feed_until,
            rows_done=self.rows_done,
            row_steps=self.row_steps,
        )

    def codes_from_tokens(self, generated: torch.Tensor) -> torch.Tensor:
        """Code grids out of generated ids, -1 where a code is not (yet) generated or outside a row's grid.

        Args:
            generated: (B, n) ids of the first ``n <= N`` steps (n < N gives a partial grid, for previews).

        Returns:
            (B, T, Hmax, Wmax) int64 codes in ``[0, codebook_size)`` or -1.
        """
        n = generated.shape[1]
        steps = self.code_steps.to(generated.device)
        known = (steps >= 0) & (steps < n)  # (B, T, Hmax, Wmax)
        flat = steps.clamp(0, max(n - 1, 0)).flatten(1)  # (B, T*Hmax*Wmax)
        codes = generated.gather(1, flat).view_as(steps) - self.ids.visual_offset if n else torch.zeros_like(steps)
        return torch.where(known, codes, torch.full_like(codes, -1))


def as_host_list(value, name: str, batch_size: int | None) -> list[int]:
    """Per-row sizes (an int, a sequence or a tensor) as a host list of ``batch_size`` ints (one host read for a
    tensor, never inside the decode loop); ``name`` labels the errors."""
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()  # one host read per call, never inside the decode loop
    if isinstance(value, int):
        if batch_size is None:
            raise ValueError(f"A single {name} needs `batch_size`.")
        return [value] * batch_size
    values = [int(v) for v in value]
    if batch_size is not None and len(values) == 1:
        values = values * batch_size
    if batch_size is not None and len(values) != batch_size:
        raise ValueError(f"Got {len(values)} values of {name} for a batch of {batch_size}; give one per row or one.")
    return values


__all__ = ["SAMPLE", "SpecialIds", "VisionGrammar", "as_host_list", "fed_length", "sequence_length", "token_ids_from_config"]
