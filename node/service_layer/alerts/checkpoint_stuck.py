"""An online node with changes pending while its push checkpoint has not moved for ``stuck_alert_s``."""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import iso, rounded

KIND = "checkpoint_stuck"


def holds(situation: Situation) -> list[str]:
    return [
        node.code
        for node in situation.nodes
        if node.status == "online" and (link := situation.links.get(node.code)) is not None and link.state == "stuck"
    ]


def says(situation: Situation, node: str) -> dict[str, Any]:
    link = situation.links[node]
    return {
        "pending": link.pending,
        "stuck_for_s": rounded(link.stuck_for_s),
        "checkpoint_moved_at": iso(link.push.get("checkpoint_moved_at")),
        "last_error": link.last_error,
        "threshold_s": situation.thresholds.stuck_alert_s,
    }
