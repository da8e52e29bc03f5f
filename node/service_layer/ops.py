"""City operations: who is online, how far behind each link is, which alerts are open, the case figures.

Pure apart from the :class:`OpsModel` it reads and writes; every function takes ``now`` so the rules
can be checked without waiting. The pieces:

- :func:`parse_status` / :func:`parse_ops`: MQTT messages (``tongban/up/<node>/status`` and ``…/ops``)
  into reports. The node is taken from the topic — the bridges keep topics intact — never from the
  payload alone (a quarantine report's payload ``node`` is the document's signer).
- :func:`node_views` / :func:`link_views`: every node of the tree with its status (``unknown`` until
  heard of), last heartbeat, version, store size, and its uplink's lag: the age of the newest
  ``heartbeat:<node>`` document the city holds, with the changes still pending at the node.
- :func:`evaluate_alerts`: the alert rules. Each rule names the (kind, node) pairs that are in
  trouble now; an alert opens for a new pair, stays open (its detail refreshed) while the pair is
  still named, and closes when it is not. Running it twice changes nothing the second time.
- :func:`case_figures` / :func:`figures_csv`: city-wide case figures from the read model.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from node.adapters.opsmodel import LinkReport, OpsModel, OpsSnapshot, QuarantineReport, StatusReport
from node.domain.case import Case
from node.domain.errors import DomainError
from tiers import DivisionTree, Tier
from tiers.tree import is_well_formed

# --- thresholds -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """When a node counts as dark and when an alert opens. Override in ``<data_dir>/ops.json``."""

    # Agents heartbeat every 10 s: three missed beats and the node is offline even without a last will
    # (its broker or its uplink may be down, so no will can reach the city).
    stale_after_s: float = 35.0
    # "Within a minute": offline this long (since its last heartbeat) and the beat job, every 15 s, alerts.
    offline_alert_s: float = 45.0
    # Heartbeat documents cross up to three links, each synced at least every 10 s: ~40 s is normal.
    lag_alert_s: float = 300.0
    # Changes pending at the node while its push checkpoint has not moved for this long.
    stuck_alert_s: float = 120.0
    # A link report older than this says nothing about the link any more.
    report_fresh_s: float = 60.0

    @classmethod
    def load(cls, data_dir: Path) -> Thresholds:
        path = data_dir / "ops.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {k: float(v) for k, v in raw.items() if k in cls.__dataclass_fields__ and isinstance(v, int | float)}
        return cls(**known)


ALERT_KINDS = ("node_offline", "link_lag", "checkpoint_stuck", "quarantine", "store_unreachable")


def alerts_topic(node: str) -> str:
    return f"tongban/up/{node}/alerts"


# --- MQTT messages into reports ---------------------------------------------------------------------------


def topic_node(topic: str) -> str | None:
    """``tongban/up/<node>/<kind>`` → ``<node>`` when it is a well-formed division code."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[1] != "up" or not is_well_formed(parts[2]):
        return None
    return parts[2]


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


# --- the tree ---------------------------------------------------------------------------------------------

TIER_NAMES = {Tier.CITY: "city", Tier.COUNTY: "county", Tier.TOWNSHIP: "township", Tier.VILLAGE: "village"}


@dataclass(frozen=True)
class Layout:
    """The tree flattened once: depth-first order, each node's tier name and county."""

    order: tuple[str, ...]
    tier: dict[str, str]
    county: dict[str, str | None]


@lru_cache(maxsize=4)
def layout(tree: DivisionTree) -> Layout:
    order: list[str] = []
    tier: dict[str, str] = {}
    county: dict[str, str | None] = {}
    stack = [(tree.root, None)]
    while stack:
        code, in_county = stack.pop()
        division = tree.get(code)
        if division.tier is Tier.COUNTY:
            in_county = code
        order.append(code)
        tier[code] = TIER_NAMES[division.tier]
        county[code] = in_county
        stack.extend((child, in_county) for child in reversed(division.children))
    return Layout(tuple(order), tier, county)


