"""Print the package's declared lower bounds as exact pins, one per line: the oldest environment CI tests.

`make test-oldest` installs these (plus the dev extra, unpinned) so that pyproject's floors are tested, not assumed,
then runs this script with ``--check`` to prove the venv holds exactly those versions (a dev dependency could
otherwise have pulled one of them up). torch is left out: CI machines pin the CPU build of torch first (see the
Makefile), whatever its floor says.

Example:
    ```bash
    python scripts/oldest_requirements.py > /tmp/oldest.txt && pip install -r /tmp/oldest.txt
    python scripts/oldest_requirements.py --check   # exit 1 unless the installed versions equal the floors
    ```
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

UNPINNED = {"torch"}


def oldest_pins(pyproject: Path) -> list[str]:
    """``name==floor`` for every runtime dependency; raises when one has no ``>=`` floor to test."""
    pins = []
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+)\s*(,.*)?", requirement)
        if match is None:
            raise ValueError(f"dependency {requirement!r} has no '>=' lower bound; declare one so CI can test it.")
        if match.group(1).lower() not in UNPINNED:
            pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def mismatches(pins: list[str]) -> list[str]:
    """The pins the running environment does not satisfy exactly, described."""
    wrong = []
    for pin in pins:
        name, version = pin.split("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "nothing"
        if installed != version:
            wrong.append(f"{name}: declared floor {version}, installed {installed}")
    return wrong


if __name__ == "__main__":
    pins = oldest_pins(Path(__file__).resolve().parents[1] / "pyproject.toml")
    if "--check" not in sys.argv[1:]:
        print("\n".join(pins))
        sys.exit(0)
    wrong = mismatches(pins)
    for line in wrong:
        print(f"oldest environment: {line}", file=sys.stderr)
    sys.exit(1 if wrong else 0)
