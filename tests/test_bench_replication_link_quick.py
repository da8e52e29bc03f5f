"""bench_replication.py --link, smallest form: every method runs, every event arrives, it ends with its JSON line.

Marked slow: it starts real processes (two pouchdb-servers for the village and the store-to-store target, and for
each link run a township node: pouchdb-server, Mosquitto, gunicorn). The current checkout stands in as its own
anchor, so the anchor path (a second checkout's code in the village process and the parent's web) runs too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_link_bench_quick_form_pushes_every_event_through_the_parent_api_and_store_to_store() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_replication.py"), "--link", "--quick", "--anchor", str(ROOT)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(line) == {"bench", "figures", "goals_met"} and line["bench"] == "replication_link"
    figures = line["figures"]
    assert figures["events"] == 200 and figures["rounds"] == 1
    (row,) = figures["per_round"]
    # Every method ran and was checked complete by the bench (it raises when a target misses an event).
    for method in ("store to store", "new", "anchor"):
        assert row[method] > 0
        assert figures["median"]["cpu_us_per_doc"][method]["total"] > 0
    # Only a link has a parent web process doing work; store to store has none.
    assert figures["median"]["cpu_us_per_doc"]["store to store"]["parent"] == 0
    assert set(figures["goals"]["checks"]) == {"link_share_ge_70pct", "checks_cost_le_15pct"}
    assert isinstance(line["goals_met"], bool)
