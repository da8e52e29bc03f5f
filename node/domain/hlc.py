"""A hybrid logical clock (Kulkarni et al., 2014) for ordering case events across the federation.

Every event a node writes carries a :class:`Timestamp` ``(wall_ms, counter, node)`` from the node's
:class:`HybridLogicalClock`. The clock never goes backwards, stays close to the wall clock, and once a
node has *observed* a timestamp from another node (an event that arrived by replication), everything it
stamps afterwards sorts after it — so an approval written at a county hall always sorts after the
acceptance at the village it answers, even when the county's wall clock runs a little slow.

Timestamps are totally ordered by ``(wall_ms, counter, node)`` — the node code breaks ties, so two nodes
never produce equal timestamps — and :meth:`Timestamp.to_str` renders them as a fixed-width string whose
lexicographic order is exactly that order: ``"0001732700000000-0000-430902005001"``. That string is what
events store and what document ids embed, so a case's events sort by id in clock order.

Callers must feed the clock what they learn: call :meth:`HybridLogicalClock.observe` with the ``hlc`` of
every event received by replication (or at least with a case's latest event before appending to it), and
once at start-up with the newest timestamp the node itself wrote, in case the wall clock moved back
across a restart.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from node.domain.errors import DomainError, ErrorKind

__all__ = ["MAX_COUNTER", "MAX_WALL_MS", "HybridLogicalClock", "Timestamp", "wall_clock_ms"]

WALL_DIGITS = 16
COUNTER_DIGITS = 4
MAX_WALL_MS = 10**WALL_DIGITS - 1
MAX_COUNTER = 10**COUNTER_DIGITS - 1
# A node code: the 12-character division code in practice; anything without spaces or colons is accepted
# (colons separate the parts of document ids).
NODE_PATTERN = re.compile(r"^[0-9A-Za-z_.\-]{1,64}$")
_STR_PATTERN = re.compile(rf"^([0-9]{{{WALL_DIGITS}}})-([0-9]{{{COUNTER_DIGITS}}})-(.+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, from the system clock."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, order=True)
class Timestamp:
    """A point of hybrid logical time; ordered by ``(wall_ms, counter, node)``."""

    wall_ms: int
    counter: int
    node: str

    def __post_init__(self) -> None:
        if isinstance(self.wall_ms, bool) or not isinstance(self.wall_ms, int) or not 0 <= self.wall_ms <= MAX_WALL_MS:
            raise _malformed(f"wall_ms must be an integer in 0..{MAX_WALL_MS}, got {self.wall_ms!r}")
        if isinstance(self.counter, bool) or not isinstance(self.counter, int) or not 0 <= self.counter <= MAX_COUNTER:
            raise _malformed(f"counter must be an integer in 0..{MAX_COUNTER}, got {self.counter!r}")
        if not isinstance(self.node, str) or not NODE_PATTERN.match(self.node):
            raise _malformed(f"node must be a code of letters, digits, '_', '.' or '-', got {self.node!r}")

    def to_str(self) -> str:
        """Fixed-width text whose lexicographic order equals the timestamp order."""
        return f"{self.wall_ms:0{WALL_DIGITS}d}-{self.counter:0{COUNTER_DIGITS}d}-{self.node}"

    def __str__(self) -> str:
        return self.to_str()

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """The inverse of :meth:`to_str`; raises ``DomainError("malformed_hlc")``."""
        match = _STR_PATTERN.match(text) if isinstance(text, str) else None
        if match is None:
            raise _malformed(f"not a hybrid-logical-clock string: {text!r}")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))

    @property
    def iso(self) -> str:
        """The wall-clock part as ISO-8601 UTC with milliseconds, for display: ``2024-11-27T09:33:20.000Z``."""
        return self.to_datetime().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def to_datetime(self) -> datetime:
        """The wall-clock part as an aware UTC datetime; ``malformed_hlc`` past the year 9999."""
        try:
            return _EPOCH + timedelta(milliseconds=self.wall_ms)
        except OverflowError:
            raise _malformed(f"{self.wall_ms} ms lies past the year 9999") from None


def _malformed(detail: str) -> DomainError:
    return DomainError("malformed_hlc", f"时间戳格式不正确：{detail}", f"malformed clock timestamp: {detail}")


class HybridLogicalClock:
    """A thread-safe hybrid logical clock owned by one node.

    ``tick()`` stamps a local or send event; ``observe(remote)`` merges a timestamp received from another
    node and returns the clock's new reading. Both return a timestamp strictly greater than every
    timestamp the clock returned or observed before. If the logical counter would overflow its four
    digits, the clock borrows one millisecond from the future instead, which keeps the order intact.

    ``max_drift_ms``, when set, refuses (``DomainError("clock_drift")``) a remote timestamp that is more
    than that far ahead of the local wall clock, so one node with a wild clock cannot drag the whole
    federation into the future. By default every remote timestamp is accepted.
    """

    def __init__(
        self,
        node: str,
        now_ms: Callable[[], int] = wall_clock_ms,
        *,
        max_drift_ms: int | None = None,
    ) -> None:
        Timestamp(0, 0, node)  # validates the node code
        self.node = node
        self._now_ms = now_ms
        self._max_drift_ms = max_drift_ms
        self._wall_ms = 0
        self._counter = 0
        self._lock = threading.Lock()

    @property
    def last(self) -> Timestamp:
        """The latest reading (``0000…-0000-<node>`` before the first tick or observation)."""
        with self._lock:
            return Timestamp(self._wall_ms, self._counter, self.node)

    def tick(self) -> Timestamp:
        """Stamp a local or send event."""
        with self._lock:
            physical = self._physical()
            if physical > self._wall_ms:
                self._wall_ms, self._counter = physical, 0
            else:
                self._counter += 1
            return self._reading()

    def observe(self, remote: Timestamp | str) -> Timestamp:
        """Merge a timestamp received from another node; later ticks sort after it."""
        if isinstance(remote, str):
            remote = Timestamp.parse(remote)
        with self._lock:
            physical = self._physical()
            ahead = remote.wall_ms - physical
            if self._max_drift_ms is not None and ahead > self._max_drift_ms:
                raise DomainError(
                    "clock_drift",
                    f"远端时间戳 {remote.iso} 超前本机时钟 {ahead} 毫秒，超过允许的 {self._max_drift_ms} 毫秒",
                    f"remote timestamp {remote.iso} is {ahead} ms ahead of the local clock "
                    f"(allowed: {self._max_drift_ms} ms); check the sending node's clock",
                    ErrorKind.CONFLICT,
                )
            wall = max(self._wall_ms, remote.wall_ms, physical)
            if wall == self._wall_ms == remote.wall_ms:
                counter = max(self._counter, remote.counter) + 1
            elif wall == self._wall_ms:
                counter = self._counter + 1
            elif wall == remote.wall_ms:
                counter = remote.counter + 1
            else:
                counter = 0
            self._wall_ms, self._counter = wall, counter
            return self._reading()

    def _physical(self) -> int:
        physical = self._now_ms()
        if isinstance(physical, bool) or not isinstance(physical, int) or not 0 <= physical <= MAX_WALL_MS:
            raise _malformed(f"the wall clock returned {physical!r}")
        return physical

    def _reading(self) -> Timestamp:
        """The current state as a timestamp, after carrying a counter overflow into the milliseconds."""
        if self._counter > MAX_COUNTER:
            self._wall_ms, self._counter = self._wall_ms + 1, 0
        return Timestamp(self._wall_ms, self._counter, self.node)
