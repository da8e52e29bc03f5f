"""The ops messages nodes publish (``tongban/up/<node>/status`` and ``…/ops``): admitted, then parsed into reports.

:class:`ReportGate` decides what the collector believes. Bridges re-publish messages, so the topic
says only who a message *claims* to come from; a report counts only when it is sealed by that node's
key (:mod:`node.adapters.signed_reports`), its certificate is the city CA's, and it is neither a
replay nor from the future. Everything else is dropped, counted and — unless it is a harmless
redelivery — recorded as a rejection naming the claimed node and the real signer, which raises an
``mqtt_rejected`` alert at city operations.

Every value comes from another node: each is type-checked and bounded here, and a message that does
not parse is dropped (``None``), never an error in the collector. The node is taken from the topic —
the bridges keep topics intact, and the seal binds the topic — never from the payload alone (a
quarantine report's payload ``node`` is the document's signer).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from node.adapters.mqtt import topic_node
from node.adapters.opsmodel import LinkReport, QuarantineReport, RejectionReport, StatusReport
from node.adapters.signed_reports import MAX_REPORT_BYTES, ReportOpener, ReportRefused
from sync.auth import ReplayCache
from tiers import DivisionTree

# A live report's time may differ from the collector's clock by this much (the sync API allows the same).
FRESH_S = 300.0
REPORT_KINDS = ("status", "ops", "alerts")
# One node's reports of one kind come from one process over one connection, in order; this much
# earlier than the newest taken is still believed (a clock stepped back a little), no more.
REORDER_S = 30.0
# Refusals that are expected in normal operation and prove nothing against anyone: a retained or
# re-delivered copy of a report already taken, an old agent session's last will arriving after the
# new session's heartbeat, an empty message clearing a retained one. Counted, never alerted.
HARMLESS = frozenset({"cleared", "duplicate", "outdated", "superseded_will"})
log = logging.getLogger("tongban.collector")


@dataclass(frozen=True)
class Admitted:
    """A report the collector believes: its body, and whether to date it by its own time (not its arrival)."""

    body: dict[str, Any]
    own_time: bool


class ReportGate:
    """Admits sealed, fresh, first-seen reports from the node their topic names; refuses the rest with a reason.

    Replays: a nonce is accepted once (``2 × FRESH_S``), and a report more than ``REORDER_S`` older
    than the newest taken from its node and kind is refused. A report older than ``FRESH_S`` (queued
    during an outage: they arrive late and in order) or retained (delivered on subscribe) is dated by
    its own time, not its arrival; one from more than ``FRESH_S`` in the future is refused. A last
    will is signed when its agent connects and fires later: it is taken once, and only while its
    session is the node's newest.
    """

    def __init__(self, ca_pem: bytes, tree: DivisionTree, fresh_s: float = FRESH_S) -> None:
        self.opener = ReportOpener(ca_pem)
        self.tree = tree
        self.fresh_s = fresh_s
        self.nonces = ReplayCache(ttl_s=2 * fresh_s)
        self.newest: dict[tuple[str, str], float] = {}  # (node, kind) → newest report time taken
        self.sessions: dict[str, str] = {}  # node → session of its newest status taken
        self.refused: Counter[str] = Counter()  # reason → how many, since the collector started

    def admit(self, topic: str, raw: bytes, retained: bool, received_at: float) -> Admitted | RejectionReport:
        try:
            return self._admit(topic, raw, retained, received_at)
        except Exception as exc:  # whatever another node sends, the collector goes on
            refusal = exc if isinstance(exc, ReportRefused) else ReportRefused("unreadable", type(exc).__name__)
            if not isinstance(exc, ReportRefused):
                log.exception("report on %s could not be checked", topic[:120])
            self.refused[refusal.reason] += 1
            return RejectionReport(
                code=topic_node(topic) or "",
                reason=refusal.reason,
                signer=refusal.signer,
                topic=topic[:120],
                detail=refusal.detail,
                received_at=received_at,
            )

    def _admit(self, topic: str, raw: bytes, retained: bool, received_at: float) -> Admitted:
        claimed, kind = topic_node(topic), topic.rsplit("/", 1)[-1]
        if claimed is None or claimed not in self.tree or kind not in REPORT_KINDS:
            raise ReportRefused("bad_topic", "the topic names no node of the tree or no kind of report")
        if not raw:  # an empty retained message deletes the retained one: it says nothing
            raise ReportRefused("cleared", "an empty message (a retained report cleared)")
        if len(raw) > MAX_REPORT_BYTES:
            raise ReportRefused("oversize", f"{len(raw)} bytes, more than {MAX_REPORT_BYTES}")
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            raise ReportRefused("malformed", "not JSON") from None
        if not isinstance(payload, dict):
            raise ReportRefused("malformed", "not a JSON object")
        report = self.opener.open(topic, claimed, payload)
        first = self.nonces.first_use(f"{claimed}:{report.nonce}", received_at)
        if report.will:
            if kind != "status" or report.body.get("status") != "offline":
                raise ReportRefused("malformed", "a last will may only say offline", signer=claimed)
            if not first:
                raise ReportRefused("duplicate", "this last will was already taken", signer=claimed)
            if self.sessions.get(claimed, report.session) != report.session:
                raise ReportRefused("superseded_will", "the will of an agent session already replaced", claimed)
            return Admitted(report.body, own_time=True)
        if not first:
            reason = "duplicate" if retained else "replayed"
            raise ReportRefused(reason, "this report (its nonce) was already taken", signer=claimed)
        age = received_at - report.at
        if age < -self.fresh_s:
            raise ReportRefused("future", f"dated {-age:.0f} s ahead of the city's clock", signer=claimed)
        newest = self.newest.get((claimed, kind))
        if newest is not None and report.at < newest - REORDER_S:
            reason = "outdated" if retained else "replayed"
            raise ReportRefused(reason, f"dated {newest - report.at:.0f} s before a report already taken", claimed)
        self.newest[(claimed, kind)] = max(report.at, newest or report.at)
        if kind == "status":
            self.sessions[claimed] = report.session
        return Admitted(report.body, own_time=retained or age > self.fresh_s)


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
