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
- Quarantined documents and link statistics are reported on the node's ops topic.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from node.adapters.docstore import StoreUnavailable
from node.adapters.mqtt import MqttLink, heartbeat, ops_topic, status_topic, wake_topic
from node.adapters.opsmodel import store_report, write_agent_stats
from node.bootstrap import NodeContext, publish_own_documents
from sync.link import Link, put_heartbeat, wake_children

HEARTBEAT_INTERVAL_S = 10.0
# Under a stream of local writes every write wakes the agent; cycles closer than this add load, not speed.
MIN_CYCLE_GAP_S = 0.1
log = logging.getLogger("tongban.agent")


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

    def run(self) -> None:
        self.mqtt.start(wait_s=30)
        publish_own_documents(self.context)
        self.wake_cursor = self.context.store.info()["update_seq"]
        ready = os.environ.get("TONGBAN_READY_FILE")
        try:
            wanted = {"push", "pull"}
            while not self.stop.is_set():
                self.cycle(wanted)
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

    def cycle(self, wanted: set[str]) -> None:
        try:
            if self.link is not None:
                self.link.sync(push="push" in wanted, pull="pull" in wanted)
            self.context.projector.catch_up()
            if self.context.config.wakeups:
                self.wake_cursor = wake_children(self.context, self.wake_cursor, self.mqtt)
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
        self.report()

    def report(self) -> None:
        due = time.monotonic() >= self.next_heartbeat
        if due:
            # Link statistics with the store's size and the changes still waiting to go up: for the
            # web process's /metrics (through a file) and, below, for city operations.
            stats = self.link.stats() if self.link else {}
            push_seq = self.link.push.last_seq if self.link else None
            stats = {**stats, **store_report(self.context.store, push_seq, count_pending=self.link is not None)}
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


def run_agent(context: NodeContext, stop: threading.Event) -> None:
    Agent(context, stop).run()
