"""City operations on the web: the ``/ops`` dashboard (session sign-in) and JSON under ``/api/v1/ops`` (bearer).

Only nodes with the ops-monitoring capability (the city) serve them; elsewhere they answer 404.
Both read what the collector and the beat job recorded in ``ops.sqlite3`` and compute statuses at
the moment of the request (a node turns offline when its heartbeats stop, without any writer).

The blueprint also carries ``GET /metrics`` (:mod:`node.entrypoints.web.metrics`), served by every node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Response, flash, g, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from node.adapters.opsmodel import OpsModel
from node.domain.case import ADMIN, OPS
from node.entrypoints.web import pages as staff_pages
from node.entrypoints.web.api import context, error_response, require_role
from node.entrypoints.web.metrics import blueprint as metrics
from node.service_layer.ops import (
    LINK_SEVERITY,
    NodeView,
    Thresholds,
    alert_json,
    case_figures,
    figures_csv,
    link_state_counts,
    link_views,
    node_views,
    refresh_outcomes,
    status_counts,
    tree_groups,
)

blueprint = Blueprint("ops", __name__)
api = Blueprint("api", __name__, url_prefix="/api/v1/ops")
pages = Blueprint("pages", __name__, url_prefix="/ops")

OPS_ROLES = (OPS, ADMIN)
POLL_MS = 5000
LINKS_SHOWN = 100  # the dashboard lists the worst links; the JSON API lists them all
ALERTS_SHOWN = 200  # and the newest open alerts (a city-wide outage opens one per node)
FIGURES_REFRESH = 50  # outcomes folded on a figures request; the beat job does the bulk

# --- UI strings (zh, en), looked up before the staff pages' own ---------------------------------------------

OPS_STRINGS: dict[str, tuple[str, str]] = {
    "ops_title": ("运维监控", "Operations"),
    "ops_intro": (
        "全市节点在线状态、数据同步链路与告警；状态每 {s} 秒自动刷新。",
        "Every node's status, every replication link and the alerts; refreshes every {s} seconds.",
    ),
    "ops_not_here": ("运维监控仅在市级节点提供", "Operations monitoring is served at the city node"),
    "updated_at": ("更新于", "Updated"),
    "st_online": ("在线", "online"),
    "st_offline": ("离线", "offline"),
    "st_unknown": ("未接入", "never heard of"),
    "why_stopped": ("已停止", "stopped"),
    "why_will": ("连接中断", "connection lost"),
    "why_no_heartbeat": ("心跳中断", "heartbeats stopped"),
    "nodes_title": ("节点树", "Node tree"),
    "nodes_hint": (
        "市 → 县/区 → 乡镇/街道 → 村/社区；色块为村（社区）节点，鼠标悬停查看详情。",
        "City → counties → townships → villages; each square is a village, hover for details.",
    ),
    "last_seen": ("最近心跳", "Last heartbeat"),
    "version": ("版本", "Version"),
    "store_size": ("数据库大小", "Store size"),
    "lag": ("同步延迟", "Lag"),
    "links_title": ("同步链路", "Replication links"),
    "links_hint": (
        "延迟 = 市级节点收到的该节点最新心跳文档的时间差；待同步 = 节点尚未上传的变更数。"
        "仅列出异常链路（最多 {n} 条）。",
        "Lag = age of the node's newest heartbeat document at the city; pending = changes not yet pushed up. "
        "Only links in trouble are listed (at most {n}).",
    ),
    "links_all_ok": ("所有已接入链路正常", "Every reporting link is healthy"),
    "col_link": ("链路", "Link"),
    "col_link_state": ("状态", "State"),
    "col_lag": ("延迟", "Lag"),
    "col_pending": ("待同步", "Pending"),
    "col_errors": ("错误次数", "Errors"),
    "col_last_error": ("最近错误", "Last error"),
    "col_last_success": ("最近成功同步", "Last success"),
    "link_ok": ("正常", "ok"),
    "link_unknown": ("未知", "unknown"),
    "link_offline": ("节点离线", "node offline"),
    "link_stuck": ("检查点停滞", "checkpoint stuck"),
    "link_error": ("同步出错", "failing"),
    "link_lagging": ("延迟过大", "lagging"),
    "stuck_for": ("已停滞 {s}", "stuck for {s}"),
    "alerts_title": ("告警", "Alerts"),
    "alerts_none": ("当前没有未关闭的告警", "No open alerts"),
    "alerts_more": (
        "仅显示最新 {n} 条，全部告警见 /api/v1/ops/alerts",
        "The newest {n} shown; all in /api/v1/ops/alerts",
    ),
    "alerts_history": ("告警历史（最近 {n} 条已关闭）", "History (last {n} closed)"),
    "col_alert": ("告警", "Alert"),
    "col_node": ("节点", "Node"),
    "col_opened": ("发生时间", "Opened"),
    "col_closed": ("关闭时间", "Closed"),
    "col_ack": ("确认", "Acknowledged"),
    "col_detail": ("详情", "Detail"),
    "ack_button": ("确认", "Acknowledge"),
    "acked_by": ("{who} 于 {when} 确认", "{who} at {when}"),
    "acked_flash": ("已确认告警 #{id}", "Alert #{id} acknowledged"),
    "alert_missing": ("没有这条告警", "No such alert"),
    "kind_node_offline": ("节点离线", "Node offline"),
    "kind_link_lag": ("同步延迟过大", "Link lag"),
    "kind_checkpoint_stuck": ("同步检查点停滞", "Checkpoint not moving"),
    "kind_quarantine": ("发现被隔离（篡改）的文档", "Quarantined documents"),
    "kind_store_unreachable": ("数据库不可达", "Store unreachable"),
    "figures_title": ("全市办件统计", "City-wide case figures"),
    "figures_csv": ("导出 CSV", "Export CSV"),
    "fig_accepted": ("受理", "Accepted"),
    "fig_approved": ("准予", "Approved"),
    "fig_rejected": ("不予", "Rejected"),
    "fig_refused": ("不予受理", "Refused"),
    "fig_open": ("在办", "Open"),
    "fig_settled": ("即办件当场办结", "Settled on the spot"),
    "fig_settled_share": ("即办率", "Settled on the spot"),
    "fig_flags": ("预警 / 黄牌 / 红牌", "Warning / yellow / red"),
    "fig_cross_county": ("跨县通办", "Cross-county"),
    "fig_transferred": ("转办", "Transferred"),
    "fig_by_county": ("按县（市、区）", "By county"),
    "fig_by_tier": ("按层级", "By tier"),
    "fig_by_matter": ("按事项（平均办理时长）", "By matter (average handling time)"),
    "fig_avg_days": ("平均办理天数", "Average days"),
    "fig_decided": ("已决定", "Decided"),
    "fig_note": (
        "受理数按受理节点统计；准予、不予、即办和预警按办理节点统计；办理时长为受理至作出决定的自然日。",
        "Accepted counts at the accepting node; decisions, on-the-spot settlements and flags at the handling "
        "node; handling time is calendar days from acceptance to decision.",
    ),
    "tier_city": ("市", "city"),
    "tier_county": ("县/区", "county"),
    "tier_township": ("乡/镇/街道", "township"),
    "tier_village": ("村/社区", "village"),
}


def t(key: str, **values: Any) -> str:
    zh, en = OPS_STRINGS.get(key) or staff_pages.STRINGS[key]
    text = en if staff_pages.lang() == "en" else zh
    return text.format(**values) if values else text


def both(key: str, **values: Any) -> dict[str, str]:
    zh, en = OPS_STRINGS[key]
    return {"zh": zh.format(**values), "en": en.format(**values)}


# --- shared helpers -----------------------------------------------------------------------------------------


def monitors() -> bool:
    return context().monitors_operations


def ops_model() -> OpsModel:
    """The web process's ops model, built by the composition root at a node that monitors."""
    model = context().ops
    if model is None:
        raise RuntimeError("ops_model() at a node that does not monitor operations")
    return model


