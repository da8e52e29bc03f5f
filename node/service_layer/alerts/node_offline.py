"""A node dark (no heartbeat, a last will, or a clean stop) for longer than ``offline_alert_s``."""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import iso, rounded

KIND = "node_offline"


def holds(situation: Situation) -> list[str]:
    limit = situation.thresholds.offline_alert_s
    return [node.code for node in situation.nodes if node.status == "offline" and (node.offline_for_s or 0.0) >= limit]


def says(situation: Situation, node: str) -> dict[str, Any]:
    health = situation.by_code[node]
    return {
        "reason": health.reason,
        "last_seen": iso(health.last_seen),
        "offline_for_s": rounded(health.offline_for_s),
        "threshold_s": situation.thresholds.offline_alert_s,
    }
