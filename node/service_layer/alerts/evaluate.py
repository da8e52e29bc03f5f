"""Running the rules: open, refresh and close alerts (idempotent), and announce the changes on MQTT.

The alerts table is the outbox: an announcement lost with a broker outage is sent on a later run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.adapters.mqtt import alerts_topic
from node.adapters.opsmodel import OpsModel
from node.config import Thresholds
from node.service_layer.alerts.registry import RULES
from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import iso
from tiers import DivisionTree


@dataclass
class AlertChanges:
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    open: int = 0


def conditions(situation: Situation) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, node) → detail for every rule that holds right now."""
    return {(rule.KIND, node): rule.says(situation, node) for rule in RULES for node in rule.holds(situation)}


def evaluate_alerts(
    ops: OpsModel,
    tree: DivisionTree,
    now: float,
    thresholds: Thresholds,
    own_code: str | None = None,
    own_store_ok: bool | None = None,
) -> AlertChanges:
    """Open alerts for new troubles, refresh those still there, close those gone. Idempotent."""
    found = conditions(Situation.read(ops, tree, now, thresholds, own_code, own_store_ok))
    current = ops.open_alerts()
    to_open = {key: detail for key, detail in found.items() if key not in current}
    to_refresh = {alert["id"]: found[key] for key, alert in current.items() if key in found}
    to_close = [alert["id"] for key, alert in current.items() if key not in found]
    opened, closed = ops.apply_alerts(to_open, to_refresh, to_close, now)
    return AlertChanges(opened, closed, len(found))


Publish = Callable[[str, dict[str, Any]], bool]


def announce(ops: OpsModel, publish: Publish, city: str, tree: DivisionTree, now: float | None = None) -> int:
    """Publish every opening and closing not yet acknowledged by the broker; stops at the first failure."""
    sent = 0
    for alert in ops.unannounced():
        for which in ("opened", "closed"):
            column = "open_announced_at" if which == "opened" else "close_announced_at"
            if alert[column] is not None or (which == "closed" and alert["closed_at"] is None):
                continue
            if not publish(alerts_topic(city), {"event": which, **alert_json(alert, tree)}):
                return sent
            ops.mark_announced(alert["id"], which, now if now is not None else time.time())
            sent += 1
    return sent


def alert_json(alert: dict[str, Any], tree: DivisionTree) -> dict[str, Any]:
    """An alert as it is announced on MQTT and served by the ops API: ISO-8601 times, the node's name."""
    node = alert["node"]
    return {
        "id": alert["id"],
        "kind": alert["kind"],
        "node": node,
        "node_name": tree.get(node).name if node in tree else node,
        "state": "open" if alert["closed_at"] is None else "closed",
        "opened_at": iso(alert["opened_at"]),
        "updated_at": iso(alert["updated_at"]),
        "closed_at": iso(alert["closed_at"]),
        "acknowledged_by": alert["acknowledged_by"],
        "acknowledged_at": iso(alert["acknowledged_at"]),
        "detail": alert["detail"],
    }
