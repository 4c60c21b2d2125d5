"""Argument normalisation and checks shared by the processor, the pipelines, the engine and training.

It lives among the processing modules (which import only torch, transformers and each other) so that the processor
can be exported as Hub remote code together with it.

Example:
    ```python
    >>> from emu3_hf.processing.arguments import as_list, check_finite
    >>> as_list("a cat"), as_list(("a", "b"))
    (['a cat'], ['a', 'b'])
    >>> check_finite("guidance_scale", 3)
    3.0
    ```
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def as_list(value: Any) -> list:
    """``value`` as a list: lists and tuples are copied, anything else becomes a one-element list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_finite(name: str, value: Any) -> float:
    """``value`` as a float, after checking that it is a real number (not a bool) and neither NaN nor infinite.

    Every float argument goes through this before any range check: ``nan > 0`` is False but ``inf > 0`` is True, so
    range checks alone let infinities through, and a NaN would otherwise fail far from where it was passed. Raises
    ``TypeError`` for a non-number and ``ValueError`` for NaN / +inf / -inf, both naming ``name``. Python and numpy
    numbers and one-element tensors are accepted.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (hasattr(value, "item") and getattr(value, "ndim", None) == 0 and not isinstance(value, (str, bytes))):
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
        value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__}).")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(
            f"{name} must be a finite number, got {number}; NaN and infinities cannot be used. Pass a finite value "
            "(see the documentation of this argument for its range)."
        )
    return number


__all__ = ["as_list", "check_finite"]
