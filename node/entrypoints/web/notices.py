"""Notices for the staff pages: MQTT ``…/down/<node>/notice`` messages, pushed to open inbox pages.

The node agent publishes a notice when replication brings a case to this node or changes one; each
web process subscribes once and hands the news to its open pages as server-sent events, so an inbox
refreshes at once instead of on its next poll.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any


class NoticeBoard:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._version = 0
        self._last: dict[str, Any] = {}

    @property
    def version(self) -> int:
        return self._version

    def post(self, _topic: str, payload: dict[str, Any]) -> None:
        with self._condition:
            self._version += 1
            self._last = payload
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> tuple[int, dict[str, Any] | None]:
        with self._condition:
            self._condition.wait_for(lambda: self._version != seen, timeout=timeout)
            return self._version, (self._last if self._version != seen else None)

    def stream(self, lifetime_s: float = 60.0, keepalive_s: float = 20.0) -> Iterator[str]:
        """Server-sent events until ``lifetime_s`` (the browser reconnects), with keep-alive comments."""
        seen = self.version
        ends = time.monotonic() + lifetime_s
        yield "retry: 3000\n\n"
        while time.monotonic() < ends:
            seen, notice = self.wait(seen, keepalive_s)
            yield f"data: {json.dumps(notice, ensure_ascii=False)}\n\n" if notice else ": keep-alive\n\n"
