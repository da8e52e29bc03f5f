"""MQTT reports refused by the collector (unsigned, forged, replayed …) under a node's topics, not yet acknowledged.

The alert names the node the reports claimed to come from; its detail names the real signers when
their signatures held (a node publishing under another's topic) and counts each reason.
"""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation
from node.service_layer.ops import iso

KIND = "mqtt_rejected"


def holds(situation: Situation) -> list[str]:
    return list(situation.rejections)


def says(situation: Situation, node: str) -> dict[str, Any]:
    rows = situation.rejections[node]
    return {
        "count": sum(row["count"] for row in rows),
        # "reason × count" strings: the dashboard shows lists and scalars, not objects.
        "reasons": sorted(f"{row['reason']} × {row['count']}" for row in rows),
        "signers": sorted({row["signer"] for row in rows if row["signer"]}),
        "topics": sorted({row["topic"] for row in rows})[:10],
        "last_at": iso(max(row["last_at"] for row in rows)),
    }
