"""The node agent: one long-lived process per node for what must happen exactly once per node.

- MQTT presence: a retained ``online`` heartbeat with a last will that says ``offline`` if the agent
  vanishes; on a clean stop it publishes ``offline`` itself (a clean disconnect fires no will).
- The read model: follows the store's changes feed (documents written here or replicated in).
- Cases that arrive for this node are taken in (``received``) so their timeline shows when.
- Quarantined documents are reported on the node's ops topic.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from node.adapters.docstore import StoreUnavailable
from node.adapters.mqtt import MqttLink, heartbeat, ops_topic, status_topic
from node.bootstrap import NodeContext, publish_own_documents

HEARTBEAT_INTERVAL_S = 10.0
PROJECTION_INTERVAL_S = 0.5
log = logging.getLogger("tongban.agent")


def run_agent(context: NodeContext, stop: threading.Event) -> None:
    code = context.config.code
    link = MqttLink(context.config.mqtt_host, context.config.mqtt_port, client_id=f"{code}-agent", will_node=code)
    link.start(wait_s=30)
    publish_own_documents(context)
    context.projector.on_case = context.cases.system_receive
    ready = os.environ.get("TONGBAN_READY_FILE")
    announced = False
    reported_quarantine = {row["doc_id"] for row in context.readmodel.quarantined()}
    next_heartbeat = 0.0
    try:
        while not stop.is_set():
            try:
                context.projector.catch_up()
            except StoreUnavailable as exc:
                log.warning("store unavailable: %s", exc)
            for row in context.readmodel.quarantined():
                if row["doc_id"] not in reported_quarantine and link.connected:
                    link.publish(ops_topic(code), {"kind": "quarantine", "node": code, **row})
                    reported_quarantine.add(row["doc_id"])
            if link.connected and time.monotonic() >= next_heartbeat:
                link.publish(status_topic(code), heartbeat(code, context.version), retain=True)
                next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL_S
                if ready and not announced:
                    Path(ready).touch()
                    announced = True
            stop.wait(PROJECTION_INTERVAL_S)
    finally:
        if link.connected:
            link.publish(status_topic(code), {"node": code, "status": "offline", "reason": "stopped"}, retain=True)
        link.stop()
        if ready:
            Path(ready).unlink(missing_ok=True)
