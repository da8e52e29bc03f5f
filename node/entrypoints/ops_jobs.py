"""City operations' periodic job: evaluate the alert rules, keep figures current, announce alerts on MQTT.

Run by the Celery beat (``tongban.evaluate_alerts``, every 15 s) on every node; it does its work only
where the tier has the ops-monitoring capability (the city) and returns at once elsewhere.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from node.adapters.mqtt import MqttLink
from node.adapters.opsmodel import OpsModel
from node.bootstrap import NodeContext
from node.config import Thresholds
from node.service_layer.alerts import announce, evaluate_alerts
from node.service_layer.ops import refresh_outcomes
from tiers import Capability, capabilities

OUTCOMES_PER_RUN = 500
OUTCOMES_BUDGET_S = 5.0

_lock = threading.Lock()
_models: dict[str, OpsModel] = {}
_links: dict[str, MqttLink] = {}


def monitors(context: NodeContext) -> bool:
    return Capability.OPS_MONITORING in capabilities(context.division.tier)


def ops_model(context: NodeContext) -> OpsModel:
    """One model per node per process (the engine pools its connections)."""
    key = str(context.config.data_dir)
    with _lock:
        if key not in _models:
            _models[key] = OpsModel.for_node(context.config.data_dir)
        return _models[key]


def _publisher(context: NodeContext) -> MqttLink:
    code = context.config.code
    with _lock:
        link = _links.get(code)
        if link is None:
            link = MqttLink(context.config.mqtt_host, context.config.mqtt_port, client_id=f"{code}-ops-alerts")
            link.start(wait_s=5)
            _links[code] = link
        return link


def publish_alert(context: NodeContext, topic: str, payload: dict[str, Any]) -> bool:
    """QoS 1, not retained; True once the broker acknowledged it."""
    link = _publisher(context)
    return link.connected and link.publish(topic, payload, retain=False, timeout=5.0)


def evaluate_alerts_job(context: NodeContext, now: float | None = None) -> dict[str, int]:
    if not monitors(context):
        return {"skipped": 1}
    ops = ops_model(context)
    now = time.time() if now is None else now
    store_ok = context.store.reachable()
    outcomes = refresh_outcomes(ops, context.cases, OUTCOMES_PER_RUN, OUTCOMES_BUDGET_S) if store_ok else 0
    changes = evaluate_alerts(
        ops, context.tree, now, Thresholds.load(context.config.data_dir), context.config.code, store_ok
    )
    announced = announce(
        ops, lambda topic, payload: publish_alert(context, topic, payload), context.config.code, context.tree
    )
    return {
        "opened": len(changes.opened),
        "closed": len(changes.closed),
        "open": changes.open,
        "announced": announced,
        "outcomes": outcomes,
    }
