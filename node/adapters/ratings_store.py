"""好差评 records and rectification tickets of one node, in one SQLite file.

Ratings are kept as written and never updated (a later rating is a new row); a rectification ticket
is one row per poor rating, replaced as a whole when it moves on (the domain's ``replace``).
Comments and notes may hold personal data and are stored sealed (``seal``/``open`` of the node's
personal-data key); the applicant is known only by a look-up key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from node.adapters.sqlite import sqlite_engine
from node.domain.errors import DomainError, ErrorKind
from node.domain.evaluation import (
    Appeal,
    Channel,
    Contact,
    Level,
    Rating,
    Rectification,
    RectificationState,
)

RATINGS_DB = "ratings.sqlite3"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ratings (
        rating_id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        service_id TEXT NOT NULL,
        applicant_key TEXT NOT NULL,
        level INTEGER NOT NULL,
        comment TEXT NOT NULL,
        node TEXT NOT NULL,
        matter_code TEXT NOT NULL,
        window TEXT,
        staff TEXT,
        rated_at TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        supersedes TEXT,
        UNIQUE (channel, service_id, sequence))""",
    "CREATE INDEX IF NOT EXISTS ratings_service ON ratings (channel, service_id)",
    """CREATE TABLE IF NOT EXISTS rectifications (
        ticket_id TEXT PRIMARY KEY,
        rating_id TEXT NOT NULL UNIQUE,
        node TEXT NOT NULL,
        state TEXT NOT NULL,
        deadline TEXT NOT NULL,
        body TEXT NOT NULL)""",
)

Sealer = Callable[[dict[str, Any]], str]
Opener = Callable[[str], dict[str, Any] | None]


