"""City operations as data: each node's health and each link's state, case outcomes and city-wide figures.

Pure apart from the :class:`OpsModel` it reads and writes; every function takes ``now`` so the rules
can be checked without waiting.

- :func:`node_health` / :func:`link_health`: every node of the tree with its status (``unknown`` until
  heard of), last heartbeat, version, store size, and its uplink's lag: the age of the newest
  ``heartbeat:<node>`` document the city holds, with the changes still pending at the node. The alert
  rules (:mod:`node.service_layer.alerts`) and the dashboard (:mod:`node.entrypoints.web.ops_views`) read them.
- :func:`refresh_outcomes`: fold decided cases once, so figures know approved from rejected.
- :func:`case_figures`: city-wide case figures as data (the web shapes them into tables and CSV).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from node.adapters.opsmodel import OpsModel, OpsSnapshot
from node.config import Thresholds
from node.domain.case import Case
from node.domain.errors import DomainError
from tiers import DivisionTree, Tier

# --- the tree ---------------------------------------------------------------------------------------------


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
        tier[code] = division.tier.key
        county[code] = in_county
        stack.extend((child, in_county) for child in reversed(division.children))
    return Layout(tuple(order), tier, county)


def iso(instant: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC (``2026-11-27T06:26:53Z``); cheap enough for every node on every request."""
    if instant is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))


def rounded(value: float | None) -> float | None:
    """Seconds to one decimal, as alerts and views report them."""
    return round(value, 1) if value is not None else None


# --- nodes and links --------------------------------------------------------------------------------------


@dataclass
class NodeHealth:
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
    incomplete: int | None = None  # cases with a gap in their history, as last reported
    incomplete_for_s: float | None = None  # how long it has had some
    incomplete_fresh: bool = False  # whether that report is recent (``report_fresh_s``)


N = TypeVar("N", bound=NodeHealth)


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


def node_health(
    snapshot: OpsSnapshot, tree: DivisionTree, now: float, thresholds: Thresholds, kind: type[N] = NodeHealth
) -> list[N]:
    """Every node of the tree, depth first (city, county, its townships and their villages, …).

    ``kind`` lets a caller build its own subclass (the dashboard's views) without a second pass.
    """
    statuses, links, heartbeats = snapshot.statuses, snapshot.links, snapshot.heartbeats
    shape = layout(tree)
    nodes = []
    for code in shape.order:
        division = tree.get(code)
        row = statuses.get(code)
        status, reason, offline_for = _node_status(row, now, thresholds)
        beat = heartbeats.get(code)
        link = links.get(code)
        gap = snapshot.gaps.get(code)
        gap_since = gap.get("incomplete_since") if gap else None
        nodes.append(
            kind(
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
                incomplete=gap.get("incomplete") if gap else None,
                incomplete_for_s=max(0.0, now - gap_since) if gap_since is not None else None,
                incomplete_fresh=gap is not None and now - gap["received_at"] <= thresholds.report_fresh_s,
            )
        )
    return nodes


def incomplete_totals(nodes: Sequence[NodeHealth]) -> dict[str, int]:
    """Cases with a gap in their history across the tree, and how many nodes hold some (last reports)."""
    counts = [node.incomplete for node in nodes if node.incomplete]
    return {"cases": sum(c for c in counts if c), "nodes": len(counts)}


@dataclass
class LinkHealth:
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


L = TypeVar("L", bound=LinkHealth)

_DIRECTION_KEYS = ("last_success", "last_attempt", "docs_written", "errors", "last_error", "checkpoint_moved_at")
_COLUMNS = {name: tuple((key, f"{name}_{key}") for key in _DIRECTION_KEYS) for name in ("push", "pull")}


def _direction(link: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: link[column] for key, column in _COLUMNS[name]}


def _failing(stats: dict[str, Any]) -> bool:
    """The newest attempt in this direction did not succeed."""
    attempt = stats.get("last_attempt")
    return bool(attempt) and (stats.get("last_success") or 0.0) < attempt


def link_health(
    snapshot: OpsSnapshot,
    nodes: Sequence[NodeHealth],
    now: float,
    thresholds: Thresholds,
    kind: type[L] = LinkHealth,
) -> list[L]:
    """Every child → parent link of the tree, in tree order (``nodes`` as :func:`node_health` gave them)."""
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
            kind(
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


def fresh_report(snapshot: OpsSnapshot, code: str, now: float, thresholds: Thresholds) -> bool:
    """Whether the node's last link report is recent enough to say anything about it."""
    raw = snapshot.links.get(code)
    return raw is not None and now - raw["received_at"] <= thresholds.report_fresh_s


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
    by_tier = {tier.key: _blank() for tier in Tier}
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
