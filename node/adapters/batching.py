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
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Result] = field(default_factory=list)
    error: Exception | None = None


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
            lead = not self._writing
            self._writing = True
        if lead:
            self._drain()
        else:
            mine.done.wait()
        if mine.error is not None:
            raise mine.error
        return mine.results

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    return
            try:
                answers = self.flush([item for waiter in batch for item in waiter.items])
                offset = 0
                for waiter in batch:
                    waiter.results = answers[offset : offset + len(waiter.items)]
                    offset += len(waiter.items)
            except Exception as exc:  # every waiting caller must hear of the failure
                for waiter in batch:
                    waiter.error = exc
            for waiter in batch:
                waiter.done.set()
