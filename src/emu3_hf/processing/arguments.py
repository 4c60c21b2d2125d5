"""Argument normalisation shared by the processor and the pipelines.

It lives among the processing modules (which import only torch, transformers and each other) so that the processor
can be exported as Hub remote code together with it.

Example:
    ```python
    >>> from emu3_hf.processing.arguments import as_list
    >>> as_list("a cat"), as_list(("a", "b"))
    (['a cat'], ['a', 'b'])
    ```
"""

from __future__ import annotations

from typing import Any


def as_list(value: Any) -> list:
    """``value`` as a list: lists and tuples are copied, anything else becomes a one-element list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["as_list"]
