"""A document store that does not answer: an online node says so in a fresh report, or the city's own probe fails."""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import fresh_report

KIND = "store_unreachable"


def holds(situation: Situation) -> list[str]:
    found = [
        node.code
        for node in situation.nodes
        if node.status == "online"
        and node.store_reachable is False
        and fresh_report(situation.snapshot, node.code, situation.now, situation.thresholds)
    ]
    own = situation.own_code
    if own is not None and situation.own_store_ok is False and own not in found:
        found.append(own)
    return found


def says(situation: Situation, node: str) -> dict[str, Any]:
    own_probe_failed = node == situation.own_code and situation.own_store_ok is False
    return {"source": "city probe" if own_probe_failed else "node report"}