def iso(instant: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC (``2026-11-27T06:26:53Z``); cheap enough for every node on every request."""
    if instant is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))


# --- nodes and links --------------------------------------------------------------------------------------


@dataclass
class NodeView:
    code: str
    name: str
    tier: str
    parent: str | None
    status: str  # online | offline | unknown
    reason: str | None = None  # offline: stopped | will | no_heartbeat
    last_seen: float | None = None  # newest heartbeat
    version: str | None = None
    store_size: int | None = None
    store_reachable: bool | None = None
    lag_s: float | None = None  # age of its newest heartbeat document at the city (None for the city)
    pending: int | None = None
    offline_for_s: float | None = None
    first_seen: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "tier": self.tier,
            "parent": self.parent,
            "status": self.status,
            "reason": self.reason,
            "last_seen": iso(self.last_seen),
            "version": self.version,
            "store_size": self.store_size,
            "lag_s": _round(self.lag_s),
            "pending": self.pending,
            "offline_for_s": _round(self.offline_for_s),
        }


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _node_status(
    row: dict[str, Any] | None, now: float, thresholds: Thresholds
) -> tuple[str, str | None, float | None]:
    """(status, offline reason, offline for how long) from the newest status row."""
    if row is None or row.get("status") is None:
        return "unknown", None, None
    last = row.get("last_heartbeat_at")
    since = last if last else row.get("status_changed_at") or row["received_at"]
    if row["status"] == "offline":
        return "offline", row.get("reason") or "will", max(0.0, now - since)
    if last is None or now - last > thresholds.stale_after_s:
        return "offline", "no_heartbeat", max(0.0, now - since)
    return "online", None, None


def node_views(
    ops: OpsModel, tree: DivisionTree, now: float, thresholds: Thresholds, snapshot: OpsSnapshot | None = None
) -> list[NodeView]:
    """Every node of the tree, depth first (city, county, its townships and their villages, …)."""
    snapshot = snapshot or ops.snapshot()
    statuses, links, heartbeats = snapshot.statuses, snapshot.links, snapshot.heartbeats
    shape = layout(tree)
    views = []
    for code in shape.order:
        division = tree.get(code)
        row = statuses.get(code)
        status, reason, offline_for = _node_status(row, now, thresholds)
        beat = heartbeats.get(code)
        link = links.get(code)
        views.append(
            NodeView(
                code=code,
                name=division.name,
                tier=shape.tier[code],
                parent=division.parent,
                status=status,
                reason=reason,
                last_seen=(row.get("last_heartbeat_at") or None) if row else None,
                version=row.get("version") if row else None,
                store_size=row.get("store_size") if row else None,
                store_reachable=row.get("store_reachable") if row else None,
                lag_s=max(0.0, now - beat) if beat is not None and division.parent is not None else None,
                pending=link.get("pending") if link else None,
                offline_for_s=offline_for,
                first_seen=row.get("first_seen_at") if row else None,
            )
        )
    return views


@dataclass
class LinkView:
    child: str
    parent: str
    name: str
    tier: str
    state: str  # unknown | offline | stuck | error | lagging | ok
    lag_s: float | None
    pending: int | None
    stuck_for_s: float | None
    reported_at: float | None
    push: dict[str, Any] = field(default_factory=dict)
    pull: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return int(self.push.get("errors") or 0) + int(self.pull.get("errors") or 0)

    @property
    def last_error(self) -> str | None:
        return self.push.get("last_error") or self.pull.get("last_error")

    @property
    def last_success(self) -> float | None:
        return self.push.get("last_success")

    def to_json(self) -> dict[str, Any]:
        def direction(stats: dict[str, Any]) -> dict[str, Any]:
            return {
                "last_success": iso(stats.get("last_success")),
                "last_attempt": iso(stats.get("last_attempt")),
                "docs_written": stats.get("docs_written"),
                "errors": stats.get("errors"),
                "last_error": stats.get("last_error"),
                "checkpoint_moved_at": iso(stats.get("checkpoint_moved_at")),
            }

        return {
            "child": self.child,
            "parent": self.parent,
            "name": self.name,
            "tier": self.tier,
            "state": self.state,
            "lag_s": _round(self.lag_s),
            "pending": self.pending,
            "stuck": self.state == "stuck",
            "stuck_for_s": _round(self.stuck_for_s),
            "errors": self.errors,
            "last_error": self.last_error,
            "last_success": iso(self.last_success),
            "reported_at": iso(self.reported_at),
            "push": direction(self.push),
            "pull": direction(self.pull),
        }


LINK_SEVERITY = {"stuck": 0, "error": 1, "lagging": 2, "offline": 3, "ok": 4, "unknown": 5}


_DIRECTION_KEYS = ("last_success", "last_attempt", "docs_written", "errors", "last_error", "checkpoint_moved_at")
_COLUMNS = {name: tuple((key, f"{name}_{key}") for key in _DIRECTION_KEYS) for name in ("push", "pull")}


def _direction(link: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: link[column] for key, column in _COLUMNS[name]}


def _failing(stats: dict[str, Any]) -> bool:
    """The newest attempt in this direction did not succeed."""
    attempt = stats.get("last_attempt")
    return bool(attempt) and (stats.get("last_success") or 0.0) < attempt


def link_views(
    ops: OpsModel,
    tree: DivisionTree,
    now: float,
    thresholds: Thresholds,
    nodes: list[NodeView] | None = None,
    snapshot: OpsSnapshot | None = None,
) -> list[LinkView]:
    """Every child → parent link of the tree, in tree order."""
    snapshot = snapshot or ops.snapshot()
    nodes = nodes if nodes is not None else node_views(ops, tree, now, thresholds, snapshot)
    links = snapshot.links
    views = []
    for node in nodes:
        if node.parent is None:
            continue
        link = links.get(node.code)
        fresh = link is not None and now - link["received_at"] <= thresholds.report_fresh_s
        push = _direction(link, "push") if link else {}
        pull = _direction(link, "pull") if link else {}
        stuck_for = None
        if link and link.get("pending") and link.get("pending_since") is not None:
            moved = push.get("checkpoint_moved_at") or 0.0
            stuck_for = max(0.0, now - max(moved, link["pending_since"]))
        failing = _failing(push) or _failing(pull)
        if link is None and node.lag_s is None:
            state = "unknown"
        elif node.status == "offline":
            state = "offline"
        elif fresh and stuck_for is not None and stuck_for >= thresholds.stuck_alert_s:
            state = "stuck"
        elif fresh and failing:
            state = "error"
        elif node.lag_s is not None and node.lag_s > thresholds.lag_alert_s:
            state = "lagging"
        else:
            state = "ok"
        views.append(
            LinkView(
                child=node.code,
                parent=node.parent,
                name=node.name,
                tier=node.tier,
                state=state,
                lag_s=node.lag_s,
                pending=node.pending,
                stuck_for_s=stuck_for,
                reported_at=link["received_at"] if link else None,
                push=push,
                pull=pull,
            )
        )
    return views


def status_counts(nodes: list[NodeView]) -> dict[str, int]:
    counts = {"online": 0, "offline": 0, "unknown": 0}
    for node in nodes:
        counts[node.status] += 1
    return counts


def link_state_counts(links: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for link in links:
        counts[link.state] = counts.get(link.state, 0) + 1
    return dict(sorted(counts.items()))


# --- alerts -----------------------------------------------------------------------------------------------


@dataclass
class AlertChanges:
    opened: list[int] = field(default_factory=list)
    closed: list[int] = field(default_factory=list)
    open: int = 0


def alert_conditions(
    ops: OpsModel,
    tree: DivisionTree,
    now: float,
    thresholds: Thresholds,
    own_code: str | None = None,
    own_store_ok: bool | None = None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, node) → detail for every rule that holds right now."""
    snapshot = ops.snapshot()
    nodes = node_views(ops, tree, now, thresholds, snapshot)
    links = {link.child: link for link in link_views(ops, tree, now, thresholds, nodes, snapshot)}
    raw_links = snapshot.links
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for node in nodes:
        if node.status == "offline" and (node.offline_for_s or 0.0) >= thresholds.offline_alert_s:
            found[("node_offline", node.code)] = {
                "reason": node.reason,
                "last_seen": iso(node.last_seen),
                "offline_for_s": _round(node.offline_for_s),
                "threshold_s": thresholds.offline_alert_s,
            }
        if node.status != "online":
            continue  # a dark node's link is covered by the offline alert
        link = links.get(node.code)
        if node.parent is not None:
            never_arrived = node.lag_s is None and now - (node.first_seen or now) > thresholds.lag_alert_s
            if never_arrived or (node.lag_s is not None and node.lag_s > thresholds.lag_alert_s):
                found[("link_lag", node.code)] = {
                    "lag_s": _round(node.lag_s),
                    "pending": node.pending,
                    "threshold_s": thresholds.lag_alert_s,
                    "no_heartbeat_document": node.lag_s is None,
                }
        if link is not None and link.state == "stuck":
            found[("checkpoint_stuck", node.code)] = {
                "pending": link.pending,
                "stuck_for_s": _round(link.stuck_for_s),
                "checkpoint_moved_at": iso(link.push.get("checkpoint_moved_at")),
                "last_error": link.last_error,
                "threshold_s": thresholds.stuck_alert_s,
            }
        raw = raw_links.get(node.code)
        fresh = raw is not None and now - raw["received_at"] <= thresholds.report_fresh_s
        if fresh and node.store_reachable is False:
            found[("store_unreachable", node.code)] = {"source": "node report"}
    if own_code is not None and own_store_ok is False:
        found[("store_unreachable", own_code)] = {"source": "city probe"}
    for reporter, reports in ops.unacknowledged_quarantine().items():
        found[("quarantine", reporter)] = {
            "count": len(reports),
            "documents": [r["doc_id"] for r in reports[:10]],
            "cases": sorted({r["case_no"] for r in reports if r["case_no"]})[:10],
            "signers": sorted({r["signer"] for r in reports if r["signer"]}),
        }
    return found


def evaluate_alerts(
    ops: OpsModel,
    tree: DivisionTree,
    now: float,
    thresholds: Thresholds,
    own_code: str | None = None,
    own_store_ok: bool | None = None,
) -> AlertChanges:
    """Open alerts for new troubles, refresh those still there, close those gone. Idempotent."""
    conditions = alert_conditions(ops, tree, now, thresholds, own_code, own_store_ok)
    current = ops.open_alerts()
    to_open = {key: detail for key, detail in conditions.items() if key not in current}
    to_refresh = {alert["id"]: conditions[key] for key, alert in current.items() if key in conditions}
    to_close = [alert["id"] for key, alert in current.items() if key not in conditions]
    opened, closed = ops.apply_alerts(to_open, to_refresh, to_close, now)
    return AlertChanges(opened, closed, len(conditions))


Publish = Callable[[str, dict[str, Any]], bool]


def announce(ops: OpsModel, publish: Publish, city: str, tree: DivisionTree, now: float | None = None) -> int:
    """Publish every opening and closing not yet acknowledged by the broker; stops at the first failure.

    The alerts table is the outbox: an announcement lost with a broker outage is sent on a later run.
    """
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


# --- case figures -----------------------------------------------------------------------------------------


class CaseLoader(Protocol):
    """What :func:`refresh_outcomes` needs of the case service."""

    def load(self, case_no: str) -> Case: ...


def refresh_outcomes(ops: OpsModel, cases: CaseLoader, limit: int = 500, budget_s: float = 5.0) -> int:
    """Fold decided cases whose outcome (approved or rejected, 即办, when) is not recorded yet.

    Each case is folded once after its decision (again only when new events arrive), so the cost
    follows the daily volume, not the history. Returns how many were recorded.
    """
    started = time.monotonic()
    rows = []
    for case_no, event_count in ops.cases_needing_outcome(limit):
        row: dict[str, Any] = {
            "case_no": case_no,
            "decision": None,
            "settled": False,
            "decided_at": None,
            "event_count": event_count,
        }
        try:
            case = cases.load(case_no)
        except DomainError:
            case = None  # recorded as undecided, so it does not block the queue; refolded when it changes
        if case is not None:
            decisions = [e for e in case.timeline if e["type"] in ("approved", "rejected", "settled")]
            row["decision"] = case.decision
            row["settled"] = any(e["type"] == "settled" for e in decisions)
            row["decided_at"] = decisions[-1]["at"] if decisions else None
        rows.append(row)
        if time.monotonic() - started > budget_s:
            break
    ops.record_outcomes(rows)
    return len(rows)


def _blank() -> dict[str, Any]:
    return {
        "accepted": 0,
        "approved": 0,
        "rejected": 0,
        "settled_on_spot": 0,
        "warning": 0,
        "yellow": 0,
        "red": 0,
        "cross_county": 0,
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def case_figures(ops: OpsModel, tree: DivisionTree) -> dict[str, Any]:
    """City-wide figures from the read model (the city holds every case).

    ``accepted`` counts at the accepting node (its tier, its county), decisions (approved, rejected,
    即办) and deadline flags at the handling node; refused applications (不予受理) are not accepted
    cases. A case is cross-county when accepted in one county and handled in another.
    """
    shape = layout(tree)
    totals = {**_blank(), "refused": 0, "open": 0, "delivered": 0, "withdrawn": 0, "transferred": 0}
    by_tier = {name: _blank() for name in TIER_NAMES.values()}
    by_county: dict[str, dict[str, Any]] = {}
    states: dict[str, int] = {}

    def county_row(code: str) -> dict[str, Any]:
        key = shape.county.get(code) or (tree.root if code in shape.tier else "unknown")
        return by_county.setdefault(key, _blank())

    for group in ops.case_groups():
        n, state = int(group["n"]), group["state"]
        states[state] = states.get(state, 0) + n
        accepting, handling = group["accepting"], group["handling"]
        if state == "refused":
            totals["refused"] += n
            continue
        decision, settled, flag = group["decision"], bool(group["settled"]), group["flag"]
        cross = (
            shape.county.get(accepting) is not None
            and shape.county.get(handling) is not None
            and shape.county[accepting] != shape.county[handling]
        )
        targets_accepting = [totals, county_row(accepting)]
        if accepting in shape.tier:
            targets_accepting.append(by_tier[shape.tier[accepting]])
        targets_handling = [totals, county_row(handling)]
        if handling in shape.tier:
            targets_handling.append(by_tier[shape.tier[handling]])
        for target in targets_accepting:
            target["accepted"] += n
            if cross:
                target["cross_county"] += n
        for target in targets_handling:
            if decision in ("approved", "rejected"):
                target[decision] += n
            if settled:
                target["settled_on_spot"] += n
            if flag in ("warning", "yellow", "red"):
                target[flag] += n
        if state in ("accepted", "in_review", "supplement_requested"):
            totals["open"] += n
        elif state in ("delivered", "withdrawn"):
            totals[state] += n
        if group["transferred"]:
            totals["transferred"] += n
    for row in [totals, *by_tier.values(), *by_county.values()]:
        row["settled_share"] = _share(row["settled_on_spot"], row["accepted"])
    county_order = [tree.root, *(code for code in shape.order if shape.tier[code] == "county"), "unknown"]
    counties = []
    for code in county_order:
        if code == "unknown" and code not in by_county:
            continue
        name = tree.get(code).name if code in tree else "未知节点"
        counties.append({"code": code, "name": name, **by_county.get(code, {**_blank(), "settled_share": None})})
    matters = [
        {
            "matter_code": row["matter_code"],
            "matter_name": row["matter_name"],
            "accepted": int(row["accepted"]),
            "decided": int(row["decided"]),
            "approved": int(row["approved"] or 0),
            "rejected": int(row["rejected"] or 0),
            "settled_on_spot": int(row["settled"] or 0),
            "avg_handling_days": round(row["avg_days"], 3) if row["avg_days"] is not None else None,
        }
        for row in ops.matter_groups()
    ]
    return {
        "totals": totals,
        "states": states,
        "by_tier": [{"tier": name, **values} for name, values in by_tier.items()],
        "by_county": counties,
        "matters": matters,
    }


CSV_COLUMNS = (
    "section",
    "code",
    "name",
    "accepted",
    "approved",
    "rejected",
    "settled_on_spot",
    "settled_share",
    "warning",
    "yellow",
    "red",
    "cross_county",
    "decided",
    "avg_handling_days",
)


def figures_csv(figures: dict[str, Any]) -> str:
    """One table, one ``section`` column (total, tier, county, matter); UTF-8 with BOM so Excel reads 中文."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    writer.writerow({"section": "total", "code": "", "name": "全市 / city", **figures["totals"]})
    for row in figures["by_tier"]:
        writer.writerow({"section": "tier", "code": row["tier"], "name": row["tier"], **row})
    for row in figures["by_county"]:
        writer.writerow({"section": "county", **row})
    for row in figures["matters"]:
        writer.writerow({"section": "matter", "code": row["matter_code"], "name": row["matter_name"], **row})
    return out.getvalue()


# --- the dashboard ----------------------------------------------------------------------------------------


def tree_groups(tree: DivisionTree, nodes: list[NodeView]) -> list[dict[str, Any]]:
    """Counties with their townships and villages, each with status counts, for the dashboard tree."""
    by_code = {node.code: node for node in nodes}
    counties = []
    for county_code in tree.children(tree.root):
        county = by_code[county_code]
        townships = []
        counts = {"online": 0, "offline": 0, "unknown": 0}
        counts[county.status] += 1
        for township_code in tree.children(county_code):
            township = by_code[township_code]
            villages = [by_code[code] for code in tree.children(township_code)]
            counts[township.status] += 1
            for village in villages:
                counts[village.status] += 1
            townships.append({"node": township, "villages": villages})
        counties.append({"node": county, "townships": townships, "counts": counts})
    return counties
