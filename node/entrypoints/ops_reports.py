"""The ops messages nodes publish (``tongban/up/<node>/status`` and ``…/ops``) parsed into reports.

Every value comes from another node: each is type-checked and bounded here, and a message that does
not parse is dropped (``None``), never an error in the collector. The node is taken from the topic —
the bridges keep topics intact — never from the payload alone (a quarantine report's payload ``node``
is the document's signer).
"""

from __future__ import annotations

from typing import Any

from node.adapters.mqtt import topic_node
from node.adapters.opsmodel import LinkReport, QuarantineReport, StatusReport


def parse_status(topic: str, payload: dict[str, Any], received_at: float, retained: bool) -> StatusReport | None:
    code = topic_node(topic)
    status = payload.get("status")
    if code is None or status not in ("online", "offline"):
        return None
    seen_at = received_at
    at = payload.get("at")
    if retained and isinstance(at, int | float):
        # A retained message may be hours old (its node went dark without a will reaching us): trust its
        # own timestamp, never a future one. A live message is as fresh as its arrival, whatever the
        # node's clock says.
        seen_at = min(float(at), received_at)
    version = payload.get("version")
    reason = payload.get("reason")
    if status == "offline" and reason is None:
        reason = "will"  # the broker published the agent's last will: the connection was lost
    return StatusReport(
        code=code,
        status=status,
        received_at=received_at,
        seen_at=seen_at,
        version=str(version)[:40] if version is not None else None,
        reason=str(reason)[:40] if reason is not None else None,
    )


def parse_ops(topic: str, payload: dict[str, Any], received_at: float) -> LinkReport | QuarantineReport | None:
    code = topic_node(topic)
    if code is None:
        return None
    kind = payload.get("kind")
    if kind == "link":
        store = payload.get("store") if isinstance(payload.get("store"), dict) else {}
        pending = payload.get("pending")
        size, docs = store.get("size"), store.get("doc_count")
        return LinkReport(
            code=code,
            received_at=received_at,
            parent=payload.get("parent") if isinstance(payload.get("parent"), str) else None,
            push=payload["push"] if isinstance(payload.get("push"), dict) else {},
            pull=payload["pull"] if isinstance(payload.get("pull"), dict) else {},
            pending=int(pending) if isinstance(pending, int) and not isinstance(pending, bool) else None,
            store_reachable=store["reachable"] if isinstance(store.get("reachable"), bool) else None,
            store_docs=int(docs) if isinstance(docs, int) else None,
            store_size=int(size) if isinstance(size, int) else None,
            incomplete=_count(payload.get("incomplete")),
        )
    if kind == "quarantine" and isinstance(payload.get("doc_id"), str):
        return QuarantineReport(
            reporter=code,
            doc_id=payload["doc_id"][:200],
            case_no=str(payload.get("case_no"))[:80] if payload.get("case_no") else None,
            signer=str(payload.get("node"))[:20] if payload.get("node") else None,
            reason=str(payload.get("reason"))[:300] if payload.get("reason") else None,
            received_at=received_at,
        )
    return None


def _count(value: Any) -> int | None:
    """A non-negative count from another node, bounded; anything else is not reported."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9:
        return value
    return None
