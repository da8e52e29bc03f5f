"""Case numbers never collide after a restore of ``state.sqlite3`` (issue 11), on a real gunicorn node.

The counter lives in the node's state file; the store is the truth. Before, a node whose state file
was restored from an older backup issued the numbers of the cases accepted since the backup again,
and the new case's events joined the old case's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Services
from tests.test_api_cases import accept_body
from tests.test_idempotency import LiveNode, start_live_node


@pytest.fixture
def live_node(services: Services, city_ca: Path, tmp_path: Path) -> Iterator[LiveNode]:
    live = start_live_node(services, city_ca, tmp_path)
    try:
        yield live
    finally:
        live.stop()


def serial(case_no: str) -> int:
    return int(case_no.rsplit("-", 1)[1])


def accept(live: LiveNode) -> str:
    answer = live.post("/api/v1/cases", "acceptor", accept_body())
    assert answer.status_code == 201, answer.text
    return str(answer.json()["case_no"])


def backup(path: Path, to: Path) -> None:
    """An online backup, as an operator would take it (the file is in WAL mode)."""
    source, target = sqlite3.connect(path), sqlite3.connect(to)
    source.backup(target)
    source.close()
    target.close()


def test_numbers_continue_after_a_restore_of_an_old_state_file(live_node: LiveNode, tmp_path: Path) -> None:
    state = live_node.node.config.data_dir / "state.sqlite3"
    first = accept(live_node)
    backup(state, tmp_path / "state-backup.sqlite3")
    later = [accept(live_node), accept(live_node)]
    assert [serial(n) for n in [first, *later]] == [1, 2, 3]

    live_node.stop()
    for leftover in (state.with_name(state.name + "-wal"), state.with_name(state.name + "-shm")):
        leftover.unlink(missing_ok=True)
    (tmp_path / "state-backup.sqlite3").replace(state)
    live_node.start()

    after = accept(live_node)
    assert serial(after) == 4, f"{after} collides with one issued before the restore"
    shown = live_node.get(f"/api/v1/cases/{later[0]}", "acceptor").json()
    assert [entry["type"] for entry in shown["timeline"]] == ["accepted", "received"]
    assert live_node.case_numbers() == {first, *later, after}


def test_a_counter_set_back_under_a_running_node_moves_past_the_store(live_node: LiveNode) -> None:
    issued = [accept(live_node) for _ in range(3)]
    # The state file changes under the running processes (a restore without a restart): the next
    # number would be taken; the node sees it in the store and moves past the store's highest.
    with sqlite3.connect(live_node.node.config.data_dir / "state.sqlite3") as db:
        db.execute("UPDATE case_counters SET last = 0")
    after = accept(live_node)
    assert serial(after) == 4 and after not in issued
    shown = live_node.get(f"/api/v1/cases/{issued[0]}", "acceptor").json()
    assert len(shown["timeline"]) == 2
