"""The ops collector: the city's record of what every node says about itself.

One small process at nodes with the ops-monitoring capability (the city). It subscribes on the
city's own broker — which receives every node's ``tongban/up/#`` through the bridges — to
``tongban/up/+/status`` and ``tongban/up/+/ops`` and writes the reports into ``ops.sqlite3``; and it
reads the ``heartbeat:<node>`` documents that replication brought into the city's store, whose age
is each link's lag. It only subscribes and never publishes, so nothing it does can loop back.

Reports are queued by the MQTT network thread and written by the main loop in one transaction
every half second: ~1,560 nodes × (status + ops) every 10 s is ~300 messages a second, which one
SQLite transaction per message would not keep up with.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from node.adapters.docstore import DocStore, StoreUnavailable
from node.adapters.mqtt import MqttLink, ops_pattern, status_pattern
from node.adapters.opsmodel import LinkReport, OpsModel, QuarantineReport, StatusReport, iter_heartbeat_docs
from node.config import NodeConfig
from node.entrypoints.ops_reports import parse_ops, parse_status

STATUS_PATTERN = status_pattern()
OPS_PATTERN = ops_pattern()
FLUSH_INTERVAL_S = 0.5
HEARTBEAT_POLL_S = 5.0
log = logging.getLogger("tongban.collector")


class _RetainAwareLink(MqttLink):
    """An :class:`MqttLink` whose handlers learn whether a message was retained.

    A retained status may be hours old; only for those does the collector fall back on the
    timestamp inside the message (see :func:`node.entrypoints.ops_reports.parse_status`).
    """

    def __init__(self, *args: Any, on_message: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = on_message

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload or b"{}")
        except ValueError:
            return
        if isinstance(payload, dict):
            self._deliver(message.topic, payload, bool(message.retain))


class Collector:
    def __init__(
        self,
        config: NodeConfig,
        ops: OpsModel | None = None,
        store: DocStore | None = None,
        client_id: str | None = None,
    ) -> None:
        self.config = config
        self.ops = ops or OpsModel.for_node(config.data_dir)
        self.store = store or DocStore(config.docstore_url, config.docstore_db, timeout=10)
        self.inbox: queue.SimpleQueue[tuple[str, dict[str, Any], bool, float]] = queue.SimpleQueue()
        self.mqtt = _RetainAwareLink(
            config.mqtt_host,
            config.mqtt_port,
            client_id=client_id or f"{config.code}-ops-collector",
            # A persistent session: QoS 1 reports (quarantine) published while the collector restarts
            # are kept for it by the broker.
            clean_start=False,
            on_message=self.receive,
        )
        # Handlers are dispatched by _RetainAwareLink itself; these register the subscriptions.
        self.mqtt.subscribe(STATUS_PATTERN, lambda _t, _p: None)
        self.mqtt.subscribe(OPS_PATTERN, lambda _t, _p: None)
        self.received = 0
        self.store_ok: bool | None = None

    def receive(self, topic: str, payload: dict[str, Any], retained: bool) -> None:
        """Called on the MQTT network thread: queue only, never block it on the database."""
        self.inbox.put((topic, payload, retained, time.time()))

    def flush(self) -> int:
        """Write every queued report; returns how many messages were taken."""
        statuses: list[StatusReport] = []
        links: list[LinkReport] = []
        quarantined: list[QuarantineReport] = []
        taken = 0
        while True:
            try:
                topic, payload, retained, received_at = self.inbox.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if topic.endswith("/status"):
                status = parse_status(topic, payload, received_at, retained)
                if status is not None:
                    statuses.append(status)
            elif topic.endswith("/ops"):
                report = parse_ops(topic, payload, received_at)
                if isinstance(report, LinkReport):
                    links.append(report)
                elif isinstance(report, QuarantineReport):
                    quarantined.append(report)
        if statuses or links or quarantined:
            self.ops.record(statuses, links, quarantined)
        self.received += taken
        return taken

    def poll_heartbeats(self) -> int:
        """Record the ``at`` of every heartbeat document in the city's store."""
        try:
            docs = list(iter_heartbeat_docs(self.store))
        except StoreUnavailable as exc:
            if self.store_ok is not False:
                log.warning("store unavailable: %s", exc)
            self.store_ok = False
            return 0
        except Exception as exc:  # the database may not exist yet on a fresh node
            log.warning("heartbeat documents unreadable: %s", exc)
            return 0
        self.store_ok = True
        return self.ops.record_heartbeat_docs(docs, time.time())

    def run(self, stop: threading.Event) -> None:
        ready = os.environ.get("TONGBAN_READY_FILE")
        self.mqtt.start(wait_s=30)
        next_poll = 0.0
        try:
            while not stop.is_set():
                self.flush()
                if time.monotonic() >= next_poll:
                    self.poll_heartbeats()
                    next_poll = time.monotonic() + HEARTBEAT_POLL_S
                if ready and self.mqtt.connected and not Path(ready).exists():
                    Path(ready).touch()
                stop.wait(FLUSH_INTERVAL_S)
            self.flush()
        finally:
            self.mqtt.stop()
            if ready:
                Path(ready).unlink(missing_ok=True)


def run_collector(config: NodeConfig, stop: threading.Event) -> None:
    Collector(config).run(stop)