class RatingStore:
    def __init__(self, path: Path, seal: Sealer, open_sealed: Opener) -> None:
        self.engine = sqlite_engine(Path(path))
        self._seal = seal
        self._open = open_sealed
        with self.engine.begin() as conn:
            for statement in _SCHEMA:
                conn.exec_driver_sql(statement)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- ratings ----------------------------------------------------------------------------------------

    def add_rating(self, rating: Rating) -> bool:
        """Keep ``rating``; False when it was kept before (same id, or the same service and sequence)."""
        row = rating.to_dict()
        row["comment"] = self._seal({"comment": rating.comment}) if rating.comment else ""
        try:
            with self._tx() as conn:
                conn.execute(
                    text(
                        "INSERT INTO ratings (rating_id, channel, service_id, applicant_key, level, comment, node,"
                        " matter_code, window, staff, rated_at, sequence, supersedes) VALUES (:rating_id, :channel,"
                        " :service_id, :applicant_key, :level, :comment, :node, :matter_code, :window, :staff,"
                        " :rated_at, :sequence, :supersedes)"
                    ),
                    row,
                )
        except IntegrityError:
            return False
        return True

    def ratings_of(self, channel: Channel, service_id: str) -> list[Rating]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT * FROM ratings WHERE channel = :channel AND service_id = :id ORDER BY sequence"),
                {"channel": str(channel), "id": service_id},
            ).mappings()
            return [self._rating(row) for row in rows]

    def rating(self, rating_id: str) -> Rating | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(text("SELECT * FROM ratings WHERE rating_id = :id"), {"id": rating_id}).mappings().first()
            )
            return self._rating(row) if row else None

    def all_ratings(self) -> list[Rating]:
        with self.engine.connect() as conn:
            return [self._rating(row) for row in conn.execute(text("SELECT * FROM ratings")).mappings()]

    def _rating(self, row: Any) -> Rating:
        comment = ""
        if row["comment"]:
            opened = self._open(row["comment"])
            comment = str(opened.get("comment", "")) if opened else ""
        return Rating(
            rating_id=row["rating_id"],
            channel=Channel(row["channel"]),
            service_id=row["service_id"],
            applicant_key=row["applicant_key"],
            level=Level(row["level"]),
            comment=comment,
            node=row["node"],
            matter_code=row["matter_code"],
            window=row["window"],
            staff=row["staff"],
            rated_at=datetime.fromisoformat(row["rated_at"]),
            sequence=row["sequence"],
            supersedes=row["supersedes"],
        )

    # --- rectification tickets -------------------------------------------------------------------------------

    def open_ticket(self, ticket: Rectification) -> bool:
        try:
            with self._tx() as conn:
                conn.execute(
                    text(
                        "INSERT INTO rectifications (ticket_id, rating_id, node, state, deadline, body)"
                        " VALUES (:id, :rating, :node, :state, :deadline, :body)"
                    ),
                    self._ticket_row(ticket),
                )
        except IntegrityError:
            return False
        return True

    def save_ticket(self, ticket: Rectification) -> None:
        with self._tx() as conn:
            conn.execute(
                text(
                    "UPDATE rectifications SET state = :state, deadline = :deadline, body = :body WHERE ticket_id = :id"
                ),
                self._ticket_row(ticket),
            )

    def ticket(self, ticket_id: str) -> Rectification:
        with self.engine.connect() as conn:
            row = (
                conn.execute(text("SELECT * FROM rectifications WHERE ticket_id = :id"), {"id": ticket_id})
                .mappings()
                .first()
            )
        if row is None:
            raise DomainError(
                "rectification_not_found", "没有找到该整改单", "no such rectification ticket", ErrorKind.NOT_FOUND
            )
        return self._ticket(row)

    def tickets(self) -> list[Rectification]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM rectifications ORDER BY deadline, ticket_id")).mappings()
            return [self._ticket(row) for row in rows]

    def _ticket_row(self, ticket: Rectification) -> dict[str, Any]:
        private = {
            "contacts": [{"by": c.by, "at": c.at.isoformat(), "note": c.note} for c in ticket.contacts],
            "outcome": ticket.outcome,
            "appeal": None
            if ticket.appeal is None
            else {
                "by": ticket.appeal.by,
                "at": ticket.appeal.at.isoformat(),
                "reason": ticket.appeal.reason,
                "decided_by": ticket.appeal.decided_by,
                "decided_at": ticket.appeal.decided_at.isoformat() if ticket.appeal.decided_at else None,
                "upheld": ticket.appeal.upheld,
                "decision": ticket.appeal.decision,
            },
        }
        body = {
            "matter_code": ticket.matter_code,
            "rated_staff": ticket.rated_staff,
            "opened_on": ticket.opened_on.isoformat(),
            "closed_at": ticket.closed_at.isoformat() if ticket.closed_at else None,
            "private": self._seal(private),
        }
        return {
            "id": ticket.ticket_id,
            "rating": ticket.rating_id,
            "node": ticket.node,
            "state": str(ticket.state),
            "deadline": ticket.deadline.isoformat(),
            "body": json.dumps(body, ensure_ascii=False),
        }

    def _ticket(self, row: Any) -> Rectification:
        body = json.loads(row["body"])
        private = self._open(body["private"]) or {"contacts": [], "outcome": None, "appeal": None}
        appeal = private.get("appeal")
        return Rectification(
            ticket_id=row["ticket_id"],
            rating_id=row["rating_id"],
            node=row["node"],
            matter_code=body["matter_code"],
            rated_staff=body.get("rated_staff"),
            opened_on=date.fromisoformat(body["opened_on"]),
            deadline=date.fromisoformat(row["deadline"]),
            state=RectificationState(row["state"]),
            contacts=tuple(
                Contact(c["by"], datetime.fromisoformat(c["at"]), c["note"]) for c in private.get("contacts", [])
            ),
            outcome=private.get("outcome"),
            closed_at=datetime.fromisoformat(body["closed_at"]) if body.get("closed_at") else None,
            appeal=None
            if not appeal
            else Appeal(
                by=appeal["by"],
                at=datetime.fromisoformat(appeal["at"]),
                reason=appeal["reason"],
                decided_by=appeal.get("decided_by"),
                decided_at=datetime.fromisoformat(appeal["decided_at"]) if appeal.get("decided_at") else None,
                upheld=appeal.get("upheld"),
                decision=appeal.get("decision"),
            ),
        )
