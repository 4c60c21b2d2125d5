"""Small utilities shared across the package (video export lives in ``video_export``)."""

from __future__ import annotations

from typing import Any


def as_list(value: Any) -> list:
    """``value`` as a list: lists and tuples are copied, anything else becomes a one-element list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["as_list"]
