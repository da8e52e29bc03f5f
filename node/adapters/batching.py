"""Group commit: concurrent writers of one process share one write instead of queueing for their own.

While one write is in flight, later callers queue up; the next write carries all of them. An idle
process sees no added delay. Used where the per-write cost dominates: the document store's
``_bulk_docs`` request and the read model's SQLite transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Waiter(Generic[Item, Result]):
    items: list[Item]
    woken: threading.Event = field(default_factory=threading.Event)
    results: list[Result] = field(default_factory=list)
    error: Exception | None = None
    # Set when the waiter is woken to write the next batch rather than to collect its results.
    leads: bool = False


class GroupCommit(Generic[Item, Result]):
    def __init__(self, flush: Callable[[list[Item]], list[Result]]) -> None:
        """``flush`` writes a list of items at once and returns one result per item, in order."""
        self.flush = flush
        self._lock = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []
        self._writing = False

    def write(self, items: list[Item]) -> list[Result]:
        mine: _Waiter[Item, Result] = _Waiter(items)
        with self._lock:
            self._queue.append(mine)
            mine.leads = not self._writing
            self._writing = True
        if not mine.leads:
            mine.woken.wait()
        if mine.leads:
            self._write_one_batch()
        if mine.error is not None:
            raise mine.error
        return mine.results

    def _write_one_batch(self) -> None:
        # The leader writes exactly one batch (its own among them) and hands the next batch to a
        # queued caller: a leader that kept draining would hold its own reply hostage to every
        # later arrival, which is what made the tail latency under load.
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            answers = self.flush([item for waiter in batch for item in waiter.items])
            offset = 0
            for waiter in batch:
                waiter.results = answers[offset : offset + len(waiter.items)]
                offset += len(waiter.items)
        except Exception as exc:  # every waiting caller must hear of the failure
            for waiter in batch:
                waiter.error = exc
        with self._lock:
            if self._queue:
                self._queue[0].leads = True
                self._queue[0].woken.set()
            else:
                self._writing = False
        for waiter in batch:
            waiter.leads = False
            waiter.woken.set()