def thresholds() -> Thresholds:
    return Thresholds.load(context().config.data_dir)


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
    status, tier = request.args.get("status"), request.args.get("tier")
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
    state = request.args.get("state")
    shown = [link for link in links if link.state == state] if state else links
    return jsonify({"generated_at": now, "counts": counts, "links": [link.to_json() for link in shown]})


@api.get("/alerts")
@ops_api
def api_alerts() -> ResponseReturnValue:
    state = request.args.get("state", "all")
    if state not in ("open", "closed", "all"):
        return error_response(
            "invalid_state", "state 只能是 open、closed 或 all", "state must be open, closed or all", 400
        )
    limit = min(max(request.args.get("limit", 500, type=int) or 500, 1), 5000)
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

# The staff pages' language switch, CSRF check and security headers apply here too.
pages.before_request(staff_pages._before)
pages.after_request(staff_pages._headers)


@pages.before_request
def _only_where_monitored() -> ResponseReturnValue | None:
    if not monitors():
        return staff_pages.error_page(404, both("ops_not_here"))
    return None


def _lang_url(target: str) -> str:
    if request.method == "GET" and request.endpoint and request.endpoint.startswith("ops.pages."):
        return url_for(request.endpoint, **{**request.args.to_dict(), "lang": target})
    return url_for("ops.pages.dashboard", lang=target)


