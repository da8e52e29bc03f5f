"""The city-scale benchmarks in their smallest form: they run, end with the contract's JSON line, lose nothing.

Marked slow: each starts real nodes (bench_city_year a whole city node, bench_slow_link a township node and
a village store in a network namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_bench(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    line = json.loads(last)
    assert set(line) == {"bench", "figures", "goals_met"}
    assert isinstance(line["goals_met"], bool)
    return line


def test_city_year_smallest_form_projects_every_case_and_answers_every_request() -> None:
    line = run_bench("bench_city_year.py", "--cases", "300", "--samples", "20")
    figures = line["figures"]
    assert line["bench"] == "city_year"
    assert figures["cases"] == 300 and figures["readmodel_rows"] == 300
    assert figures["cases_lost"] == 0 and figures["quarantined"] == 0
    assert figures["ingest"]["generator"]["cases"] == 300
    for name in ("inbox_approver", "search_by_number", "case_page", "metrics"):
        assert figures["requests"][name]["n"] > 0 and figures["requests"][name]["p99_ms"] > 0
    assert figures["rss_mib_idle"]["430900000000-web"] > 0


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("tc") is None or shutil.which("ip") is None,
    reason="needs root with ip netns and tc",
)
def test_slow_link_smallest_form_delivers_every_event_over_the_shaped_link() -> None:
    line = run_bench("bench_slow_link.py", "--cases", "20")
    figures = line["figures"]
    assert line["bench"] == "slow_link"
    assert figures["events_missing_at_parent"] == 0
    assert figures["docs_written"] >= figures["events"]
    assert figures["bytes_up"] > figures["events"] * 500  # the signed events really crossed the proxy
    assert figures["bandwidth_bound_s"] > 0 and figures["ratio_to_bound"] > 0
