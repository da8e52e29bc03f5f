"""End to end on a real local federation (8 nodes, every process real): routing, offline, crashes.

The federation runs as `tongban federation up` in a subprocess for the whole module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from node.domain.identifiers import make_id_number
from node.runtime.demo import fetch_json as call
from node.runtime.demo import login, run_scenario
from node.runtime.federation import Federation
from node.runtime.package_demo import run_package_scenario
from node.runtime.services import port_is_free
from node.runtime.supervisor import pid_alive
from tests.conftest import wait_for
from tiers.demo import CITY, HESHAN, HESHAN_TOWN, HESHAN_VILLAGE, ZIYANG, ZIYANG_TOWN, ZIYANG_VILLAGE, ZIYANG_VILLAGE_2

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
COUNTY_A, COUNTY_B = ZIYANG, HESHAN
TOWN_A, VILLAGE_A1, VILLAGE_A2 = ZIYANG_TOWN, ZIYANG_VILLAGE, ZIYANG_VILLAGE_2
TOWN_B, VILLAGE_B1 = HESHAN_TOWN, HESHAN_VILLAGE


def free_base_port() -> int:
    for base in range(21000, 40000, 100):
        if all(port_is_free(p) for p in range(base, base + 100)):
            return base
    raise RuntimeError("no free port range")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    var = tmp_path_factory.mktemp("federation")
    base = free_base_port()
    log = (var / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "node.entrypoints.cli", "federation", "up", "--var", str(var), "--base-port", str(base)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        up = wait_for(lambda: process.poll() is not None or "press Ctrl-C" in (var / "up.log").read_text(), 180, 0.5)
        if not up or process.poll() is not None:
            pytest.fail(f"federation did not start:\n{(var / 'up.log').read_text()[-3000:]}")
        yield Federation.load(var)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def store_url(federation: Federation, code: str) -> str:
    return f"http://127.0.0.1:{federation.node_config(code).docstore_port}/tongban"


def event_revs(federation: Federation, code: str, case_prefix: str) -> dict[str, str]:
    """Every event document of cases whose number starts with ``case_prefix``: id → full revision history."""
    start = urllib.request.quote(json.dumps(f"event:{case_prefix}"))
    end = urllib.request.quote(json.dumps(f"event:{case_prefix}\ufff0"))
    url = f"{store_url(federation, code)}/_all_docs?startkey={start}&endkey={end}"
    rows = call(url)["rows"]
    return {row["id"]: row["value"]["rev"] for row in rows}


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 120) -> float:
    """Poll ``check``; a service that is restarting (connection refused) counts as 'not yet'."""

    def answered() -> bool:
        try:
            return check()
        except OSError:
            return False

    started = time.monotonic()
    if not wait_for(answered, timeout_s, interval=0.5):
        pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
    return time.monotonic() - started


def service_pids(federation: Federation, name: str) -> int:
    return int((federation.var_dir / "run" / f"{name}.pid").read_text())


def application(serial: int) -> dict[str, Any]:
    return {
        "matter_code": "430900-JF-0001",
        "applicant": {
            "kind": "person",
            "id_number": make_id_number("430903", date(1970, 1, 1), serial % 999),
            "name": "测试",
        },
        "materials": ["M001", "M002", "M013", "M003"],
        "residence_code": VILLAGE_B1,
    }


def test_cross_county_case_reaches_county_b_and_comes_back(federation: Federation) -> None:
    final = run_scenario(federation, print_line=lambda _line: None)
    case_no = final["case_no"]
    assert final["state"] == "delivered"
    types = [e["type"] for e in final["timeline"]]
    # Issue 15: the approval at 赫山区 seals the result in the same request, so it travels with it.
    assert types == ["accepted", "routed", "received", "approved", "result_sealed", "delivered"]
    assert [e["node"] for e in final["timeline"]] == [
        VILLAGE_A1,
        VILLAGE_A1,
        COUNTY_B,
        COUNTY_B,
        COUNTY_B,
        VILLAGE_A1,
    ]
    holders = {CITY, COUNTY_A, COUNTY_B, TOWN_A, VILLAGE_A1}
    wait_until("the delivery to reach the city", lambda: len(event_revs(federation, CITY, case_no)) == 6)
    revs = event_revs(federation, CITY, case_no)
    for code in holders:
        wait_until(f"{code} to hold the whole case", lambda code=code: event_revs(federation, code, case_no) == revs)
    for code in (VILLAGE_A2, VILLAGE_B1, TOWN_B):
        assert event_revs(federation, code, case_no) == {}, f"{code} must never receive the case"


def test_a_package_accepted_at_a_village_is_reviewed_in_parallel_in_another_county(federation: Federation) -> None:
    """`tongban demo scenario --package`: 不动产转移登记一件事 from a 资阳区 village to 赫山区's three departments."""
    lines: list[str] = []
    final = run_package_scenario(federation, print_line=lines.append)
    assert final["state"] == "delivered"
    assert {s["department"] for s in final["sub_cases"]} == {"real_estate", "housing", "taxation"}
    assert all(s["handling_node"] == COUNTY_B and s["state"] == "delivered" for s in final["sub_cases"])
    assert sum(1 for e in final["timeline"] if e["type"] == "supplement_requested") == 2
    assert sum(1 for e in final["timeline"] if e["type"] == "supplement_provided") == 2
    assert any("merged notice" in line for line in lines)
    assert any("one payment of ¥80.00" in line for line in lines)


