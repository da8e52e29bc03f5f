"""SQLite files of one node: an engine several processes can share, and table creation that does not race.

Every SQLite adapter (accounts and counters, the read model, the ops tables) opens its file here.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Connection, Engine


def create_tables(
    meta: MetaData, engine: Engine, path: Path, migrate: Callable[[Connection], None] | None = None
) -> None:
    """``create_all`` (and ``migrate``) under a file lock: a node's processes start together and would race."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with engine.begin() as conn:
            meta.create_all(conn)
            if migrate is not None:
                migrate(conn)


def sqlite_engine(path: Path) -> Engine:
    """SQLite shared by several processes of one node: WAL and a busy timeout instead of 'database is locked'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine
