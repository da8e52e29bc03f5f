"""City operations' own tables: what every node reported, the alerts raised, and case outcomes for figures.

Kept in ``ops.sqlite3`` beside the read model (not inside it): the collector writes a few hundred
reports a second at full scale, and a separate file keeps those writes off the read model's
projection path and out of its rebuild. Everything here is derived from MQTT reports and the
city's own store, so the file can be deleted at any time; only alert history would be lost.

All instants are Unix epoch seconds (float) — the reports carry them that way — except a case's
decision time, which stays an ISO-8601 string as in its events. The cases themselves are read through
the :class:`CaseFacts` port (the read model provides it); this module never opens the read model's tables.

The agent's statistics file (``agent-stats.json``) lives here too: the agent writes it, the web
process reads it for ``/metrics``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from node.adapters.docstore import DocStore, StoreUnavailable
from node.adapters.readmodel import READMODEL_DB, CaseFact, ReadModel
from node.adapters.sqlite import sqlite_engine

OPS_DB = "ops.sqlite3"
AGENT_STATS_FILE = "agent-stats.json"
PENDING_CAP = 1_000  # counting pending changes stops here: "at least 1,000" is all ops needs to know

metadata = MetaData()

node_status = Table(
    "node_status",
    metadata,
    Column("code", String, primary_key=True),
    Column("status", String, nullable=True),  # online | offline as last reported; NULL: only ops reports so far
    Column("reason", String, nullable=True),  # why offline: "stopped" (clean stop) or "will" (connection lost)
    Column("version", String, nullable=True),
    Column("last_heartbeat_at", Float, nullable=True),  # newest "online" heartbeat (the node's own clock if retained)
    Column("status_changed_at", Float, nullable=True),
    Column("first_seen_at", Float, nullable=False),
    Column("received_at", Float, nullable=False),  # when the collector last heard from the node at all
    Column("store_reachable", Boolean, nullable=True),
    Column("store_docs", Integer, nullable=True),
    Column("store_size", Integer, nullable=True),  # bytes on disk, if the node reported it
)

link_stats = Table(
    "link_stats",
    metadata,
    Column("code", String, primary_key=True),  # the child end of the link
    Column("parent", String, nullable=True),
    Column("received_at", Float, nullable=False),
    Column("push_last_success", Float, nullable=True),
    Column("push_last_attempt", Float, nullable=True),
    Column("push_docs_written", Integer, nullable=True),
    Column("push_errors", Integer, nullable=True),
    Column("push_last_error", Text, nullable=True),
    Column("push_checkpoint_moved_at", Float, nullable=True),
    Column("pull_last_success", Float, nullable=True),
    Column("pull_last_attempt", Float, nullable=True),
    Column("pull_docs_written", Integer, nullable=True),
    Column("pull_errors", Integer, nullable=True),
    Column("pull_last_error", Text, nullable=True),
    Column("pull_checkpoint_moved_at", Float, nullable=True),
    Column("pending", Integer, nullable=True),  # local changes not yet pushed up, at the last report
    Column("pending_since", Float, nullable=True),  # when ``pending`` last went from 0 to more
)

# Cases with a gap in their history (an event names a predecessor the node does not hold), as each node
# last reported: its own table, so ops files made before it need no migration.
case_gaps = Table(
    "case_gaps",
    metadata,
    Column("code", String, primary_key=True),
    Column("incomplete", Integer, nullable=False),
    Column("incomplete_since", Float, nullable=True),  # when the count last went from 0 to more
    Column("received_at", Float, nullable=False),
)

heartbeat_docs = Table(
    "heartbeat_docs",
    metadata,
    Column("code", String, primary_key=True),
    Column("at", Float, nullable=False),  # written at the node; its age at the city is the link lag
    Column("version", String, nullable=True),
    Column("checked_at", Float, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String, nullable=False),
    Column("node", String, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("acknowledged_by", String, nullable=True),
    Column("acknowledged_at", Float, nullable=True),
    Column("detail", Text, nullable=False),  # JSON: the figures that made the rule fire, refreshed while open
    # Outbox for the MQTT announcements: set once the broker acknowledged them (paho keeps no durable session).
    Column("open_announced_at", Float, nullable=True),
    Column("close_announced_at", Float, nullable=True),
    Index("alerts_one_open", "kind", "node", unique=True, sqlite_where=text("closed_at IS NULL")),
    Index("alerts_opened", "opened_at"),
)

quarantine_reports = Table(
    "quarantine_reports",
    metadata,
    Column("reporter", String, primary_key=True),  # the node that quarantined the document
    Column("doc_id", String, primary_key=True),
    Column("case_no", String, nullable=True),
    Column("signer", String, nullable=True),  # the node the document claims to come from
    Column("reason", Text, nullable=True),
    Column("reported_at", Float, nullable=False),
    Column("acknowledged_at", Float, nullable=True),
)

# The decision of every decided case, folded from its events once: the read model keeps only the
# current state, and a delivered case does not say whether it was approved or rejected.
case_outcomes = Table(
    "case_outcomes",
    metadata,
    Column("case_no", String, primary_key=True),
    Column("decision", String, nullable=True),  # approved | rejected | NULL (withdrawn etc.)
    Column("settled", Boolean, nullable=False),  # 即办: settled on the spot
    Column("decided_at", String, nullable=True),  # ISO-8601 UTC
    Column("event_count", Integer, nullable=False),  # the read model's count when folded: refold when it moves
)


@dataclass(frozen=True)
class StatusReport:
    """One message from ``tongban/up/<node>/status``."""

    code: str
    status: str
    received_at: float
    seen_at: float  # when the node said it was alive (== received_at for a live message)
    version: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LinkReport:
    """One ``{"kind": "link"}`` message from ``tongban/up/<node>/ops``."""

    code: str
    received_at: float
    parent: str | None
    push: dict[str, Any]
    pull: dict[str, Any]
    pending: int | None
    store_reachable: bool | None
    store_docs: int | None
    store_size: int | None
    incomplete: int | None = None  # cases with a gap in their history (None: not reported)


@dataclass(frozen=True)
class QuarantineReport:
    reporter: str
    doc_id: str
    case_no: str | None
    signer: str | None
    reason: str | None
    received_at: float


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any, limit: int = 300) -> str | None:
    return str(value)[:limit] if value is not None else None


@dataclass(frozen=True)
class OpsSnapshot:
    statuses: dict[str, dict[str, Any]]
    links: dict[str, dict[str, Any]]
    heartbeats: dict[str, float]
    gaps: dict[str, dict[str, Any]] = field(default_factory=dict)  # by node: incomplete, incomplete_since


class CaseFacts(Protocol):
    """What the figures need of the cases a node holds (:class:`ReadModel` provides it)."""

    def decided_event_counts(self) -> dict[str, int]: ...

    def case_facts(self) -> list[CaseFact]: ...


class OpsModel:
    def __init__(self, path: Path, cases: CaseFacts | None = None, readmodel_path: Path | None = None) -> None:
        self.path = path
        self.engine = sqlite_engine(path)
        # Several processes of the city (web, worker, collector) open the file at once: whoever is
        # second may find a table the first just created.
        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                break
            except OperationalError:
                if attempt == 2:
                    raise
                time.sleep(0.1)
        self._cases = cases
        self._readmodel_path = readmodel_path

    @classmethod
    def for_node(cls, data_dir: Path, cases: CaseFacts | None = None) -> OpsModel:
        """The ops file of the node whose data lives in ``data_dir``; its read model (opened when first needed
        unless given) supplies the cases for figures."""
        return cls(data_dir / OPS_DB, cases, data_dir / READMODEL_DB)

    @property
    def cases(self) -> CaseFacts:
        if self._cases is None:
            if self._readmodel_path is None:
                raise RuntimeError("OpsModel was opened without the cases its figures count")
            self._cases = ReadModel(self._readmodel_path)
        return self._cases

    # --- reports from the collector -------------------------------------------------------------------

    def record(
        self,
        statuses: Iterable[StatusReport] = (),
        links: Iterable[LinkReport] = (),
        quarantined: Iterable[QuarantineReport] = (),
    ) -> None:
        """Store a batch of reports in one transaction, in arrival order.

        One prepared statement per table, executed for many rows: building an upsert per message
        costs milliseconds, which ~300 reports a second cannot afford.
        """
        status_rows = [_status_row(report) for report in statuses]
        link_list = list(links)
        link_rows = [_link_row(report) for report in link_list]
        store_rows = [row for row in (_store_row(report) for report in link_list) if row is not None]
        gap_rows = [_gap_row(report) for report in link_list if report.incomplete is not None]
        quarantine_rows = [
            {
                "reporter": q.reporter,
                "doc_id": q.doc_id,
                "case_no": q.case_no,
                "signer": q.signer,
                "reason": q.reason,
                "reported_at": q.received_at,
            }
            for q in quarantined
        ]
        with self.engine.begin() as conn:
            for statement, rows in (
                (_STATUS_UPSERT, status_rows),
                (_LINK_UPSERT, link_rows),
                (_STORE_UPSERT, store_rows),
                (_GAP_UPSERT, gap_rows),
                (_QUARANTINE_INSERT, quarantine_rows),
            ):
                if rows:
                    conn.execute(statement, rows)

    def record_heartbeat_docs(self, docs: Iterable[dict[str, Any]], checked_at: float) -> int:
        """The ``heartbeat:<node>`` documents the city's store holds (their ``at`` is what matters)."""
        rows = []
        for doc in docs:
            code, at = doc.get("node"), _float(doc.get("at"))
            if isinstance(code, str) and at is not None:
                version = _text(doc.get("version"), 40)
                rows.append({"code": code, "at": at, "version": version, "checked_at": checked_at})
        if rows:
            statement = sqlite_insert(heartbeat_docs)
            statement = statement.on_conflict_do_update(
                index_elements=["code"],
                set_={
                    "at": func.max(heartbeat_docs.c.at, statement.excluded.at),
                    "version": statement.excluded.version,
                    "checked_at": statement.excluded.checked_at,
                },
            )
            with self.engine.begin() as conn:
                conn.execute(statement, rows)
        return len(rows)

    # --- reading the reports --------------------------------------------------------------------------

    @staticmethod
    def _by_code(conn: Connection, table: Table) -> dict[str, dict[str, Any]]:
        # Plain tuples zipped with the column names: SQLAlchemy's row mappings cost ~50 µs a row, and
        # the dashboard reads every node's row on every request.
        names = [column.name for column in table.columns]
        flags = [column.name for column in table.columns if isinstance(column.type, Boolean)]
        cursor = conn.exec_driver_sql(f"SELECT {', '.join(names)} FROM {table.name}")
        rows = {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}
        for row in rows.values():
            for name in flags:  # SQLite keeps booleans as 0/1
                if row[name] is not None:
                    row[name] = bool(row[name])
        return rows

    def snapshot(self) -> OpsSnapshot:
        """Statuses, links and heartbeat documents, read together in one transaction."""
        with self.engine.connect() as conn:
            statuses = self._by_code(conn, node_status)
            links = self._by_code(conn, link_stats)
            beats = dict(conn.exec_driver_sql("SELECT code, at FROM heartbeat_docs").fetchall())
            gaps = self._by_code(conn, case_gaps)
        return OpsSnapshot(statuses, links, beats, gaps)

    def statuses(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return self._by_code(conn, node_status)

    def links(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return self._by_code(conn, link_stats)

    def heartbeats(self) -> dict[str, float]:
        with self.engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT code, at FROM heartbeat_docs").fetchall())

    def counts(self) -> dict[str, int]:
        """How many nodes have reported a status, a link and a heartbeat document (the benchmark waits on it)."""
        with self.engine.connect() as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in (("status", node_status), ("links", link_stats), ("heartbeats", heartbeat_docs))
            }

    # --- quarantine -------------------------------------------------------------------------------------

    def unacknowledged_quarantine(self) -> dict[str, list[dict[str, Any]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(quarantine_reports)
                .where(quarantine_reports.c.acknowledged_at.is_(None))
                .order_by(quarantine_reports.c.reported_at)
            ).all()
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            found.setdefault(row.reporter, []).append(dict(row._mapping))
        return found

    # --- alerts -----------------------------------------------------------------------------------------

    def open_alerts(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts).where(alerts.c.closed_at.is_(None))).all()
        return {(row.kind, row.node): _alert(row._mapping) for row in rows}

    def apply_alerts(
        self,
        to_open: dict[tuple[str, str], dict[str, Any]],
        to_refresh: dict[int, dict[str, Any]],
        to_close: list[int],
        now: float,
    ) -> tuple[list[int], list[int]]:
        """Open, refresh and close alerts in one transaction; returns (opened ids, closed ids).

        Opening is idempotent: the partial unique index allows one open alert per kind and node,
        so a second evaluation running at the same moment opens nothing twice.
        """
        opened: list[int] = []
        closed: list[int] = []
        with self.engine.begin() as conn:
            for (kind, node), detail in to_open.items():
                statement = (
                    sqlite_insert(alerts)
                    .values(kind=kind, node=node, opened_at=now, updated_at=now, detail=_json(detail))
                    .on_conflict_do_nothing(index_elements=["kind", "node"], index_where=text("closed_at IS NULL"))
                    .returning(alerts.c.id)
                )
                new_id = conn.execute(statement).scalar_one_or_none()
                if new_id is not None:
                    opened.append(int(new_id))
            for alert_id, detail in to_refresh.items():
                conn.execute(
                    update(alerts)
                    .where(alerts.c.id == alert_id, alerts.c.closed_at.is_(None))
                    .values(detail=_json(detail), updated_at=now)
                )
            for alert_id in to_close:
                result = conn.execute(
                    update(alerts)
                    .where(alerts.c.id == alert_id, alerts.c.closed_at.is_(None))
                    .values(closed_at=now, updated_at=now)
                )
                if result.rowcount == 1:
                    closed.append(alert_id)
        return opened, closed

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        return _alert(row._mapping) if row else None

    def alerts(self, state: str = "all", limit: int = 500) -> list[dict[str, Any]]:
        """Open alerts first (newest first), then closed ones; ``state`` is ``open``, ``closed`` or ``all``."""
        query = select(alerts)
        if state == "open":
            query = query.where(alerts.c.closed_at.is_(None))
        elif state == "closed":
            query = query.where(alerts.c.closed_at.is_not(None))
        query = query.order_by(alerts.c.closed_at.is_not(None), alerts.c.opened_at.desc(), alerts.c.id.desc())
        with self.engine.connect() as conn:
            return [_alert(row._mapping) for row in conn.execute(query.limit(limit))]

    def acknowledge(self, alert_id: int, username: str, now: float) -> dict[str, Any] | None:
        """Record who acknowledged; the first acknowledgement stands. A quarantine alert's reports count as seen."""
        with self.engine.begin() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
            if row is None:
                return None
            if row.acknowledged_at is None:
                conn.execute(
                    update(alerts).where(alerts.c.id == alert_id).values(acknowledged_by=username, acknowledged_at=now)
                )
            if row.kind == "quarantine":
                conn.execute(
                    update(quarantine_reports)
                    .where(
                        quarantine_reports.c.reporter == row.node,
                        quarantine_reports.c.acknowledged_at.is_(None),
                        quarantine_reports.c.reported_at <= now,
                    )
                    .values(acknowledged_at=now)
                )
        return self.alert(alert_id)

    def unannounced(self) -> list[dict[str, Any]]:
        """Alerts whose opening or closing has not been acknowledged by the broker yet, oldest first."""
        query = (
            select(alerts)
            .where(
                alerts.c.open_announced_at.is_(None)
                | (alerts.c.closed_at.is_not(None) & alerts.c.close_announced_at.is_(None))
            )
            .order_by(alerts.c.id)
        )
        with self.engine.connect() as conn:
            return [_alert(row._mapping) for row in conn.execute(query)]

    def mark_announced(self, alert_id: int, which: str, now: float) -> None:
        column = {"opened": "open_announced_at", "closed": "close_announced_at"}[which]
        with self.engine.begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values({column: now}))

    def open_alert_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alerts.c.kind, func.count()).where(alerts.c.closed_at.is_(None)).group_by(alerts.c.kind)
            ).all()
        return {kind: int(count) for kind, count in rows}

    # --- case outcomes and figures ---------------------------------------------------------------------

    def cases_needing_outcome(self, limit: int) -> list[tuple[str, int]]:
        """Decided cases (number, event count) whose outcome is not recorded, or whose events moved on since."""
        recorded = self._recorded_event_counts()
        needing: list[tuple[str, int]] = []
        for case_no, event_count in self.cases.decided_event_counts().items():
            if recorded.get(case_no) != event_count:
                needing.append((case_no, event_count))
                if len(needing) >= limit:
                    break
        return needing

    def record_outcomes(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        statement = sqlite_insert(case_outcomes)
        statement = statement.on_conflict_do_update(
            index_elements=["case_no"],
            set_={key: statement.excluded[key] for key in ("decision", "settled", "decided_at", "event_count")},
        )
        with self.engine.begin() as conn:
            conn.execute(statement, rows)

    def _recorded_event_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.exec_driver_sql("SELECT case_no, event_count FROM case_outcomes").fetchall())

    def _outcomes(self) -> dict[str, tuple[str | None, bool, str | None]]:
        """Case number → (decision, settled on the spot, decided at)."""
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT case_no, decision, settled, decided_at FROM case_outcomes").fetchall()
        return {case_no: (decision, bool(settled), decided_at) for case_no, decision, settled, decided_at in rows}

    def case_groups(self) -> list[dict[str, Any]]:
        """Case counts grouped by accepting node, handling node, state, flag, decision and 即办."""
        outcomes = self._outcomes()
        groups: Counter[tuple[str, str, str, str | None, bool, str | None, bool]] = Counter()
        for fact in self.cases.case_facts():
            decision, settled, _ = outcomes.get(fact.case_no, (None, False, None))
            if fact.state in ("approved", "rejected"):
                decision = fact.state
            groups[
                (fact.accepting_node, fact.handling_node, fact.state, fact.flag, fact.transferred, decision, settled)
            ] += 1
        keys = ("accepting", "handling", "state", "flag", "transferred", "decision", "settled")
        return [{**dict(zip(keys, key, strict=True)), "n": n} for key, n in groups.items()]

    def matter_groups(self) -> list[dict[str, Any]]:
        """Per matter: accepted, decided, approved, rejected, average days from acceptance to decision."""
        outcomes = self._outcomes()
        matters: dict[str, dict[str, Any]] = {}
        for fact in self.cases.case_facts():
            if fact.state == "refused":
                continue
            row = matters.setdefault(
                fact.matter_code,
                {
                    "matter_code": fact.matter_code,
                    "matter_name": fact.matter_name,
                    "accepted": 0,
                    "decided": 0,
                    "approved": 0,
                    "rejected": 0,
                    "settled": 0,
                    "days": [],
                },
            )
            decision, settled, decided_at = outcomes.get(fact.case_no, (None, False, None))
            row["matter_name"] = max(row["matter_name"], fact.matter_name)
            row["accepted"] += 1
            verdict = decision or fact.state
            if verdict in ("approved", "rejected"):
                row[verdict] += 1
            row["settled"] += int(settled)
            if decided_at is not None:
                row["decided"] += 1
                days = _days_between(fact.accepted_at, decided_at)
                if days is not None:
                    row["days"].append(days)
        for row in matters.values():
            days = row.pop("days")
            row["avg_days"] = sum(days) / len(days) if days else None
        return sorted(matters.values(), key=lambda row: (-row["accepted"], row["matter_code"]))


