"""City operations on the web: the ``/ops`` dashboard (session sign-in) and JSON under ``/api/v1/ops`` (bearer).

Only nodes with the ops-monitoring capability (the city) serve them; elsewhere they answer 404.
Both read what the collector and the beat job recorded in ``ops.sqlite3`` and compute statuses at
the moment of the request (a node turns offline when its heartbeats stop, without any writer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_babel import LazyString, gettext, lazy_gettext, lazy_pgettext

from node.domain.case import ADMIN, OPS
from node.entrypoints.web.auth import current_account, staff_page
from node.entrypoints.web.http import (
    DIGITS,
    context,
    error_page,
    error_response,
    monitors,
    ops_model,
    query_param,
    require_role,
    thresholds,
)
from node.entrypoints.web.i18n import both, lang
from node.entrypoints.web.labels import china_time
from node.entrypoints.web.ops_views import (
    LINK_SEVERITY,
    NodeView,
    figures_csv,
    link_state_counts,
    link_views,
    node_views,
    status_counts,
    tree_groups,
)
from node.service_layer.alerts import alert_json
from node.service_layer.ops import case_figures, incomplete_totals, refresh_outcomes
from tiers import Tier

blueprint = Blueprint("ops", __name__)
api = Blueprint("api", __name__, url_prefix="/api/v1/ops")
pages = Blueprint("pages", __name__, url_prefix="/ops")

OPS_ROLES = (OPS, ADMIN)
POLL_MS = 5000
LINKS_SHOWN = 100  # the dashboard lists the worst links; the JSON API lists them all
ALERTS_SHOWN = 200  # and the newest open alerts (a city-wide outage opens one per node)
FIGURES_REFRESH = 50  # outcomes folded on a figures request; the beat job does the bulk

# --- labels ------------------------------------------------------------------------------------------------

NODE_STATUS_LABELS: dict[str, LazyString] = {
    "online": lazy_gettext("在线"),
    "offline": lazy_gettext("离线"),
    "unknown": lazy_gettext("未接入"),
}
OFFLINE_REASON_LABELS: dict[str, LazyString] = {
    "stopped": lazy_gettext("已停止"),
    "will": lazy_gettext("连接中断"),
    "no_heartbeat": lazy_gettext("心跳中断"),
}
ALERT_KIND_LABELS: dict[str, LazyString] = {
    "node_offline": lazy_gettext("节点离线"),
    "link_lag": lazy_gettext("同步延迟过大"),
    "checkpoint_stuck": lazy_gettext("同步检查点停滞"),
    "quarantine": lazy_gettext("发现被隔离（篡改）的文档"),
    "store_unreachable": lazy_gettext("数据库不可达"),
    "incomplete_cases": lazy_gettext("案卷长期不完整"),
}
LINK_STATE_LABELS: dict[str, LazyString] = {
    "ok": lazy_pgettext("link", "正常"),
    "unknown": lazy_pgettext("link", "未知"),
    "offline": lazy_pgettext("link", "节点离线"),
    "stuck": lazy_pgettext("link", "检查点停滞"),
    "error": lazy_pgettext("link", "同步出错"),
    "lagging": lazy_pgettext("link", "延迟过大"),
}
# The figures' tier rows use the short names.
TIER_LABELS: dict[str, LazyString] = {
    "city": lazy_pgettext("short", "市"),
    "county": lazy_pgettext("short", "县/区"),
    "township": lazy_pgettext("short", "乡/镇/街道"),
    "village": lazy_pgettext("short", "村/社区"),
}


def _label(labels: dict[str, LazyString], code: str) -> str:
    label = labels.get(code)
    return str(label) if label is not None else code


def alert_kind_label(kind: str) -> str:
    return _label(ALERT_KIND_LABELS, kind)


def link_state_label(state: str) -> str:
    return _label(LINK_STATE_LABELS, state)


def ops_tier_label(tier: str) -> str:
    return _label(TIER_LABELS, tier)


# --- shared helpers -----------------------------------------------------------------------------------------


def _alert_rows(state: str, limit: int) -> list[dict[str, Any]]:
    return [alert_json(alert, context().tree) for alert in ops_model().alerts(state, limit)]


def _figures(refresh: bool = True) -> dict[str, Any]:
    ops = ops_model()
    if refresh:
        # Cases decided in the last seconds, before the beat job folded them: a bounded top-up.
        refresh_outcomes(ops, context().cases, limit=FIGURES_REFRESH, budget_s=0.5)
    return case_figures(ops, context().tree)


def _csv_response(figures: dict[str, Any]) -> Response:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    response = Response(figures_csv(figures), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="tongban-figures-{stamp}.csv"'
    return response


def _problem_links(links: list[Any]) -> list[Any]:
    troubled = [link for link in links if link.state not in ("ok", "unknown")]
    troubled.sort(key=lambda link: (LINK_SEVERITY[link.state], -(link.lag_s or 0.0)))
    return troubled


# --- JSON API (bearer token, ops and admin) ------------------------------------------------------------------


def ops_api(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """Bearer token with the ops or admin role, at a node that monitors."""

    @require_role(*OPS_ROLES)
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if not monitors():
            return error_response("not_found", "运维监控仅在市级节点提供", "ops monitoring is served at the city", 404)
        return view(*args, **kwargs)

    return wrapped


@api.get("/nodes")
@ops_api
def api_nodes() -> ResponseReturnValue:
    now = time.time()
    nodes = node_views(ops_model(), context().tree, now, thresholds())
    shown = nodes
    status = query_param("status", choices=frozenset({"online", "offline", "unknown"}))
    tier = query_param("tier", choices=frozenset(level.key for level in Tier))
    if status:
        shown = [node for node in shown if node.status == status]
    if tier:
        shown = [node for node in shown if node.tier == tier]
    return jsonify(
        {
            "generated_at": now,
            "counts": status_counts(nodes),
            "nodes": [node.to_json() for node in shown],
        }
    )


@api.get("/links")
@ops_api
def api_links() -> ResponseReturnValue:
    now = time.time()
    links = link_views(ops_model(), context().tree, now, thresholds(), snapshot=ops_model().snapshot())
    counts: dict[str, int] = {}
    for link in links:
        counts[link.state] = counts.get(link.state, 0) + 1
    state = query_param("state", choices=frozenset(LINK_SEVERITY))
    shown = [link for link in links if link.state == state] if state else links
    return jsonify({"generated_at": now, "counts": counts, "links": [link.to_json() for link in shown]})


@api.get("/alerts")
@ops_api
def api_alerts() -> ResponseReturnValue:
    state = query_param("state", default="all", choices=frozenset({"open", "closed", "all"}))
    limit = min(max(int(query_param("limit", default="500", max_length=6, pattern=DIGITS)), 1), 5000)
    return jsonify({"alerts": _alert_rows(state, limit)})


@api.post("/alerts/<int:alert_id>/ack")
@ops_api
def api_acknowledge(alert_id: int) -> ResponseReturnValue:
    alert = ops_model().acknowledge(alert_id, g.actor.username, time.time())
    if alert is None:
        return error_response("alert_not_found", "没有这条告警", f"no alert {alert_id}", 404)
    return jsonify(alert_json(alert, context().tree))


@api.get("/figures")
@ops_api
def api_figures() -> ResponseReturnValue:
    return jsonify(_figures())


@api.get("/figures.csv")
@ops_api
def api_figures_csv() -> ResponseReturnValue:
    return _csv_response(_figures())


# --- pages (session sign-in, ops and admin) ----------------------------------------------------------------


@pages.before_request
def _only_where_monitored() -> ResponseReturnValue | None:
    if not monitors():
        return error_page(404, both(lazy_gettext("运维监控仅在市级节点提供")))
    return None


@pages.context_processor
def _helpers() -> dict[str, Any]:
    return {
        "fmt_age": fmt_age,
        "fmt_size": fmt_size,
        "ts_text": ts_text,
        "alert_kind_label": alert_kind_label,
        "link_state_label": link_state_label,
        "ops_tier_label": ops_tier_label,
    }


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return gettext("%(n)s 秒", n=seconds)
    if seconds < 7200:
        return gettext("%(n)s 分钟", n=seconds // 60)
    if seconds < 172800:
        return gettext("%(n)s 小时", n=seconds // 3600)
    return gettext("%(n)s 天", n=seconds // 86400)


def fmt_size(size: int | None) -> str:
    if not size:
        return "—"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def ts_text(instant: float | str | None) -> str:
    """An epoch instant (or ISO string) as China time (UTC+8, no daylight saving)."""
    if instant is None:
        return "—"
    if isinstance(instant, str):
        return china_time(instant)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(instant + 8 * 3600))


def acked_by(who: str, when: float | str | None) -> str:
    return gettext("%(who)s 于 %(when)s 确认", who=who, when=ts_text(when))


def node_titles(nodes: list[NodeView]) -> dict[str, str]:
    """The hover text of every node, built in Python: a Jinja macro per node costs ~0.2 ms, ×1,571."""
    labels = {
        "last_seen": gettext("最近心跳"),
        "version": gettext("版本"),
        "lag": gettext("同步延迟"),
        "store_size": gettext("数据库大小"),
        "incomplete": gettext("案卷不完整"),
    }
    status = {key: str(label) for key, label in NODE_STATUS_LABELS.items()}
    why = {key: str(label) for key, label in OFFLINE_REASON_LABELS.items()}
    titles = {}
    for node in nodes:
        parts = [
            f"{node.name} {node.code}",
            status[node.status] + (f" · {why.get(node.reason, node.reason)}" if node.reason else ""),
        ]
        if node.last_seen is not None:
            parts.append(f"{labels['last_seen']} {ts_text(node.last_seen)}")
        if node.version:
            parts.append(f"{labels['version']} {node.version}")
        if node.lag_s is not None:
            parts.append(f"{labels['lag']} {fmt_age(node.lag_s)}")
        if node.store_size:
            parts.append(f"{labels['store_size']} {fmt_size(node.store_size)}")
        if node.incomplete:
            parts.append(f"{labels['incomplete']} {node.incomplete}")
        titles[node.code] = " · ".join(parts)
    return titles


def _rating_figures() -> list[dict[str, Any]]:
    """好差评 per handling node, from every case's evaluation the city holds (names nobody who rated)."""
    around, tree = context().around, context().tree
    if around is None:
        return []
    rows = []
    for code, row in around.ratings.figures("node").items():
        name = tree.get(code).name if code in tree else code
        rows.append({"code": code, "name": name, **row})
    return rows