def freeze(federation: Federation, code: str, sig: signal.Signals) -> None:
    """Cut (SIGSTOP) or restore (SIGCONT) a node's uplink: its agent and its broker's bridge."""
    for name in (f"{code}-agent", f"{code}-mosquitto"):
        os.killpg(service_pids(federation, name), sig)


def test_offline_village_loses_nothing(federation: Federation) -> None:
    village = federation.node_config(VILLAGE_B1)
    token = login(federation, VILLAGE_B1, "acceptor")
    freeze(federation, VILLAGE_B1, signal.SIGSTOP)
    try:
        numbers = [call(f"{village.url}/api/v1/cases", application(i), token)["case_no"] for i in range(200)]
        time.sleep(3)
        day_prefix = numbers[0].rsplit("-", 1)[0]
        assert not set(numbers) & {k.split(":")[1] for k in event_revs(federation, TOWN_B, day_prefix)}
    finally:
        freeze(federation, VILLAGE_B1, signal.SIGCONT)
    expected = event_revs(federation, VILLAGE_B1, day_prefix)
    offline = {doc_id: rev for doc_id, rev in expected.items() if doc_id.split(":")[1] in set(numbers)}
    assert len({doc_id.split(":")[1] for doc_id in offline}) == 200
    for code in (TOWN_B, COUNTY_B, CITY):
        wait_until(
            f"all 200 cases at {code}",
            lambda code=code: (
                {k: v for k, v in event_revs(federation, code, day_prefix).items() if k in offline} == offline
            ),
            timeout_s=180,
        )
    # Same revisions everywhere, no duplicates: each case exactly once in the approver's inbox.
    approver = login(federation, COUNTY_B, "approver.civil_affairs")
    county = federation.node_config(COUNTY_B)
    wait_until(
        "the county's read model to show all 200",
        lambda: (
            len({r["case_no"] for r in call(f"{county.url}/api/v1/inbox", token=approver)["cases"]} & set(numbers))
            == 200
        ),
    )
    inbox = [r["case_no"] for r in call(f"{county.url}/api/v1/inbox", token=approver)["cases"]]
    assert len(inbox) == len(set(inbox))


@pytest.mark.parametrize("victim", ["agent", "docstore"])
def test_kill_9_mid_replication_converges_from_the_checkpoint(federation: Federation, victim: str) -> None:
    village = federation.node_config(VILLAGE_B1)
    token = login(federation, VILLAGE_B1, "acceptor")
    freeze(federation, VILLAGE_B1, signal.SIGSTOP)
    try:
        numbers = [call(f"{village.url}/api/v1/cases", application(i), token)["case_no"] for i in range(300)]
    finally:
        freeze(federation, VILLAGE_B1, signal.SIGCONT)
    day_prefix = numbers[0].rsplit("-", 1)[0]
    wanted = {
        k: v for k, v in event_revs(federation, VILLAGE_B1, day_prefix).items() if k.split(":")[1] in set(numbers)
    }
    # Kill the township's process the moment the first of the batch has arrived there.
    wait_until("replication to start", lambda: bool(set(event_revs(federation, TOWN_B, day_prefix)) & set(wanted)), 60)
    target = f"{TOWN_B}-{victim}"
    pid = service_pids(federation, target)
    os.killpg(pid, signal.SIGKILL)
    wait_until(
        "the supervisor to restart it",
        lambda: service_pids(federation, target) != pid and pid_alive(service_pids(federation, target)),
    )
    for code in (TOWN_B, COUNTY_B, CITY):
        wait_until(
            f"convergence at {code}",
            lambda code=code: (
                {k: v for k, v in event_revs(federation, code, day_prefix).items() if k in wanted} == wanted
            ),
            timeout_s=180,
        )
