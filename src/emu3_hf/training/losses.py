"""The loss a run reports: the mean over its last steps, not the loss of one step.

One optimizer step sees one global batch: with the tiny batches of a LoRA run its loss jumps between neighbouring
steps (a run whose steps were ~0.05 ended on 0.87), so a single step says little. Reports (``emu3 train``'s closing
line, the model card) give the mean over the last :data:`RECENT_STEPS` steps, or over every step of a shorter run.

Example:
    ```python
    >>> from emu3_hf.training.losses import recent_loss
    >>> recent_loss([4.0, 2.0, 1.0, 0.5], steps=2)
    RecentLoss(mean=0.75, steps=2)
    ```
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

RECENT_STEPS = 20


class RecentLoss(NamedTuple):
    mean: float
    steps: int


def recent_loss(losses: Sequence[float], steps: int = RECENT_STEPS) -> RecentLoss:
    """The mean of the last ``steps`` losses (all of them when there are fewer) and how many that was; NaN and 0
    for an empty history."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    tail = list(losses)[-steps:]
    return RecentLoss(sum(tail) / len(tail) if tail else math.nan, len(tail))


__all__ = ["RECENT_STEPS", "RecentLoss", "recent_loss"]
