"""A node quarantined documents (a signature or hash chain that failed) and nobody has acknowledged them yet."""

from __future__ import annotations

from typing import Any

from node.service_layer.alerts.situation import Situation

KIND = "quarantine"


def holds(situation: Situation) -> list[str]:
    return list(situation.quarantine)


def says(situation: Situation, node: str) -> dict[str, Any]:
    reports = situation.quarantine[node]
    return {
        "count": len(reports),
        "documents": [r["doc_id"] for r in reports[:10]],
        "cases": sorted({r["case_no"] for r in reports if r["case_no"]})[:10],
        "signers": sorted({r["signer"] for r in reports if r["signer"]}),
    }
