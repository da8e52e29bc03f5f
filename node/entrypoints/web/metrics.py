"""``GET /metrics`` on every node: Prometheus text exposition format 0.0.4, no extra dependency.

- Replication: the agent's link statistics, read from the small JSON file the agent rewrites with
  every heartbeat (``agent-stats.json``; the web process has no link of its own).
- Queue: the length of the node's Celery queue in Redis.
- Cases: counts by state and deadline flag, quarantined documents, cases with a gap in their history —
  from the read model.
- HTTP: requests and latency per endpoint (the URL rule, so case numbers never become labels),
  counted by app-wide before/after request hooks. Counters live in the process: with several
  gunicorn workers each worker reports its own, as with any multi-process Python exporter.
- At the city: node statuses, link states and open alerts from city operations.

The node's HTTP port is bound to loopback here; in production scrape it through the same reverse
proxy that guards the node API.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import redis
from flask import Blueprint, Response, current_app, g, request
from flask.typing import ResponseReturnValue

from node.adapters.opsmodel import read_agent_stats
from node.bootstrap import NodeContext
from node.config import task_queue
from node.domain.case import CaseState
from node.entrypoints.web.http import monitors, ops_model, thresholds
from node.entrypoints.web.ops_views import link_state_counts, link_views, node_views, status_counts
from node.service_layer.alerts import ALERT_KINDS
from node.service_layer.ops import incomplete_totals

blueprint = Blueprint("metrics", __name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    n: int = 0


class HttpStats:
    """Request counters and latency histograms of one process, safe across gunicorn's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], _Histogram] = {}

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (method, endpoint, str(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            histogram = self.latency.setdefault((method, endpoint), _Histogram())
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    histogram.counts[i] += 1
            histogram.total += seconds
            histogram.n += 1


def http_stats() -> HttpStats:
    stats = current_app.extensions.get("tongban_http_stats")
    if stats is None:
        stats = current_app.extensions.setdefault("tongban_http_stats", HttpStats())
    return stats


@blueprint.before_app_request
def _start_timer() -> None:
    g.tongban_request_started = time.perf_counter()


@blueprint.after_app_request
def _count(response: Response) -> Response:
    started = g.pop("tongban_request_started", None)
    if started is not None:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else "unmatched"
        http_stats().observe(request.method, endpoint, response.status_code, time.perf_counter() - started)
    return response


# --- the exposition format --------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        label_text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
        self.lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


# --- the figures ------------------------------------------------------------------------------------------


def _replication(out: Exposition, context: NodeContext) -> None:
    stats = read_agent_stats(context.config.data_dir)
    if stats is None:
        out.metric(
            "tongban_agent_stats_present", "gauge", "Whether the agent has written its statistics file", [({}, 0)]
        )
        return
    out.metric("tongban_agent_stats_present", "gauge", "Whether the agent has written its statistics file", [({}, 1)])
    written = stats.get("written_at")
    if isinstance(written, int | float):
        out.metric(
            "tongban_agent_stats_age_seconds",
            "gauge",
            "Seconds since the agent last wrote its statistics (it does with every heartbeat)",
            [({}, round(time.time() - written, 3))],
        )
    directions = [(name, stats[name]) for name in ("push", "pull") if isinstance(stats.get(name), dict)]
    parent = str(stats.get("parent") or "")
    gauges = (
        ("last_success", "tongban_replication_last_success_timestamp_seconds", "Last successful sync (Unix time)"),
        ("last_attempt", "tongban_replication_last_attempt_timestamp_seconds", "Last sync attempt (Unix time)"),
        (
            "checkpoint_moved_at",
            "tongban_replication_checkpoint_moved_timestamp_seconds",
            "When the replication checkpoint last moved (Unix time)",
        ),
    )
    for key, name, help_text in gauges:
        samples = [
            ({"direction": d, "parent": parent}, s[key]) for d, s in directions if isinstance(s.get(key), int | float)
        ]
        out.metric(name, "gauge", help_text, samples)
    counters = (
        ("docs_written", "tongban_replication_docs_written_total", "Documents written by replication since start"),
        ("errors", "tongban_replication_errors_total", "Failed sync runs since the agent started"),
    )
    for key, name, help_text in counters:
        samples = [({"direction": d, "parent": parent}, int(s.get(key) or 0)) for d, s in directions]
        out.metric(name, "counter", help_text, samples)
    if isinstance(stats.get("pending"), int):
        out.metric(
            "tongban_replication_pending_changes",
            "gauge",
            "Local changes since the push checkpoint (capped at 1000)",
            [({"parent": parent}, stats["pending"])],
        )
    agent = stats.get("agent") if isinstance(stats.get("agent"), dict) else {}
    errors = agent.get("errors") if isinstance(agent.get("errors"), dict) else {}
    out.metric(
        "tongban_agent_errors_total",
        "counter",
        "Failed agent steps since it started, by the error's type (it backs off and goes on)",
        [({"type": str(kind)[:60]}, n) for kind, n in sorted(errors.items()) if isinstance(n, int)],
    )
    if isinstance(agent.get("failed_cycles"), int):
        out.metric(
            "tongban_agent_failed_cycles",
            "gauge",
            "Agent cycles in a row with a failed step (0: the last one succeeded)",
            [({}, agent["failed_cycles"])],
        )
    store = stats.get("store") if isinstance(stats.get("store"), dict) else {}
    out.metric(
        "tongban_store_reachable",
        "gauge",
        "Whether the document store answered the agent",
        [({}, 1 if store.get("reachable") else 0)],
    )
    if isinstance(store.get("doc_count"), int):
        out.metric("tongban_store_documents", "gauge", "Documents in the node's store", [({}, store["doc_count"])])
    if isinstance(store.get("size"), int):
        out.metric("tongban_store_size_bytes", "gauge", "Size of the node's store on disk", [({}, store["size"])])


def _queue(out: Exposition, context: NodeContext) -> None:
    client = context.redis
    queue = task_queue(context.config.code)
    try:
        length = int(client.llen(queue)) if client is not None else None
    except redis.RedisError:
        length = None
    if length is None:
        out.metric("tongban_task_queue_up", "gauge", "Whether the task broker (Redis) answered", [({}, 0)])
        return
    out.metric("tongban_task_queue_up", "gauge", "Whether the task broker (Redis) answered", [({}, 1)])
    out.metric("tongban_task_queue_length", "gauge", "Background tasks waiting", [({"queue": queue}, length)])


def _cases(out: Exposition, context: NodeContext) -> None:
    held = context.readmodel.held_counts()
    by_state, by_flag, quarantined = held.by_state, held.by_flag, held.quarantined
    states = [s.value for s in CaseState] + sorted(set(by_state) - {s.value for s in CaseState})
    out.metric(
        "tongban_cases",
        "gauge",
        "Cases this node holds, by state",
        [({"state": state}, int(by_state.get(state, 0))) for state in states],
    )
    out.metric(
        "tongban_cases_flagged",
        "gauge",
        "Cases with a deadline flag (预警 warning, 黄牌 yellow, 红牌 red)",
        [({"level": level}, int(by_flag.get(level, 0))) for level in ("warning", "yellow", "red")],
    )
    out.metric("tongban_quarantined_documents", "gauge", "Documents quarantined here", [({}, int(quarantined))])
    out.metric(
        "tongban_cases_incomplete",
        "gauge",
        "Cases whose history has a gap here (an event names a predecessor not held; re-requested from the parent)",
        [({}, int(held.incomplete))],
    )


def _http(out: Exposition) -> None:
    stats = http_stats()
    with stats.lock:
        requests = dict(stats.requests)
        latency = {key: (list(h.counts), h.total, h.n) for key, h in stats.latency.items()}
    out.metric(
        "tongban_http_requests_total",
        "counter",
        "HTTP requests handled by this process",
        [
            ({"method": method, "endpoint": endpoint, "status": status}, count)
            for (method, endpoint, status), count in sorted(requests.items())
        ],
    )
    name = "tongban_http_request_duration_seconds"
    out.lines.append(f"# HELP {name} HTTP request latency in this process")
    out.lines.append(f"# TYPE {name} histogram")
    for (method, endpoint), (counts, total, n) in sorted(latency.items()):
        labels = {"method": method, "endpoint": endpoint}
        for bound, count in zip(BUCKETS, counts, strict=True):
            out.sample(f"{name}_bucket", {**labels, "le": _number(bound)}, count)
        out.sample(f"{name}_bucket", {**labels, "le": "+Inf"}, n)
        out.sample(f"{name}_sum", labels, round(total, 6))
        out.sample(f"{name}_count", labels, n)


def _operations(out: Exposition) -> None:
    if not monitors():
        return
    context: NodeContext = current_app.extensions["tongban"]
    now, limits, ops = time.time(), thresholds(), ops_model()
    snapshot = ops.snapshot()
    nodes = node_views(ops, context.tree, now, limits, snapshot)
    links = link_views(ops, context.tree, now, limits, nodes, snapshot)
    out.metric(
        "tongban_ops_nodes",
        "gauge",
        "Nodes of the tree by status, as city operations sees them",
        [({"status": status}, count) for status, count in status_counts(nodes).items()],
    )
    link_counts = link_state_counts(links)
    out.metric(
        "tongban_ops_links",
        "gauge",
        "Replication links by state",
        [({"state": state}, count) for state, count in link_counts.items()],
    )
    lags = [link.lag_s for link in links if link.lag_s is not None]
    out.metric(
        "tongban_ops_max_lag_seconds",
        "gauge",
        "Largest link lag (age of a heartbeat document at the city)",
        [({}, round(max(lags), 3))] if lags else [],
    )
    gaps = incomplete_totals(nodes)
    out.metric(
        "tongban_ops_incomplete_cases",
        "gauge",
        "Cases with a gap in their history, summed over the nodes' last reports",
        [({}, gaps["cases"])],
    )
    out.metric(
        "tongban_ops_nodes_with_incomplete_cases",
        "gauge",
        "Nodes that last reported cases with a gap in their history",
        [({}, gaps["nodes"])],
    )
    open_alerts = ops.open_alert_counts()
    kinds = ALERT_KINDS
    out.metric(
        "tongban_ops_alerts_open",
        "gauge",
        "Open alerts by kind",
        [({"kind": kind}, open_alerts.get(kind, 0)) for kind in kinds],
    )


@blueprint.get("/metrics")
def metrics() -> ResponseReturnValue:
    context: NodeContext = current_app.extensions["tongban"]
    out = Exposition()
    division = context.division
    out.metric(
        "tongban_node_info",
        "gauge",
        "Which node this is",
        [({"node": division.code, "tier": division.tier.name.lower(), "version": context.version}, 1)],
    )
    _replication(out, context)
    _queue(out, context)
    _cases(out, context)
    _operations(out)
    _http(out)
    return Response(out.text(), headers={"Content-Type": CONTENT_TYPE})
