"""An online node whose heartbeat documents reach the city late, or never arrived since it was first heard of."""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import rounded

KIND = "link_lag"


def holds(situation: Situation) -> list[str]:
    now, limit = situation.now, situation.thresholds.lag_alert_s
    found = []
    for node in situation.nodes:
        if node.status != "online" or node.parent is None:
            continue  # a dark node's link is covered by the offline alert
        never_arrived = node.lag_s is None and now - (node.first_seen or now) > limit
        if never_arrived or (node.lag_s is not None and node.lag_s > limit):
            found.append(node.code)
    return found


def says(situation: Situation, node: str) -> dict[str, Any]:
    health = situation.by_code[node]
    return {
        "lag_s": rounded(health.lag_s),
        "pending": health.pending,
        "threshold_s": situation.thresholds.lag_alert_s,
        "no_heartbeat_document": health.lag_s is None,
    }
