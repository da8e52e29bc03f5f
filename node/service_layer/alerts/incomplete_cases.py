"""A node has held cases with a gap in their history for ``incomplete_alert_s`` (its re-requests did not close it).

A gap is an event naming a predecessor the node does not hold: withheld by a hop on the way or lost.
The node asks its parent for the missing steps again and again; a gap that outlasts those requests
means the tree above lacks them too (or a hop keeps withholding them), which people must look into.
"""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import rounded

KIND = "incomplete_cases"


def holds(situation: Situation) -> list[str]:
    limit = situation.thresholds.incomplete_alert_s
    return [
        node.code
        for node in situation.nodes
        if node.incomplete
        and node.incomplete_fresh
        and node.incomplete_for_s is not None
        and node.incomplete_for_s >= limit
    ]


def says(situation: Situation, node: str) -> dict[str, Any]:
    health = situation.by_code[node]
    return {
        "incomplete": health.incomplete,
        "incomplete_for_s": rounded(health.incomplete_for_s),
        "threshold_s": situation.thresholds.incomplete_alert_s,
    }
