"""City operations shaped for display: node and link views with their JSON, the dashboard's tree, figures as CSV.

The data comes from the service layer (:mod:`node.service_layer.ops`); this module only decides how
the dashboard and the ops API show it (ISO-8601 times, seconds to one decimal, severity order).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from node.adapters.opsmodel import OpsModel, OpsSnapshot
from node.config import Thresholds
from node.service_layer.ops import LinkHealth, NodeHealth, iso, link_health, node_health, rounded
from tiers import DivisionTree

LINK_SEVERITY = {"stuck": 0, "error": 1, "lagging": 2, "offline": 3, "ok": 4, "unknown": 5}


class NodeView(NodeHealth):
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
            "lag_s": rounded(self.lag_s),
            "pending": self.pending,
            "offline_for_s": rounded(self.offline_for_s),
            "incomplete": self.incomplete,
        }


class LinkView(LinkHealth):
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
            "lag_s": rounded(self.lag_s),
            "pending": self.pending,
            "stuck": self.state == "stuck",
            "stuck_for_s": rounded(self.stuck_for_s),
            "errors": self.errors,
            "last_error": self.last_error,
            "last_success": iso(self.last_success),
            "reported_at": iso(self.reported_at),
            "push": direction(self.push),
            "pull": direction(self.pull),
        }


def node_views(
    ops: OpsModel, tree: DivisionTree, now: float, thresholds: Thresholds, snapshot: OpsSnapshot | None = None
) -> list[NodeView]:
    """Every node of the tree, depth first (city, county, its townships and their villages, …)."""
    return node_health(snapshot or ops.snapshot(), tree, now, thresholds, NodeView)


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
    return link_health(snapshot, nodes, now, thresholds, LinkView)


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