def _days_between(start: str, end: str) -> float | None:
    """Days from one ISO-8601 instant to another (a naive one is UTC); None when either does not parse."""
    try:
        instants = [datetime.fromisoformat(value) for value in (start, end)]
    except (TypeError, ValueError):
        return None
    first, last = (at if at.tzinfo else at.replace(tzinfo=UTC) for at in instants)
    return (last - first).total_seconds() / 86_400


def _status_row(report: StatusReport) -> dict[str, Any]:
    online = report.status == "online"
    return {
        "code": report.code,
        "status": report.status,
        "reason": None if online else report.reason,
        "version": report.version,
        "last_heartbeat_at": report.seen_at if online else None,
        "status_changed_at": report.received_at,
        "first_seen_at": report.received_at,
        "received_at": report.received_at,
    }


def _link_row(report: LinkReport) -> dict[str, Any]:
    values: dict[str, Any] = {"code": report.code, "parent": report.parent, "received_at": report.received_at}
    for direction, stats in (("push", report.push), ("pull", report.pull)):
        values[f"{direction}_last_success"] = _float(stats.get("last_success"))
        values[f"{direction}_last_attempt"] = _float(stats.get("last_attempt"))
        values[f"{direction}_docs_written"] = _int(stats.get("docs_written"))
        values[f"{direction}_errors"] = _int(stats.get("errors"))
        values[f"{direction}_last_error"] = _text(stats.get("last_error"))
        values[f"{direction}_checkpoint_moved_at"] = _float(stats.get("checkpoint_moved_at"))
    values["pending"] = report.pending
    values["pending_since"] = report.received_at if report.pending else None
    return values


