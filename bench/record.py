"""Appending a benchmark's closing JSON line to docs/benchmarks.md (``make bench-scale`` records its runs).

Rows go under one heading at the end of the file, created on first use: date, the exact command, the
machine (cores and load average at the end of the run), whether the goals were met, and the figures.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADING = "### Recorded runs of the city-scale benches (`--record`)"


def append_result(line: dict[str, Any], path: Path = DOCS) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if HEADING not in text:
        text = (
            text.rstrip("\n")
            + f"\n\n{HEADING}\n\n| date | command | machine | goals met | figures |\n|---|---|---|---|---|\n"
        )
    command = "PYTHONPATH=$PWD .venv/bin/python " + " ".join(shlex.quote(arg) for arg in sys.argv)
    machine = f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    figures = json.dumps(line["figures"], ensure_ascii=False, separators=(",", ":")).replace("|", "/")
    row = f"| {datetime.now(UTC):%Y-%m-%d %H:%M} UTC | `{command}` | {machine} | {line['goals_met']} | `{figures}` |\n"
    path.write_text(text.rstrip("\n") + "\n" + row, encoding="utf-8")
