"""A service in a crash loop: restarted within its budget, then held, then restarted once the budget refills.

Real processes (a shell that exits with an error shortly after it starts); the supervisor never gives
up for good and never raises, so the rest of the federation keeps running meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.runtime.services import ServiceSpec
from node.runtime.supervisor import Supervisor
from tests.conftest import wait_for


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Supervisor, list[str]]]:
    lines: list[str] = []
    supervisor = Supervisor(tmp_path / "run", progress=lines.append)
    try:
        yield supervisor, lines
    finally:
        supervisor.stop_all()


def crasher(tmp_path: Path) -> ServiceSpec:
    """Runs a moment, then exits with 3: every start of it ends the same way."""
    return ServiceSpec(
        name="crasher",
        argv=["sh", "-c", f"echo started; sleep 0.3; exit 3 # crasher-{uuid.uuid4().hex}"],
        healthy=lambda: True,
        log_path=tmp_path / "logs" / "crasher.log",
    )


def restarts_within(supervisor: Supervisor, seconds: float) -> list[float]:
    """Call ``restart_dead`` as the watch loop does for ``seconds``; when each restart happened."""
    at: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        before = time.monotonic()
        if supervisor.restart_dead():
            at.append(before)
        time.sleep(0.05)
    return at


def test_a_crash_loop_is_held_after_its_budget_and_restarted_when_it_refills(
    supervised: tuple[Supervisor, list[str]], tmp_path: Path
) -> None:
    supervisor, lines = supervised
    supervisor.max_restarts = 3
    supervisor.restart_window_s = 3.0
    supervisor.start([crasher(tmp_path)])
    first_burst = restarts_within(supervisor, 2.0)
    assert len(first_burst) == 3, "the budget allows three restarts in the window"
    # The budget is spent: the crasher stays down, said once, with no exception.
    entry = supervisor.running["crasher"]
    assert entry.held and entry.process.poll() == 3
    assert sum("keeps dying" in line for line in lines) == 1
    # The window moves on past the first restart: the budget refills and it is started again.
    assert wait_for(lambda: bool(supervisor.restart_dead()), first_burst[0] + 3.0 - time.monotonic() + 2.0)
    assert time.monotonic() - first_burst[0] >= 3.0
    assert supervisor.running["crasher"].restarts == 4
    assert not supervisor.running["crasher"].held
    log = (tmp_path / "logs" / "crasher.log").read_text()
    assert log.count("started") == 5  # the first start and four restarts
