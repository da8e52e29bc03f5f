"""The nonces of signed node-to-node requests this node has accepted, shared by all its web processes.

A replayed request (same nonce) is refused whichever gunicorn worker it reaches: the nonce is the
primary key of a table in the node's own SQLite file, and inserting it is the test. Rows expire after
``ttl_s`` (a request's time may be ``MAX_SKEW_S`` old or ahead, so twice that covers every request
that could still be accepted) and are swept from time to time. Only requests whose signature checked
out get here, so the table grows with what the node's children really sent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import Column, Float, MetaData, String, Table, delete
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.adapters.sqlite import create_tables, sqlite_engine

NONCES_DB = "nonces.sqlite3"  # in the node's data directory
SWEEP_EVERY_S = 60.0

metadata = MetaData()

nonces = Table(
    "nonces",
    metadata,
    Column("nonce", String, primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


class NonceLog:
    """``first_use(nonce)``: True the first time a nonce is seen by any process of the node, else False."""

    def __init__(self, path: Path, ttl_s: float = 600.0) -> None:
        self.engine = sqlite_engine(path)
        create_tables(metadata, self.engine, path)
        self.ttl_s = ttl_s
        self._swept_at = 0.0
        self._lock = threading.Lock()

    def first_use(self, nonce: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        statement = sqlite_insert(nonces).values(nonce=nonce, expires_at=now + self.ttl_s)
        with self.engine.begin() as conn:
            if self._sweep_due(now):
                conn.execute(delete(nonces).where(nonces.c.expires_at < now))
            # An expired row not swept yet still refuses its nonce: stricter, never weaker.
            inserted = conn.execute(statement.on_conflict_do_nothing(index_elements=["nonce"])).rowcount
        return inserted == 1

    def _sweep_due(self, now: float) -> bool:
        with self._lock:
            if now - self._swept_at < SWEEP_EVERY_S:
                return False
            self._swept_at = now
            return True

    def __len__(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM nonces").scalar_one())
