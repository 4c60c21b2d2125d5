"""What every benchmark in bench/ records: one JSON file per run under bench/results/ (gitignored), and its table.

A record holds the command line, the machine (CPU/GPU, versions, threads, load average before and after the run),
the script's own settings and its measurements. Files are written next to the target and renamed (never half
written). BENCHMARKS.md quotes these files.

Example:
    ```python
    >>> from bench_results import machine, save_result
    >>> path = save_result("generation", {"machine": machine(), "rows": []})  # bench/results/generation-<time>.json
    ```
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from emu3_hf.utils.atomic import atomic_file

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """The facts a timing depends on; call at the start and again at the end of a run (load average)."""
    info = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    import transformers

    info["transformers"] = transformers.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    try:
        import torchao

        info["torchao"] = torchao.__version__
    except ImportError:
        pass
    return info


def median(values: list[float]) -> float:
    return statistics.median(values)


def save_result(kind: str, record: dict) -> Path:
    """Write ``record`` (plus the command line) to bench/results/<kind>-<time>.json; returns the path."""
    record = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), **record}
    path = RESULTS / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2) + "\n")
    return path
