"""Group commit hands every caller its own results, shares writes, and reports failures to all."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path

import pytest

from node.adapters.batching import GroupCommit
from node.adapters.nodestate import NodeState
from tests.conftest import wait_for


def test_concurrent_callers_get_their_own_results_and_share_flushes() -> None:
    flushes: list[int] = []

    def flush(items: list[int]) -> list[int]:
        flushes.append(len(items))
        time.sleep(0.01)
        return [item * 10 for item in items]

    group: GroupCommit[int, int] = GroupCommit(flush)
    results: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        results[n] = group.write([n, n + 1000])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: [n * 10, (n + 1000) * 10] for n in range(40)}
    assert sum(flushes) == 80 and len(flushes) < 40  # shared, not one flush per caller


def test_a_caller_is_answered_as_soon_as_its_own_batch_is_written() -> None:
    """The leader must not go on writing later callers' batches before it returns (tail latency)."""
    first_started, second_queued, release_second = threading.Event(), threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def flush(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            first_started.set()
            assert second_queued.wait(5)
            time.sleep(0.05)  # let the second caller reach its wait
        else:
            assert release_second.wait(5)
        return items

    group: GroupCommit[int, int] = GroupCommit(flush)
    first_answer: list[int] = []
    second_answer: list[int] = []
    first = threading.Thread(target=lambda: first_answer.extend(group.write([1])))
    first.start()
    assert first_started.wait(5)
    second = threading.Thread(target=lambda: second_answer.extend(group.write([2])))
    second.start()
    second_queued.set()
    first.join(timeout=2)
    assert not first.is_alive() and first_answer == [1]  # answered while batch 2 is still being written
    assert wait_for(lambda: len(calls) == 2, 5)
    assert second.is_alive() and calls == [[1], [2]]  # the second caller writes its own batch
    release_second.set()
    second.join(timeout=5)
    assert second_answer == [2]


def test_a_failed_flush_reaches_every_waiting_caller() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: (_ for _ in ()).throw(OSError("store down")))
    with pytest.raises(OSError, match="store down"):
        group.write([1])


def test_case_serials_are_unique_and_gapless_across_threads_and_processes(tmp_path: Path) -> None:
    first, second = NodeState(tmp_path / "state.sqlite3"), NodeState(tmp_path / "state.sqlite3")
    day = date(2026, 11, 27)
    got: list[int] = []
    lock = threading.Lock()

    def take(state: NodeState) -> None:
        for _ in range(10):
            serial = state.next_case_serial(day)
            with lock:
                got.append(serial)

    threads = [threading.Thread(target=take, args=(state,)) for state in (first, second) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(1, 81))
    assert first.next_case_serial(date(2026, 11, 28)) == 1
