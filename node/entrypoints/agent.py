"""The node agent: one long-lived process per node for what must happen exactly once per node.

- MQTT presence: a retained ``online`` heartbeat with a last will that says ``offline`` if the agent
  vanishes; on a clean stop it publishes ``offline`` itself (a clean disconnect fires no will).
- The read model follows the store's changes feed (documents written here or replicated in);
  cases that arrive for this node are taken in (``received``) so their timeline shows when, and
  the staff pages hear of every change (both are the agent's handlers of ``CaseChanged``, registered
  in :mod:`node.bootstrap`).
- Replication with the parent: push up, then pull down, on every wake-up and at least every
  ``sync_interval_s`` (a lost wake-up delays, never loses). Children whose subtree got new
  documents are woken over MQTT.
- A heartbeat document travels up the links, so the city can tell how far behind each link is.
- Quarantined documents and link statistics are reported on the node's ops topic, with the number
  of cases whose history has a gap (the link re-requests their missing steps from the parent).
- Nothing another node or the store does stops the agent: a cycle step that fails with any error is
  counted by the error's type and logged (the type and where, never the message: it may quote a
  document), and the next cycle comes after an exponential backoff with jitter, capped at
  :data:`ERROR_BACKOFF`'s ``max_s``; the first good cycle resets it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.adapters.mqtt import MqttLink, heartbeat, ops_topic, status_topic, wake_topic
from node.adapters.opsmodel import store_report, write_agent_stats
from node.bootstrap import NodeContext, publish_own_documents
from sync.link import Link, put_heartbeat, wake_children
from sync.replicator import Backoff

HEARTBEAT_INTERVAL_S = 10.0
# Under a stream of local writes every write wakes the agent; cycles closer than this add load, not speed.
MIN_CYCLE_GAP_S = 0.1
# After a failed cycle: 1 s, 2 s, 4 s, … up to a minute (each with jitter), until a cycle succeeds.
ERROR_BACKOFF = Backoff(initial_s=1.0, max_s=60.0)
log = logging.getLogger("tongban.agent")


def where(exc: BaseException) -> str:
    """The file and line an error was raised at: enough to find it, without its message's data."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