@pages.get("")
@staff_page(*OPS_ROLES)
def dashboard() -> ResponseReturnValue:
    now = time.time()
    limits = thresholds()
    ops = ops_model()
    tree = context().tree
    snapshot = ops.snapshot()
    nodes = node_views(ops, tree, now, limits, snapshot)
    links = link_views(ops, tree, now, limits, nodes, snapshot)
    figures = _figures()
    link_counts = link_state_counts(links)
    return render_template(
        "ops.html",
        now=now,
        city=nodes[0],
        counties=tree_groups(tree, nodes),
        titles=node_titles(nodes),
        counts=status_counts(nodes),
        links=_problem_links(links)[:LINKS_SHOWN],
        link_counts=link_counts,
        open_alerts=_alert_rows("open", ALERTS_SHOWN),
        open_alert_total=sum(ops.open_alert_counts().values()),
        closed_alerts=_alert_rows("closed", 20),
        figures=figures,
        ratings=_rating_figures(),
        gaps=incomplete_totals(nodes),
        poll_ms=POLL_MS,
        links_shown=LINKS_SHOWN,
        thresholds=limits,
    )


@pages.get("/status.json")
def status_json() -> ResponseReturnValue:
    """What the dashboard polls (session sign-in: the page's script has no bearer token)."""
    account = current_account()
    if account is None:
        return error_response("unauthenticated", "请先登录", "sign in first", 401)
    if account.role not in OPS_ROLES:
        return error_response("role_not_allowed", "您的角色无权查看运维监控", f"role {account.role!r} may not", 403)
    now = time.time()
    limits = thresholds()
    ops = ops_model()
    snapshot = ops.snapshot()
    nodes = node_views(ops, context().tree, now, limits, snapshot)
    links = link_views(ops, context().tree, now, limits, nodes, snapshot)
    titles = node_titles(nodes)
    return jsonify(
        {
            "generated_at": now,
            "generated_text": ts_text(now),
            "city_seen": ts_text(nodes[0].last_seen),
            "counts": status_counts(nodes),
            # Every node heard of, with its hover text; the rest stay "never heard of" on the page.
            "nodes": {
                node.code: {"s": node.status, "t": titles[node.code]}
                for node in nodes
                if node.status != "unknown" or node.lag_s is not None
            },
            "labels": {
                **{f"st_{key}": str(label) for key, label in NODE_STATUS_LABELS.items()},
                **{f"why_{key}": str(label) for key, label in OFFLINE_REASON_LABELS.items()},
                "last_seen": gettext("最近心跳"),
                "version": gettext("版本"),
                "lag": gettext("同步延迟"),
                "ack_button": gettext("确认"),
                "alerts_none": gettext("当前没有未关闭的告警"),
                "links_all_ok": gettext("所有已接入链路正常"),
                **{f"kind_{kind}": str(label) for kind, label in ALERT_KIND_LABELS.items()},
                **{f"link_{state}": link_state_label(state) for state in LINK_SEVERITY},
            },
            "lang": lang(),
            "alerts": [
                {
                    **alert,
                    "opened_text": ts_text(alert["opened_at"]),
                    "acked_text": acked_by(alert["acknowledged_by"], alert["acknowledged_at"])
                    if alert["acknowledged_by"]
                    else "",
                    "ack_url": url_for("ops.pages.acknowledge", alert_id=alert["id"]),
                }
                for alert in _alert_rows("open", ALERTS_SHOWN)
            ],
            "open_alert_total": sum(ops.open_alert_counts().values()),
            "links": [
                {
                    **link.to_json(),
                    "lag_text": fmt_age(link.lag_s),
                    "success_text": ts_text(link.last_success),
                    "stuck_text": gettext("已停滞 %(s)s", s=fmt_age(link.stuck_for_s)) if link.state == "stuck" else "",
                }
                for link in _problem_links(links)[:LINKS_SHOWN]
            ],
        }
    )


@pages.post("/alerts/<int:alert_id>/ack")
@staff_page(*OPS_ROLES)
def acknowledge(alert_id: int) -> ResponseReturnValue:
    alert = ops_model().acknowledge(alert_id, g.actor.username, time.time())
    if alert is None:
        return error_page(404, both(lazy_gettext("没有这条告警")))
    flash(both(lazy_gettext("已确认告警 #%(id)s", id=alert_id)), "success")
    return redirect(url_for("ops.pages.dashboard") + "#alerts", 303)


@pages.get("/figures.csv")
@staff_page(*OPS_ROLES)
def figures_csv_page() -> ResponseReturnValue:
    return _csv_response(_figures())


blueprint.register_blueprint(api)
blueprint.register_blueprint(pages)
