"""What a node keeps that is not derived from documents: staff accounts and case-number counters.

A separate SQLite file from the read model, so rebuilding the read model never touches them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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
)

counters = Table(
    "case_counters",
    metadata,
    Column("day", String, primary_key=True),
    Column("last", Integer, nullable=False),
)


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    department: str | None
    display_name: str


class NodeState:
    def __init__(self, path: Path) -> None:
        self.engine = sqlite_engine(path)
        create_tables(metadata, self.engine, path)
        self._accounts: dict[str, tuple[Account | None, float]] = {}
        # Concurrent acceptances share one transaction (see node.adapters.batching).
        self._serials: GroupCommit[str, int] = GroupCommit(self._reserve_serials)

    def next_case_serial(self, day: date) -> int:
        """The next serial for ``day``'s case numbers: atomic across the node's processes, no gaps."""
        return self._serials.write([day.strftime("%Y%m%d")])[0]

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
        """Create or replace an account.

        ``generated`` passwords (random, 72 bits and more) need no slow key-derivation function to
        resist guessing, so they get a fast one: provisioning a federation's demo accounts would
        otherwise take half a minute. People's own passwords always get scrypt.
        """
        method = "pbkdf2:sha256:1000" if generated else "scrypt"
        self._accounts.pop(username, None)
        with self.engine.begin() as conn:
            conn.execute(accounts.delete().where(accounts.c.username == username))
            conn.execute(
                insert(accounts).values(
                    username=username,
                    password_hash=generate_password_hash(password, method=method),
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
        return Account(row.username, row.role, row.department, row.display_name) if row else None

    def authenticate(self, username: str, password: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(accounts).where(accounts.c.username == username)).first()
        if row is None:
            # Same work for unknown users, so timing does not reveal which names exist.
            check_password_hash(generate_password_hash("x"), password)
            return None
        if not check_password_hash(row.password_hash, password):
            return None
        return Account(row.username, row.role, row.department, row.display_name)


def new_password() -> str:
    return secrets.token_urlsafe(9)