class Agent:
    def __init__(self, context: NodeContext, stop: threading.Event) -> None:
        self.context = context
        self.stop = stop
        self.code = context.config.code
        self.woken = threading.Event()
        # What the wake-ups since the last cycle asked for: "pull" (the parent has news), "push" (this
        # node or a child wrote). The timer asks for both.
        self.wanted: set[str] = set()
        if context.mqtt is None:
            raise ValueError("the agent needs its MQTT link: bootstrap(config, ProcessKind.AGENT)")
        self.mqtt: MqttLink = context.mqtt
        self.mqtt.subscribe(wake_topic(self.code), self.on_wake)
        self.link = Link(context) if context.config.parent_url else None
        self.reported_quarantine = {row["doc_id"] for row in context.readmodel.quarantined()}
        self.wake_cursor: Any = None
        self.next_heartbeat = 0.0
        self.backoff = ERROR_BACKOFF
        self.failures = 0  # cycles in a row with a failed step
        self.errors: Counter[str] = Counter()  # failed steps since start, by the error's type

    def start_up(self) -> bool:
        """What must happen once before the loop; False (retried after a backoff) if the store failed."""

        def begin() -> None:
            publish_own_documents(self.context)
            self.wake_cursor = self.context.store.info()["update_seq"]

        return self.step("start", begin)

    def run(self) -> None:
        self.mqtt.start(wait_s=30)
        ready = os.environ.get("TONGBAN_READY_FILE")
        try:
            while not self.stop.is_set() and not self.start_up():
                self.failures += 1
                self.stop.wait(self.backoff.pause(self.failures))
            self.failures = 0
            wanted = {"push", "pull"}
            while not self.stop.is_set():
                if not self.cycle(wanted):
                    # Wake-ups wait too (they are remembered): a failing store is not asked again at once.
                    self.stop.wait(self.backoff.pause(self.failures))
                    wanted, self.wanted = self.wanted | {"push", "pull"}, set()
                    continue
                if ready and self.mqtt.connected and not Path(ready).exists():
                    Path(ready).touch()
                finished = time.monotonic()
                woken = self.woken.wait(self.context.config.sync_interval_s)
                self.stop.wait(max(0.0, MIN_CYCLE_GAP_S - (time.monotonic() - finished)))
                self.woken.clear()
                wanted, self.wanted = (self.wanted or {"push", "pull"}) if woken else {"push", "pull"}, set()
        finally:
            if self.mqtt.connected:
                self.mqtt.publish(
                    status_topic(self.code), {"node": self.code, "status": "offline", "reason": "stopped"}, retain=True
                )
            self.mqtt.stop()
            if ready:
                Path(ready).unlink(missing_ok=True)

    def on_wake(self, _topic: str, payload: dict[str, Any]) -> None:
        from_parent = payload.get("from") is not None and payload.get("from") == self.context.division.parent
        self.wanted.add("pull" if from_parent else "push")
        self.woken.set()

    def step(self, name: str, work: Callable[[], Any]) -> bool:
        """Run one step of a cycle; any error is counted and logged, never raised."""
        try:
            work()
        except Exception as exc:  # the store, the read model or a document: the agent must go on
            kind = type(exc).__name__
            self.errors[kind] += 1
            log.warning(
                "agent step %s failed: %s at %s (%d such errors since start; %d failed cycles in a row before this)",
                name,
                kind,
                where(exc),
                self.errors[kind],
                self.failures,
            )
            return False
        return True

    def cycle(self, wanted: set[str]) -> bool:
        """One round of replication, projection, wake-ups and reports; whether every step succeeded."""
        link = self.link
        ok = True
        if link is not None:
            ok = self.step("sync", lambda: link.sync(push="push" in wanted, pull="pull" in wanted))
        ok = self.step("project", self.context.projector.catch_up) and ok
        if self.context.config.wakeups:

            def wake() -> None:
                self.wake_cursor = wake_children(self.context, self.wake_cursor, self.mqtt)

            ok = self.step("wake", wake) and ok
        ok = self.step("report", self.report) and ok
        self.failures = 0 if ok else self.failures + 1
        return ok

    def report(self) -> None:
        due = time.monotonic() >= self.next_heartbeat
        if due:
            # Link statistics with the store's size and the changes still waiting to go up: for the
            # web process's /metrics (through a file) and, below, for city operations.
            stats = {
                **node_report(self.context, self.link),
                "agent": {"failed_cycles": self.failures, "errors": dict(self.errors)},
            }
            write_agent_stats(self.context.config.data_dir, stats)
        if not self.mqtt.connected:
            return
        for row in self.context.readmodel.quarantined():
            if row["doc_id"] not in self.reported_quarantine:
                self.mqtt.publish(ops_topic(self.code), {"kind": "quarantine", "node": self.code, **row})
                self.reported_quarantine.add(row["doc_id"])
        if due:
            self.mqtt.publish(status_topic(self.code), heartbeat(self.code, self.context.version), retain=True)
            self.mqtt.signal(ops_topic(self.code), {"kind": "link", "node": self.code, **stats})
            put_heartbeat(self.context)
            self.next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S


def node_report(context: NodeContext, link: Link | None) -> dict[str, Any]:
    """The node's ops report (kind ``link``): link statistics, the store's size and the changes still
    waiting to go up, and how many cases have a gap in their history."""
    push_seq = link.push.last_seq if link else None
    stats = {**(link.stats() if link else {}), **store_report(context.store, push_seq, count_pending=link is not None)}
    # A read model that fails is counted by the project step; the report goes out without the figure.
    with contextlib.suppress(Exception):
        stats["incomplete"] = len(context.readmodel.incomplete_cases(limit=100_000))
    return stats


def run_agent(context: NodeContext, stop: threading.Event) -> None:
    Agent(context, stop).run()
