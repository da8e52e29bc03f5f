"""City operations' periodic job: evaluate the alert rules, keep figures current, announce alerts on MQTT.

Run by the Celery beat (``tongban.evaluate_alerts``, every 15 s) on every node; it does its work only
where the node monitors operations (``NodeConfig.monitors_operations``: the city) and returns at
once elsewhere. The ops model and the MQTT link are the worker's, built by :mod:`node.bootstrap`.
"""

from __future__ import annotations

import time
from typing import Any

from node.bootstrap import NodeContext
from node.config import Thresholds
from node.service_layer.alerts import announce, evaluate_alerts
from node.service_layer.ops import refresh_outcomes

OUTCOMES_PER_RUN = 500
OUTCOMES_BUDGET_S = 5.0


def publish_alert(context: NodeContext, topic: str, payload: dict[str, Any]) -> bool:
    """QoS 1, not retained; True once the broker acknowledged it."""
    link = context.mqtt
    return link is not None and link.connected and link.publish(topic, payload, retain=False, timeout=5.0)


def evaluate_alerts_job(context: NodeContext, now: float | None = None) -> dict[str, int]:
    ops = context.ops
    if not context.monitors_operations or ops is None:
        return {"skipped": 1}
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
