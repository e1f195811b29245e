"""Benchmarks: each prints its figures and writes them as JSON to `bench/results/` (not committed)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(report: dict[str, Any], target: Path | None, name: str) -> Path:
    """Write `report` to `target`, or to `bench/results/<name>-<unix time>.json`; say where."""
    path = target or RESULTS / f"{name}-{int(time.time())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"written to {path}")
    return path
