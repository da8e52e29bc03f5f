"""What a node keeps that is not derived from documents: staff accounts and case-number counters.

A separate SQLite file from the read model, so rebuilding the read model never touches them. The
counters are a cache of what the document store already shows: after a restore of an older copy of
this file, :meth:`NodeState.raise_case_serial` moves a day's counter past the highest serial the
store holds (the case service does so at start and on a collision), so a number is never issued twice.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from werkzeug.security import check_password_hash, generate_password_hash

from node.adapters.batching import GroupCommit
from node.adapters.sqlite import create_tables, sqlite_engine

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("username", String, primary_key=True),
    Column("password_hash", String, nullable=False),
    Column("role", String, nullable=False),
    Column("department", String, nullable=True),
    Column("display_name", String, nullable=False),
    # An administrator's switch: a disabled account cannot sign in, and its sessions are ended.
    Column("disabled", Integer, nullable=False, server_default="0"),
)

counters = Table(
    "case_counters",
    metadata,
    Column("day", String, primary_key=True),
    Column("last", Integer, nullable=False),
)


# One scheme for every account (werkzeug's scrypt, N=2^15 r=8 p=1): equal cost for every sign-in, known
# name or not, so timing tells nothing; older pbkdf2 hashes are replaced at their next good sign-in.
PASSWORD_METHOD = "scrypt"
# What an unknown name is checked against: a scrypt hash of a random password that was thrown away, so
# every sign-in costs one scrypt run of the same parameters from the first request of a process on.
UNKNOWN_USER_HASH = (
    "scrypt:32768:8:1$IHwN0JCX9fgCTf6J$93686174e4cec40f9aea8a4231"
    "2f21d298ef898f7b38ae60c5597fb5d90379a93042753b10af258680464a8b9e63a92ea2aa428d0364794ee6c3d2496fda555c"
)


def _add_disabled_column(conn: Connection) -> None:
    names = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(accounts)")}
    if "disabled" not in names:
        conn.exec_driver_sql("ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0")


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    department: str | None
    display_name: str


class NodeState:
    def __init__(self, path: Path) -> None:
        self.engine = sqlite_engine(path)
        create_tables(metadata, self.engine, path, _add_disabled_column)
        self._accounts: dict[str, tuple[Account | None, float]] = {}
        # Concurrent acceptances share one transaction (see node.adapters.batching).
        self._serials: GroupCommit[str, int] = GroupCommit(self._reserve_serials)

    def next_case_serial(self, day: date) -> int:
        """The next serial for ``day``'s case numbers: atomic across the node's processes, no gaps."""
        return self._serials.write([day.strftime("%Y%m%d")])[0]

    def raise_case_serial(self, day: date, at_least: int) -> int:
        """Move ``day``'s counter to at least ``at_least`` (never back); returns the counter's value now."""
        key = day.strftime("%Y%m%d")
        given = sqlite_insert(counters).values(day=key, last=at_least)
        statement = given.on_conflict_do_update(
            index_elements=["day"], set_={"last": func.max(counters.c.last, given.excluded.last)}
        ).returning(counters.c.last)
        with self.engine.begin() as conn:
            return int(conn.execute(statement).scalar_one())

    def _reserve_serials(self, days: list[str]) -> list[int]:
        """One statement per day for all the requests waiting at once; serials handed out in order."""
        serials: list[int] = []
        with self.engine.begin() as conn:
            for key in days:
                statement = (
                    sqlite_insert(counters)
                    .values(day=key, last=1)
                    .on_conflict_do_update(index_elements=["day"], set_={"last": counters.c.last + 1})
                    .returning(counters.c.last)
                )
                serials.append(int(conn.execute(statement).scalar_one()))
        return serials

    def add_account(
        self,
        username: str,
        password: str,
        role: str,
        department: str | None = None,
        display_name: str = "",
        generated: bool = False,
    ) -> Account:
        """Create or replace an account (``generated``: a random password, kept for callers' compatibility;
        every password gets the same scheme, see :data:`PASSWORD_METHOD`)."""
        self._accounts.pop(username, None)
        with self.engine.begin() as conn:
            conn.execute(accounts.delete().where(accounts.c.username == username))
            conn.execute(
                insert(accounts).values(
                    username=username,
                    password_hash=generate_password_hash(password, method=PASSWORD_METHOD),
                    role=role,
                    department=department,
                    display_name=display_name or username,
                )
            )
        return Account(username, role, department, display_name or username)

    def account(self, username: str, max_age_s: float = 0.0) -> Account | None:
        """The account, or None; with ``max_age_s``, a copy read at most that long ago will do."""
        if max_age_s > 0:
            cached = self._accounts.get(username)
            if cached and time.monotonic() - cached[1] < max_age_s:
                return cached[0]
        found = self._read_account(username)
        if max_age_s > 0:
            self._accounts[username] = (found, time.monotonic())
        return found

    def _read_account(self, username: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.username == username)).first()
        # A disabled account is no account for the pages and the API: its sessions stop at once.
        return Account(row.username, row.role, row.department, row.display_name) if row and not row.disabled else None

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account if the password is right and the account enabled; one scrypt run in every case."""
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.username == username)).first()
        stored = row.password_hash if row is not None else UNKNOWN_USER_HASH
        if not stored.startswith(PASSWORD_METHOD + ":"):
            # A legacy hash is cheap to check: pay the scheme's cost anyway, so timing stays equal.
            check_password_hash(UNKNOWN_USER_HASH, password)
        if not check_password_hash(stored, password) or row is None or row.disabled:
            return None
        if not stored.startswith(PASSWORD_METHOD + ":"):
            self.set_password(row.username, password)
        return Account(row.username, row.role, row.department, row.display_name)

    def set_password(self, username: str, password: str) -> bool:
        """Replace the password (hashed with :data:`PASSWORD_METHOD`); whether the account exists."""
        digest = generate_password_hash(password, method=PASSWORD_METHOD)
        with self.engine.begin() as conn:
            changed = conn.execute(
                accounts.update().where(accounts.c.username == username).values(password_hash=digest)
            ).rowcount
        return bool(changed)

    def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disable or re-enable an account; whether it exists."""
        self._accounts.pop(username, None)
        with self.engine.begin() as conn:
            changed = conn.execute(
                accounts.update().where(accounts.c.username == username).values(disabled=int(disabled))
            ).rowcount
        return bool(changed)


def new_password() -> str:
    return secrets.token_urlsafe(9)