def _store_row(report: LinkReport) -> dict[str, Any] | None:
    store = {
        "store_reachable": report.store_reachable,
        "store_docs": report.store_docs,
        "store_size": report.store_size,
    }
    if all(value is None for value in store.values()):
        return None
    return {"code": report.code, "first_seen_at": report.received_at, "received_at": report.received_at, **store}


def _gap_row(report: LinkReport) -> dict[str, Any]:
    return {
        "code": report.code,
        "incomplete": report.incomplete,
        "incomplete_since": report.received_at if report.incomplete else None,
        "received_at": report.received_at,
    }


def _gap_upsert() -> Any:
    new, old = sqlite_insert(case_gaps), case_gaps.c
    return new.on_conflict_do_update(
        index_elements=["code"],
        set_={
            "incomplete": new.excluded.incomplete,
            # Keep the moment the gaps appeared while they last; clear it once none is left.
            "incomplete_since": _case(
                new.excluded.incomplete > 0, func.coalesce(old.incomplete_since, new.excluded.received_at), None
            ),
            "received_at": new.excluded.received_at,
        },
    )


def _status_upsert() -> Any:
    new, old = sqlite_insert(node_status), node_status.c
    changed = func.coalesce(old.status, "") != new.excluded.status
    return new.on_conflict_do_update(
        index_elements=["code"],
        set_={
            "status": new.excluded.status,
            "reason": new.excluded.reason,
            "version": func.coalesce(new.excluded.version, old.version),
            # Only ever forward: a retained message replayed after a restart carries an older ``at``.
            "last_heartbeat_at": _case(
                new.excluded.last_heartbeat_at.is_(None),
                old.last_heartbeat_at,
                func.max(func.coalesce(old.last_heartbeat_at, 0.0), new.excluded.last_heartbeat_at),
            ),
            "status_changed_at": _case(changed, new.excluded.status_changed_at, old.status_changed_at),
            "received_at": new.excluded.received_at,
        },
    )


