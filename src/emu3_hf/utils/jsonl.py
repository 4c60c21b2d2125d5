"""JSON-lines files (``metadata.jsonl``, prompt files) read line by line, every bad line named by file and number.

Example:
    ```python
    >>> from emu3_hf.utils.jsonl import read_json_objects
    >>> for where, row in read_json_objects("data/metadata.jsonl"):
    ...     print(where, row["file_name"])  # "data/metadata.jsonl, line 1" ...
    ```
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path


def read_json_objects(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """Each non-blank line of ``path`` as ``(where, object)``, ``where`` being ``"<path>, line <n>"``. A line that is not
    JSON, or is JSON but not an object, raises ``ValueError`` naming it."""
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err.msg}); write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: each line must be a JSON object such as {{\"file_name\": ...}}, got "
                             f"{line.strip()[:60]!r}.")  # fmt: skip
        yield where, row


__all__ = ["read_json_objects"]
