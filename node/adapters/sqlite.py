"""SQLite files of one node: an engine several processes can share, and table creation that does not race.

Every SQLite adapter (accounts and counters, the read model, the ops tables) opens its file here. The
files are the node's alone: created 0600 (SQLite gives its ``-wal`` and ``-shm`` files the database
file's mode), with ``secure_delete`` on, so deleted rows are overwritten rather than left in free pages.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import Connection, Engine

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_file(path: Path) -> None:
    """Make sure ``path`` exists and only the node's user can read it (0600), its directory created 0700.

    Before SQLite opens a file: it would create it with the process's umask (0644 by default). An older
    file (or its WAL) of a looser mode is tightened too.
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            if candidate.stat().st_mode & 0o077:
                os.chmod(candidate, PRIVATE_FILE)


def create_tables(
    meta: MetaData, engine: Engine, path: Path, migrate: Callable[[Connection], None] | None = None
) -> None:
    """``create_all`` (and ``migrate``) under a file lock: a node's processes start together and would race."""
    fd = os.open(path.with_suffix(".lock"), os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    with os.fdopen(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with engine.begin() as conn:
            meta.create_all(conn)
            if migrate is not None:
                migrate(conn)


def sqlite_engine(path: Path) -> Engine:
    """SQLite shared by several processes of one node: WAL and a busy timeout instead of 'database is locked'."""
    private_file(path)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Deleted content is zeroed, not left in free pages of the file (a dropped older shape, a session).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return engine