@pages.context_processor
def _helpers() -> dict[str, Any]:
    helpers = staff_pages._template_helpers()
    helpers.update(t=t, lang_url=_lang_url, fmt_age=fmt_age, fmt_size=fmt_size, ts_text=ts_text)
    return helpers


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    en = staff_pages.lang() == "en"
    if seconds < 120:
        return f"{seconds} s" if en else f"{seconds} 秒"
    if seconds < 7200:
        return f"{seconds // 60} min" if en else f"{seconds // 60} 分钟"
    if seconds < 172800:
        return f"{seconds // 3600} h" if en else f"{seconds // 3600} 小时"
    return f"{seconds // 86400} d" if en else f"{seconds // 86400} 天"


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
        return staff_pages.china_time(instant)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(instant + 8 * 3600))


def node_titles(nodes: list[NodeView]) -> dict[str, str]:
    """The hover text of every node, built in Python: a Jinja macro per node costs ~0.2 ms, ×1,571."""
    labels = {key: t(key) for key in ("last_seen", "version", "lag", "store_size")}
    status = {key: t(f"st_{key}") for key in ("online", "offline", "unknown")}
    why = {key: t(f"why_{key}") for key in ("stopped", "will", "no_heartbeat")}
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
        titles[node.code] = " · ".join(parts)
    return titles


@pages.get("")
@staff_pages.staff_page(*OPS_ROLES)
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
        poll_ms=POLL_MS,
        links_shown=LINKS_SHOWN,
        thresholds=limits,
    )


@pages.get("/status.json")
def status_json() -> ResponseReturnValue:
    """What the dashboard polls (session sign-in: the page's script has no bearer token)."""
    account = staff_pages.current_account()
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
    lang = staff_pages.lang()
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
                key: t(key)
                for key in (
                    "st_online",
                    "st_offline",
                    "st_unknown",
                    "why_stopped",
                    "why_will",
                    "why_no_heartbeat",
                    "last_seen",
                    "version",
                    "lag",
                    "ack_button",
                    "alerts_none",
                    "links_all_ok",
                    *(f"kind_{kind}" for kind in ("node_offline", "link_lag", "checkpoint_stuck")),
                    *(f"kind_{kind}" for kind in ("quarantine", "store_unreachable")),
                    *(f"link_{state}" for state in LINK_SEVERITY),
                )
            },
            "lang": lang,
            "alerts": [
                {
                    **alert,
                    "opened_text": ts_text(alert["opened_at"]),
                    "acked_text": t("acked_by", who=alert["acknowledged_by"], when=ts_text(alert["acknowledged_at"]))
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
                    "stuck_text": t("stuck_for", s=fmt_age(link.stuck_for_s)) if link.state == "stuck" else "",
                }
                for link in _problem_links(links)[:LINKS_SHOWN]
            ],
        }
    )


@pages.post("/alerts/<int:alert_id>/ack")
@staff_pages.staff_page(*OPS_ROLES)
def acknowledge(alert_id: int) -> ResponseReturnValue:
    alert = ops_model().acknowledge(alert_id, g.actor.username, time.time())
    if alert is None:
        return staff_pages.error_page(404, both("alert_missing"))
    flash(both("acked_flash", id=alert_id), "success")
    return redirect(url_for("ops.pages.dashboard") + "#alerts", 303)


@pages.get("/figures.csv")
@staff_pages.staff_page(*OPS_ROLES)
def figures_csv_page() -> ResponseReturnValue:
    return _csv_response(_figures())


blueprint.register_blueprint(api)
blueprint.register_blueprint(pages)
blueprint.register_blueprint(metrics)
