"""The ops collector: the city's record of what every node says about itself.

One small process at nodes with the ops-monitoring capability (the city). It subscribes on the
city's own broker — which receives every node's ``tongban/up/#`` through the bridges — to
``tongban/up/+/status`` and ``tongban/up/+/ops``, admits only reports sealed by the node their topic
names (:class:`~node.entrypoints.ops_reports.ReportGate`: refusals are counted and raise an alert)
and writes them into ``ops.sqlite3``; and it reads the ``heartbeat:<node>`` documents that
replication brought into the city's store, whose age is each link's lag. It only subscribes and
never publishes, so nothing it does can loop back.

Reports are queued by the MQTT network thread and written by the main loop in one transaction
every half second: ~1,560 nodes × (status + ops) every 10 s is ~300 messages a second, which one
SQLite transaction per message would not keep up with.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from node.adapters.docstore import StoreUnavailable
from node.adapters.mqtt import MqttLink, ops_pattern, status_pattern
from node.adapters.opsmodel import (
    LinkReport,
    QuarantineReport,
    RejectionReport,
    StatusReport,
    iter_heartbeat_docs,
)
from node.adapters.pki import NodeIdentity
from node.adapters.signed_reports import MAX_REPORT_BYTES
from node.bootstrap import CollectorContext
from node.entrypoints.ops_reports import HARMLESS, ReportGate, parse_ops, parse_status
from tiers import yiyang

STATUS_PATTERN = status_pattern()
OPS_PATTERN = ops_pattern()
FLUSH_INTERVAL_S = 0.5
HEARTBEAT_POLL_S = 5.0
log = logging.getLogger("tongban.collector")


class _RetainAwareLink(MqttLink):
    """An :class:`MqttLink` that hands over each message's raw bytes and whether it was retained.

    The bytes go to :class:`ReportGate` unparsed: it bounds their size before JSON sees them. A
    retained status may be hours old; only for those (and late ones) does the collector fall back on
    the timestamp inside the message (see :func:`node.entrypoints.ops_reports.parse_status`).
    """

    def __init__(self, *args: Any, on_message: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = on_message

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._deliver(message.topic, bytes(message.payload or b""), bool(message.retain))


class Collector:
    def __init__(self, context: CollectorContext, client_id: str | None = None) -> None:
        config = self.config = context.config
        self.ops = context.ops
        self.store = context.store
        self.inbox: queue.SimpleQueue[tuple[str, bytes, bool, float]] = queue.SimpleQueue()
        self.gate = ReportGate(NodeIdentity.load(config.identity_dir).ca_pem, yiyang())
        self.mqtt = _RetainAwareLink(
            config.mqtt_host,
            config.mqtt_port,
            client_id=client_id or f"{config.code}-ops-collector",
            # A persistent session: QoS 1 reports (quarantine) published while the collector restarts
            # are kept for it by the broker.
            clean_start=False,
            credentials=config.mqtt_credentials(),
            on_message=self.receive,
        )
        # Handlers are dispatched by _RetainAwareLink itself; these register the subscriptions.
        self.mqtt.subscribe(STATUS_PATTERN, lambda _t, _p: None)
        self.mqtt.subscribe(OPS_PATTERN, lambda _t, _p: None)
        self.received = 0
        self.store_ok: bool | None = None

    def receive(self, topic: str, payload: bytes, retained: bool) -> None:
        """Called on the MQTT network thread: queue only, never block it on the database."""
        if len(payload) > MAX_REPORT_BYTES:
            payload = payload[: MAX_REPORT_BYTES + 1]  # enough for the gate to refuse it, no more kept in memory
        self.inbox.put((topic, payload, retained, time.time()))

    def flush(self) -> int:
        """Write every queued report; returns how many messages were taken."""
        statuses: list[StatusReport] = []
        links: list[LinkReport] = []
        quarantined: list[QuarantineReport] = []
        rejected: list[RejectionReport] = []
        taken = 0
        while True:
            try:
                topic, raw, retained, received_at = self.inbox.get_nowait()
            except queue.Empty:
                break
            taken += 1
            admitted = self.gate.admit(topic, raw, retained, received_at)
            if isinstance(admitted, RejectionReport):
                if admitted.reason not in HARMLESS:
                    log.warning(
                        "refused a report on %s (%s%s): %s",
                        topic[:120],
                        admitted.reason,
                        f", signed by {admitted.signer}" if admitted.signer else "",
                        admitted.detail,
                    )
                    if admitted.code:  # a node of the tree (the gate checked): bounded rows
                        rejected.append(admitted)
                continue
            payload = admitted.body
            if topic.endswith("/status"):
                status = parse_status(topic, payload, received_at, retained or admitted.own_time)
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
        if rejected:
            self.ops.record_rejections(rejected)
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


def run_collector(context: CollectorContext, stop: threading.Event) -> None:
    Collector(context).run(stop)
