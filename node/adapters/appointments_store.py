"""Appointment and queue-number storage: the port the use cases need, and its SQLite implementation.

Capacity is enforced by the database, not by a read-then-write in Python: a booking is one
``INSERT … SELECT … WHERE (places held in this share) < share`` inside a ``BEGIN IMMEDIATE``
transaction, so of 100 simultaneous bookings for the last 10 places exactly 10 insert a row
(bench/bench_appointments.py). A partial unique index keeps one active booking per person and slot
even if a caller skipped the check. Applicants are stored by their look-up key (an HMAC of the ID
number), never by the number.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from node.adapters.sqlite import private_file
from node.domain.appointments import (
    Appointment,
    AppointmentStatus,
    SlotRef,
    Ticket,
    TicketStatus,
    WindowGroup,
    WorkingPlan,
    check_cancel,
    check_ticket_transition,
    duplicate_booking_error,
    merge,
    next_ticket,
    not_found_error,
    slot_full_error,
    ticket_number,
)
from node.domain.errors import DomainError, ErrorKind


class AppointmentStore(Protocol):
    """What the appointment and queue use cases need from storage."""

    def book(
        self, slot: SlotRef, matter_code: str, applicant_key: str, holder: str, share: int, now: datetime
    ) -> Appointment: ...

    def request(
        self, slot: SlotRef, matter_code: str, applicant_key: str, holder: str, now: datetime
    ) -> Appointment: ...

    def decide(self, appointment_id: str, owner_share: int, now: datetime) -> Appointment: ...

    def get(self, appointment_id: str) -> Appointment: ...

    def receive(self, incoming: Appointment) -> Appointment: ...

    def on_day(self, node: str, day: date) -> list[Appointment]: ...

    def cancel(self, appointment_id: str, applicant_key: str, now: datetime, plan: WorkingPlan) -> Appointment: ...

    def taken(self, node: str, day: date) -> dict[tuple[str, datetime], int]: ...

    def record_no_shows(self, node: str, now: datetime, plan: WorkingPlan) -> list[str]: ...

    def issue_ticket(
        self, node: str, day: date, group: WindowGroup, now: datetime, appointment: Appointment | None = None
    ) -> Ticket: ...

    def call_next(self, node: str, day: date, group: str, window: str, now: datetime) -> Ticket | None: ...

    def finish_ticket(self, ticket_id: str, status: TicketStatus, now: datetime) -> Ticket: ...

    def tickets(self, node: str, day: date) -> list[Ticket]: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS appointments (
        appointment_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        grp TEXT NOT NULL,
        matter_code TEXT NOT NULL,
        start TEXT NOT NULL,
        "end" TEXT NOT NULL,
        applicant_key TEXT NOT NULL,
        booked_at TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        changed_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS appointments_slot ON appointments (node, grp, start, booked_at, status)",
    """CREATE UNIQUE INDEX IF NOT EXISTS appointments_one_per_person ON appointments (node, start, applicant_key)
        WHERE status IN ('booked', 'requested', 'arrived')""",
    """CREATE TABLE IF NOT EXISTS tickets (
        ticket_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        day TEXT NOT NULL,
        grp TEXT NOT NULL,
        seq INTEGER NOT NULL,
        number TEXT NOT NULL,
        appointment_id TEXT UNIQUE,
        appointment_start TEXT,
        status TEXT NOT NULL,
        window TEXT,
        issued_at TEXT NOT NULL,
        called_at TEXT,
        changed_at TEXT,
        UNIQUE (node, day, grp, seq)
    )""",
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _slot_iso(moment: datetime) -> str:
    return moment.isoformat(timespec="minutes")


def _engine(path: Path) -> Engine:
    private_file(path)  # 0600 before SQLite creates it: appointments name applicants by their look-up key
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: object) -> None:
        # pysqlite's own transaction handling would BEGIN DEFERRED; we issue BEGIN IMMEDIATE ourselves,
        # so the writer lock is taken before the capacity count is read.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class SqliteAppointmentStore:
    """One node's appointments and tickets in one SQLite file (several processes may share it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.engine = _engine(self.path)
        with self._tx() as conn:
            for statement in _SCHEMA:
                conn.exec_driver_sql(statement)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- appointments ---------------------------------------------------------------------------------

    def _insert(
        self,
        conn: Connection,
        slot: SlotRef,
        matter_code: str,
        applicant_key: str,
        holder: str,
        status: AppointmentStatus,
        now: datetime,
        share: int | None,
    ) -> Appointment:
        duplicate = conn.execute(
            text(
                "SELECT 1 FROM appointments WHERE node = :node AND start = :start AND applicant_key = :key"
                " AND status IN ('booked', 'requested', 'arrived')"
            ),
            {"node": slot.node, "start": _slot_iso(slot.start), "key": applicant_key},
        ).first()
        if duplicate:
            raise duplicate_booking_error(slot)
        row = {
            "id": uuid.uuid4().hex,
            "node": slot.node,
            "grp": slot.group,
            "matter": matter_code,
            "start": _slot_iso(slot.start),
            "end": _slot_iso(slot.end),
            "key": applicant_key,
            "holder": holder,
            "status": str(status),
            "now": _iso(now),
            "share": share if share is not None else 1 << 30,
        }
        try:
            inserted = conn.execute(
                text(
                    'INSERT INTO appointments (appointment_id, node, grp, matter_code, start, "end", applicant_key,'
                    " booked_at, status, created_at)"
                    " SELECT :id, :node, :grp, :matter, :start, :end, :key, :holder, :status, :now"
                    " WHERE (SELECT COUNT(*) FROM appointments WHERE node = :node AND grp = :grp AND start = :start"
                    "        AND booked_at = :holder AND status IN ('booked', 'arrived', 'no_show')) < :share"
                ),
                row,
            ).rowcount
        except IntegrityError:
            raise duplicate_booking_error(slot) from None
        if inserted != 1:
            raise slot_full_error(slot)
        return self._get(conn, row["id"])

    def book(
        self, slot: SlotRef, matter_code: str, applicant_key: str, holder: str, share: int, now: datetime
    ) -> Appointment:
        """Confirm a place of ``holder``'s share of the slot, or raise slot_full / appointment_duplicate."""
        with self._tx() as conn:
            return self._insert(conn, slot, matter_code, applicant_key, holder, AppointmentStatus.BOOKED, now, share)

    def request(self, slot: SlotRef, matter_code: str, applicant_key: str, holder: str, now: datetime) -> Appointment:
        """File a booking request that the window's node will confirm or reject (no share held here)."""
        with self._tx() as conn:
            return self._insert(conn, slot, matter_code, applicant_key, holder, AppointmentStatus.REQUESTED, now, None)

    def decide(self, appointment_id: str, owner_share: int, now: datetime) -> Appointment:
        """At the window's node: confirm a request from the owner's share if a place is left, else reject it."""
        with self._tx() as conn:
            appointment = self._get(conn, appointment_id)
            if appointment.status != AppointmentStatus.REQUESTED:
                return appointment  # decided before: deciding again changes nothing
            confirmed = conn.execute(
                text(
                    "UPDATE appointments SET status = 'booked', booked_at = node, changed_at = :now"
                    " WHERE appointment_id = :id AND status = 'requested'"
                    " AND (SELECT COUNT(*) FROM appointments AS other WHERE other.node = appointments.node"
                    "      AND other.grp = appointments.grp AND other.start = appointments.start"
                    "      AND other.booked_at = appointments.node"
                    "      AND other.status IN ('booked', 'arrived', 'no_show')) < :share"
                ),
                {"id": appointment_id, "share": owner_share, "now": _iso(now)},
            ).rowcount
            if not confirmed:
                conn.execute(
                    text(
                        "UPDATE appointments SET status = 'rejected', changed_at = :now"
                        " WHERE appointment_id = :id AND status = 'requested'"
                    ),
                    {"id": appointment_id, "now": _iso(now)},
                )
            return self._get(conn, appointment_id)

    def receive(self, incoming: Appointment) -> Appointment:
        """Take another node's copy of an appointment (replication) and keep the merged one."""
        with self._tx() as conn:
            try:
                local = self._get(conn, incoming.appointment_id)
            except DomainError:
                conn.execute(
                    text(
                        'INSERT INTO appointments (appointment_id, node, grp, matter_code, start, "end", applicant_key,'
                        " booked_at, status, created_at, changed_at) VALUES (:id, :node, :grp, :matter, :start, :end,"
                        " :key, :holder, :status, :created, :changed)"
                    ),
                    _row(incoming),
                )
                return incoming
            merged = merge(local, incoming)
            if merged is not local:
                conn.execute(
                    text(
                        "UPDATE appointments SET status = :status, booked_at = :holder, changed_at = :changed"
                        " WHERE appointment_id = :id"
                    ),
                    _row(merged),
                )
            return self._get(conn, incoming.appointment_id)

    def on_day(self, node: str, day: date) -> list[Appointment]:
        """The node's appointments of ``day`` (for reminders the day before, and the day's list)."""
        with self.engine.connect() as conn:
            ids = conn.execute(
                text("SELECT appointment_id FROM appointments WHERE node = :node AND start LIKE :day ORDER BY start"),
                {"node": node, "day": f"{day.isoformat()}T%"},
            ).scalars()
            return [self._get(conn, appointment_id) for appointment_id in list(ids)]

    def _get(self, conn: Connection, appointment_id: str) -> Appointment:
        if not isinstance(appointment_id, str) or len(appointment_id) > 64:
            raise not_found_error(appointment_id)
        row = (
            conn.execute(text("SELECT * FROM appointments WHERE appointment_id = :id"), {"id": appointment_id})
            .mappings()
            .first()
        )
        if row is None:
            raise not_found_error(appointment_id)
        return Appointment(
            appointment_id=row["appointment_id"],
            node=row["node"],
            group=row["grp"],
            matter_code=row["matter_code"],
            start=datetime.fromisoformat(row["start"]),
            end=datetime.fromisoformat(row["end"]),
            applicant_key=row["applicant_key"],
            booked_at=row["booked_at"],
            status=AppointmentStatus(row["status"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            changed_at=datetime.fromisoformat(row["changed_at"]) if row["changed_at"] else None,
        )

    def get(self, appointment_id: str) -> Appointment:
        with self.engine.connect() as conn:
            return self._get(conn, appointment_id)

    def cancel(self, appointment_id: str, applicant_key: str, now: datetime, plan: WorkingPlan) -> Appointment:
        with self._tx() as conn:
            check_cancel(self._get(conn, appointment_id), applicant_key, now, plan)
            conn.execute(
                text(
                    "UPDATE appointments SET status = 'cancelled', changed_at = :now"
                    " WHERE appointment_id = :id AND status IN ('booked', 'requested')"
                ),
                {"id": appointment_id, "now": _iso(now)},
            )
            return self._get(conn, appointment_id)

    def taken(self, node: str, day: date) -> dict[tuple[str, datetime], int]:
        """Places held or requested per (group, slot start) on ``day``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT grp, start, COUNT(*) FROM appointments WHERE node = :node AND start LIKE :day"
                    " AND status IN ('booked', 'requested', 'arrived', 'no_show') GROUP BY grp, start"
                ),
                {"node": node, "day": f"{day.isoformat()}T%"},
            ).all()
        return {(grp, datetime.fromisoformat(start)): count for grp, start, count in rows}

    def record_no_shows(self, node: str, now: datetime, plan: WorkingPlan) -> list[str]:
        """Mark confirmed bookings whose holder took no number by the end of the grace period."""
        cutoff = _slot_iso(now - timedelta(minutes=plan.grace_minutes))
        with self._tx() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    text(
                        "SELECT appointment_id FROM appointments"
                        " WHERE node = :node AND status = 'booked' AND start < :cut"
                    ),
                    {"node": node, "cut": cutoff},
                )
            ]
            conn.execute(
                text(
                    "UPDATE appointments SET status = 'no_show', changed_at = :now"
                    " WHERE node = :node AND status = 'booked' AND start < :cut"
                ),
                {"node": node, "cut": cutoff, "now": _iso(now)},
            )
        return ids

    # --- queue numbers --------------------------------------------------------------------------------

    def issue_ticket(
        self, node: str, day: date, group: WindowGroup, now: datetime, appointment: Appointment | None = None
    ) -> Ticket:
        """Take a number (取号); with an appointment the booking becomes 'arrived' in the same transaction."""
        with self._tx() as conn:
            if appointment is not None:
                arrived = conn.execute(
                    text(
                        "UPDATE appointments SET status = 'arrived', changed_at = :now"
                        " WHERE appointment_id = :id AND status = 'booked'"
                    ),
                    {"id": appointment.appointment_id, "now": _iso(now)},
                ).rowcount
                if not arrived:
                    raise DomainError(
                        "appointment_already_used",
                        "该预约已取过号或已失效",
                        "A number was already taken on this appointment, or it is no longer valid",
                        ErrorKind.CONFLICT,
                    )
            seq = conn.execute(
                text("SELECT COALESCE(MAX(seq), 0) + 1 FROM tickets WHERE node = :node AND day = :day AND grp = :grp"),
                {"node": node, "day": day.isoformat(), "grp": group.code},
            ).scalar_one()
            ticket_id = uuid.uuid4().hex
            conn.execute(
                text(
                    "INSERT INTO tickets (ticket_id, node, day, grp, seq, number, appointment_id, appointment_start,"
                    " status, issued_at) VALUES (:id, :node, :day, :grp, :seq, :number, :appointment,"
                    " :appointment_start, 'waiting', :now)"
                ),
                {
                    "id": ticket_id,
                    "node": node,
                    "day": day.isoformat(),
                    "grp": group.code,
                    "seq": seq,
                    "number": ticket_number(group.prefix, seq),
                    "appointment": appointment.appointment_id if appointment else None,
                    "appointment_start": _slot_iso(appointment.start) if appointment else None,
                    "now": _iso(now),
                },
            )
            return self._ticket(conn, ticket_id)

    def _ticket(self, conn: Connection, ticket_id: str) -> Ticket:
        row = conn.execute(text("SELECT * FROM tickets WHERE ticket_id = :id"), {"id": ticket_id}).mappings().first()
        if row is None:
            raise DomainError("ticket_not_found", "没有找到该号码", "No such ticket", ErrorKind.NOT_FOUND)
        return _ticket_from_row(row)

    def call_next(self, node: str, day: date, group: str, window: str, now: datetime) -> Ticket | None:
        """The next number for ``window`` (two windows calling at once get different numbers)."""
        with self._tx() as conn:
            rows = conn.execute(
                text("SELECT * FROM tickets WHERE node = :node AND day = :day AND grp = :grp AND status = 'waiting'"),
                {"node": node, "day": day.isoformat(), "grp": group},
            ).mappings()
            chosen = next_ticket([_ticket_from_row(row) for row in rows], now)
            if chosen is None:
                return None
            conn.execute(
                text(
                    "UPDATE tickets SET status = 'called', window = :window, called_at = :now, changed_at = :now"
                    " WHERE ticket_id = :id"
                ),
                {"id": chosen.ticket_id, "window": window, "now": _iso(now)},
            )
            return self._ticket(conn, chosen.ticket_id)

    def finish_ticket(self, ticket_id: str, status: TicketStatus, now: datetime) -> Ticket:
        """Served, or no-show (called and did not come); anything else is refused."""
        with self._tx() as conn:
            check_ticket_transition(self._ticket(conn, ticket_id), status)
            conn.execute(
                text("UPDATE tickets SET status = :status, changed_at = :now WHERE ticket_id = :id"),
                {"id": ticket_id, "status": str(status), "now": _iso(now)},
            )
            return self._ticket(conn, ticket_id)

    def tickets(self, node: str, day: date) -> list[Ticket]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM tickets WHERE node = :node AND day = :day ORDER BY grp, seq"),
                {"node": node, "day": day.isoformat()},
            ).mappings()
            return [_ticket_from_row(row) for row in rows]


def _row(appointment: Appointment) -> dict[str, Any]:
    return {
        "id": appointment.appointment_id,
        "node": appointment.node,
        "grp": appointment.group,
        "matter": appointment.matter_code,
        "start": _slot_iso(appointment.start),
        "end": _slot_iso(appointment.end),
        "key": appointment.applicant_key,
        "holder": appointment.booked_at,
        "status": str(appointment.status),
        "created": _iso(appointment.created_at),
        "changed": _iso(appointment.changed_at) if appointment.changed_at else None,
    }


def _ticket_from_row(row: Any) -> Ticket:
    return Ticket(
        ticket_id=row["ticket_id"],
        node=row["node"],
        day=date.fromisoformat(row["day"]),
        group=row["grp"],
        number=row["number"],
        issued_at=datetime.fromisoformat(row["issued_at"]),
        status=TicketStatus(row["status"]),
        appointment_id=row["appointment_id"],
        appointment_start=datetime.fromisoformat(row["appointment_start"]) if row["appointment_start"] else None,
        window=row["window"],
        called_at=datetime.fromisoformat(row["called_at"]) if row["called_at"] else None,
    )
