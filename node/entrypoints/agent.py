"""The node agent: one long-lived process per node holding its MQTT presence.

It publishes a retained ``online`` heartbeat (with a last will that says ``offline`` if the
agent vanishes), and on a clean stop publishes ``offline`` itself, since a clean disconnect does
not fire the will.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from node.adapters.mqtt import MqttLink, heartbeat, status_topic
from node.bootstrap import NodeContext

HEARTBEAT_INTERVAL_S = 10.0


def run_agent(context: NodeContext, stop: threading.Event) -> None:
    code = context.config.code
    link = MqttLink(context.config.mqtt_host, context.config.mqtt_port, client_id=f"{code}-agent", will_node=code)
    link.start(wait_s=30)
    ready = os.environ.get("TONGBAN_READY_FILE")
    announced = False
    try:
        while True:
            if link.connected:
                link.publish(status_topic(code), heartbeat(code, context.version), retain=True)
                if ready and not announced:
                    Path(ready).touch()
                    announced = True
            if stop.wait(HEARTBEAT_INTERVAL_S if link.connected else 1.0):
                break
    finally:
        if link.connected:
            link.publish(status_topic(code), {"node": code, "status": "offline", "reason": "stopped"}, retain=True)
        link.stop()
        if ready:
            Path(ready).unlink(missing_ok=True)