def _link_upsert() -> Any:
    new, old = sqlite_insert(link_stats), link_stats.c
    update_set: dict[str, Any] = {
        column.name: new.excluded[column.name] for column in link_stats.columns if column.name not in ("code",)
    }
    # Keep the moment the backlog started while it lasts; clear it once nothing is pending.
    update_set["pending_since"] = _case(
        func.coalesce(new.excluded.pending, 0) > 0,
        func.coalesce(old.pending_since, new.excluded.received_at),
        None,
    )
    return new.on_conflict_do_update(index_elements=["code"], set_=update_set)


def _store_upsert() -> Any:
    new = sqlite_insert(node_status)
    keys = ("store_reachable", "store_docs", "store_size", "received_at")
    return new.on_conflict_do_update(index_elements=["code"], set_={key: new.excluded[key] for key in keys})


def _case(condition: Any, then: Any, otherwise: Any) -> Any:
    return case((condition, then), else_=otherwise)


def _json(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, default=str)


def _alert(row: Any) -> dict[str, Any]:
    alert = dict(row)
    try:
        alert["detail"] = json.loads(alert["detail"] or "{}")
    except ValueError:
        alert["detail"] = {"text": alert["detail"]}
    return alert


# --- the agent's statistics file --------------------------------------------------------------------------


