"""Server-side sign-in sessions and API tokens of a node's staff, sign-in failures, and the security audit trail.

Why a table and not the signed cookie alone: a signed cookie or token stays valid until it expires,
whatever happens to the account. Here every page session and every API token is a row, keyed by the
SHA-256 of its secret (a copy of the file yields no usable session); the browser or the client holds
only the secret. Ending one session deletes its row; logging out everywhere, changing the password or
an administrator disabling the account deletes all of the account's rows, so every copy of every
cookie and token stops working at the next request. Flask-Session was considered: it stores sessions
by id only and cannot end all of one person's sessions at once, which is the point here.

The rows live in the node's ``state.sqlite3`` (shared by the node's processes, never replicated):
sessions are local to the node that issued them. Sign-in failures per account drive the lockout;
the audit trail records sign-ins, lockouts and citizen look-ups with keyed hashes only, never a name
or an ID number, and is kept for the node's ``audit_retention_days`` (the worker's beat prunes it).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, delete, insert, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.adapters.nodestate import create_tables, sqlite_engine

metadata = MetaData()

sessions = Table(
    "web_sessions",
    metadata,
    Column("secret_hash", String, primary_key=True),
    Column("username", String, nullable=False, index=True),
    Column("kind", String, nullable=False),  # "page" or "api"
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

failures = Table(
    "login_failures",
    metadata,
    Column("username", String, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("locked_until", Float, nullable=False, server_default="0"),
)

audit = Table(
    "security_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("event", String, nullable=False),
    Column("subject", String, nullable=False),  # keyed hash of the account name or case number
    Column("client", String, nullable=False),  # keyed hash of the client address
    Column("outcome", String, nullable=False),
)

# Writing last_seen on every request would make every page a write; once a minute (or a tenth of the
# idle timeout, if shorter) is close enough.
TOUCH_EVERY_S = 60.0


@dataclass(frozen=True)
class Lifetimes:
    """How long a session lives: ``idle_s`` without a request, ``absolute_s`` at most since sign-in."""

    idle_s: float
    absolute_s: float


@dataclass(frozen=True)
class Lockout:
    """``failures`` wrong passwords within ``window_s`` lock the account for ``lock_s``."""

    failures: int = 5
    window_s: float = 15 * 60
    lock_s: float = 15 * 60


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class SessionStore:
    def __init__(self, path: Path) -> None:
        self.engine = sqlite_engine(path)
        create_tables(metadata, self.engine, path)

    # --- sessions and tokens ---

    def open(self, username: str, kind: str, lifetimes: Lifetimes, now: float | None = None) -> str:
        """A new session for ``username``; returns its secret (shown once, stored only as a hash).

        Sessions of that kind past their lifetimes are deleted on the way, so the table holds live
        sessions and the ones that died since the last sign-in.
        """
        secret = secrets.token_urlsafe(32)
        at = time.time() if now is None else now
        with self.engine.begin() as conn:
            conn.execute(
                delete(sessions).where(
                    sessions.c.kind == kind,
                    or_(
                        sessions.c.last_seen < at - lifetimes.idle_s,
                        sessions.c.created_at < at - lifetimes.absolute_s,
                    ),
                )
            )
            conn.execute(
                insert(sessions).values(
                    secret_hash=_digest(secret), username=username, kind=kind, created_at=at, last_seen=at
                )
            )
        return secret

    def resolve(self, secret: str, kind: str, lifetimes: Lifetimes, now: float | None = None) -> str | None:
        """The user name of a live session, or None (an expired one is deleted on the way)."""
        at = time.time() if now is None else now
        key = _digest(secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.secret_hash == key, sessions.c.kind == kind)).first()
        if row is None:
            return None
        if at - row.last_seen > lifetimes.idle_s or at - row.created_at > lifetimes.absolute_s:
            self.end(secret)
            return None
        if at - row.last_seen > min(TOUCH_EVERY_S, lifetimes.idle_s / 10):
            with self.engine.begin() as conn:
                conn.execute(update(sessions).where(sessions.c.secret_hash == key).values(last_seen=at))
        return str(row.username)

    def end(self, secret: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.secret_hash == _digest(secret)))

    def end_all(self, username: str) -> int:
        """End every page session and API token of ``username``; how many there were."""
        with self.engine.begin() as conn:
            return int(conn.execute(delete(sessions).where(sessions.c.username == username)).rowcount)

    def count(self, username: str) -> int:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sessions.c.secret_hash).where(sessions.c.username == username)).all()
        return len(rows)

    # --- sign-in failures ---

    def locked_until(self, username: str, now: float | None = None) -> float | None:
        """When the account's lock ends, or None if it is not locked."""
        at = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(select(failures).where(failures.c.username == username)).first()
        return float(row.locked_until) if row is not None and row.locked_until > at else None

    def failed(self, username: str, rule: Lockout, now: float | None = None) -> float | None:
        """Count a wrong password; returns when the lock ends if this failure locks the account."""
        at = time.time() if now is None else now
        with self.engine.begin() as conn:
            row = conn.execute(select(failures).where(failures.c.username == username)).first()
            if row is None or at - row.first_at > rule.window_s:
                count, first_at = 1, at
            else:
                count, first_at = int(row.count) + 1, float(row.first_at)
            locked_until = at + rule.lock_s if count >= rule.failures else 0.0
            if locked_until:
                count, first_at = 0, at  # a new window after the lock
            statement = sqlite_insert(failures).values(
                username=username, count=count, first_at=first_at, locked_until=locked_until
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["username"],
                    set_={"count": count, "first_at": first_at, "locked_until": locked_until},
                )
            )
        return locked_until or None

    def succeeded(self, username: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(failures).where(failures.c.username == username))

    # --- audit trail ---

    def record(self, event: str, subject: str, client: str, outcome: str, now: float | None = None) -> None:
        """One audit line; ``subject`` and ``client`` must already be keyed hashes."""
        at = time.time() if now is None else now
        with self.engine.begin() as conn:
            conn.execute(insert(audit).values(at=at, event=event, subject=subject, client=client, outcome=outcome))

    def prune_audit(self, older_than_s: float, now: float | None = None) -> int:
        """Delete audit lines older than ``older_than_s`` seconds (the retention period); how many."""
        at = time.time() if now is None else now
        with self.engine.begin() as conn:
            return int(conn.execute(delete(audit).where(audit.c.at < at - older_than_s)).rowcount)

    def audit_trail(self, event: str | None = None, limit: int = 1000) -> list[dict[str, object]]:
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if event:
            query = query.where(audit.c.event == event)
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]
