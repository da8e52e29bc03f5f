"""Celery application of a node: its broker, its beat schedule and its background tasks.

Tasks are idempotent and acknowledged late (ARCHITECTURE §6); the worker runs with an embedded
beat, so each node has exactly one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from node.adapters.idempotency import IdempotencyStore
from node.adapters.sessions import SessionStore
from node.bootstrap import NodeContext, ProcessKind, bootstrap, config_from_env
from node.config import NodeConfig, task_queue
from node.service_layer.cases import china_today
from node.service_layer.commands import SweepDeadlines
from node.service_layer.results import PollPost, ReconcilePayments

DEADLINE_SWEEP_S = 60.0
EVALUATE_ALERTS_S = 15.0
APPOINTMENTS_S = 300.0
PRUNE_RETENTION_S = 3600.0
RECONCILE_PAYMENTS_S = 60.0  # issue 15: orders whose notify never came are settled by query
POLL_POST_S = 300.0  # issue 15: parcels whose tracking callbacks were lost are polled


def make_celery(redis_url: str, node_code: str) -> Celery:
    app = Celery(f"tongban-{node_code}", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 3600},
        task_default_queue=task_queue(node_code),
        timezone="Asia/Shanghai",
        broker_connection_retry_on_startup=True,
        beat_schedule={
            "deadline-sweep": {"task": "tongban.sweep_deadlines", "schedule": DEADLINE_SWEEP_S},
            "evaluate-alerts": {"task": "tongban.evaluate_alerts", "schedule": EVALUATE_ALERTS_S},
            "appointments": {"task": "tongban.appointments", "schedule": APPOINTMENTS_S},
            "prune-retention": {"task": "tongban.prune_retention", "schedule": PRUNE_RETENTION_S},
            "reconcile-payments": {"task": "tongban.reconcile_payments", "schedule": RECONCILE_PAYMENTS_S},
            "poll-post": {"task": "tongban.poll_post", "schedule": POLL_POST_S},
        },
    )
    app.task(name="tongban.sweep_deadlines")(sweep_deadlines)
    app.task(name="tongban.evaluate_alerts")(evaluate_alerts)
    app.task(name="tongban.appointments")(appointments)
    app.task(name="tongban.prune_retention")(prune_retention)
    app.task(name="tongban.reconcile_payments")(reconcile_payments)
    app.task(name="tongban.poll_post")(poll_post)
    return app


_context: NodeContext | None = None


def context() -> NodeContext:
    """The worker's node context, built on first use (the worker process is long-lived)."""
    global _context
    if _context is None:
        _context = bootstrap(config_from_env(), ProcessKind.WORKER)
    return _context


def sweep_deadlines() -> dict[str, int]:
    """Raise 预警/黄牌/红牌 on the open cases this node holds. Idempotent: a level is written once."""
    node = context()
    held = tuple(row.case_no for row in node.readmodel.open_cases_held_by(node.config.code))
    return {"checked": len(held), "flagged": node.bus.handle(SweepDeadlines(held, china_today()))}


def evaluate_alerts() -> dict[str, int]:
    """City operations: alert rules, figures, MQTT announcements (a no-op without ops monitoring)."""
    from node.entrypoints.ops_jobs import evaluate_alerts_job

    return evaluate_alerts_job(context())


def appointments() -> dict[str, int]:
    """Bookings whose holder never came become no-shows; requests filed for this node's windows are decided."""
    around = context().around
    if around is None:
        return {"no_shows": 0, "decided": 0}
    no_shows = around.appointments.record_no_shows()
    decided = around.appointments.decide_requests()
    return {"no_shows": len(no_shows), "decided": len(decided)}
def prune_retention(now: float | None = None) -> dict[str, int]:
    """Drop security audit lines past the node's retention and idempotency keys past 24 h. Idempotent."""
    config = context().config
    state = config.data_dir / "state.sqlite3"
    at = time.time() if now is None else now
    days = config.audit_retention_days
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        days = NodeConfig.audit_retention_days  # a broken node.json value never empties the trail
    return {
        "audit": SessionStore(state).prune_audit(days * 86400.0, now=at),
        "idempotency_keys": IdempotencyStore(state, config.secret_key).prune(at),
    }


def reconcile_payments() -> dict[str, int]:
    """Issue 15: query the gateway about orders still waiting after 5 minutes and settle them, exactly once."""
    node = context()
    if node.results is None:
        return {"checked": 0, "settled": 0, "closed": 0, "anomalies": 0}
    report = node.bus.handle(ReconcilePayments())
    if report is None:  # no gateway configured at this node
        return {"checked": 0, "settled": 0, "closed": 0, "anomalies": 0}
    return {
        "checked": report.checked,
        "settled": len(report.settled),
        "closed": len(report.closed),
        "anomalies": len(report.anomalies),
    }


def poll_post() -> dict[str, int]:
    """Issue 15: ask the courier about parcels still on their way (a lost callback is caught here)."""
    node = context()
    return {"polled": node.bus.handle(PollPost()) if node.results is not None else 0}


_config = config_from_env() if os.environ.get("TONGBAN_NODE_CONFIG") else None
celery_app = make_celery(
    _config.redis_url if _config else "redis://127.0.0.1:6379/0", _config.code if _config else "none"
)


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    ready = os.environ.get("TONGBAN_READY_FILE")
    if ready:
        Path(ready).parent.mkdir(parents=True, exist_ok=True)
        Path(ready).touch()


@worker_shutdown.connect
def _withdraw_ready(**_: Any) -> None:
    ready = os.environ.get("TONGBAN_READY_FILE")
    if ready:
        Path(ready).unlink(missing_ok=True)