def store_report(store: DocStore, since: Any = None, count_pending: bool = False) -> dict[str, Any]:
    """Reachability, size and (with ``count_pending``) the changes since ``since`` not yet pushed up.

    The count never does arithmetic on sequence values (opaque strings in CouchDB 3): it reads the
    changes feed from the push checkpoint, up to :data:`PENDING_CAP` entries.
    """
    report: dict[str, Any] = {"store": {"reachable": False}}
    try:
        info = store.info()
        sizes = info.get("sizes") or {}
        report["store"] = {
            "reachable": True,
            "doc_count": info.get("doc_count"),
            "size": sizes.get("file") or info.get("disk_size"),
        }
        if count_pending:
            feed = store.changes(since=since if since is not None else 0, limit=PENDING_CAP)
            report["pending"] = len(feed.get("results", []))
    except StoreUnavailable:
        pass
    except Exception as exc:  # a report must never stop the agent
        report["store"]["error"] = f"{type(exc).__name__}: {exc}"[:200]
    return report


def write_agent_stats(data_dir: Path, stats: dict[str, Any]) -> None:
    """Atomically replace the statistics file (a reader never sees half of it)."""
    path = data_dir / AGENT_STATS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps({**stats, "written_at": time.time()}, default=str), encoding="utf-8")
        tmp.replace(path)


def read_agent_stats(data_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((data_dir / AGENT_STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def iter_heartbeat_docs(store: DocStore) -> Iterator[dict[str, Any]]:
    """Every ``heartbeat:<node>`` document the store holds (one ``_all_docs`` range read)."""
    yield from store.all_docs("heartbeat:", "heartbeat:\ufff0", include_docs=True)


_STATUS_UPSERT = _status_upsert()
_LINK_UPSERT = _link_upsert()
_STORE_UPSERT = _store_upsert()
_GAP_UPSERT = _gap_upsert()
_QUARANTINE_INSERT = sqlite_insert(quarantine_reports).on_conflict_do_nothing()
