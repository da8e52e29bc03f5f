"""Idempotency keys of a node's API: the first answer to a creating request, kept to replay it.

A client that sends ``Idempotency-Key: <key>`` with a creating request and retries (a timeout, a
dropped connection) must not create a second case. The first request *claims* the key for its
account; when it has answered, the answer (status and body) is kept with the claim, and a repeat
with the same key and the same request gets that answer again without running anything. A repeat
with another request under the same key is refused (the caller mixed two things up); a repeat while
the first is still running is told to wait.

Claims live in the node's ``state.sqlite3`` (shared by its web processes, never replicated: keys
are per node, as sessions are), keyed by the account and the key. The kept body can hold personal
data (an applicant's name in a case view), so it is stored encrypted (Fernet, with a key derived
from the node's secret key); the request itself is kept only as a SHA-256 fingerprint. Claims are
dropped after :data:`RETENTION_S` (on the way, and by the worker's beat job).
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, delete, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.adapters.sqlite import create_tables, sqlite_engine

metadata = MetaData()

claims = Table(
    "idempotency_keys",
    metadata,
    Column("username", String, primary_key=True),
    Column("key", String, primary_key=True),
    Column("fingerprint", String, nullable=False),  # SHA-256 of method, path and the canonical body
    Column("created_at", Float, nullable=False, index=True),
    Column("status", Integer, nullable=True),  # None while the first request runs
    Column("body", LargeBinary, nullable=True),  # the answer, encrypted
    Column("content_type", String, nullable=True),
)

RETENTION_S = 24 * 3600.0
# A claim whose request never answered (its process died) may be taken over after this long.
ABANDONED_S = 120.0
# Expired claims are deleted on the way at most this often per process.
PRUNE_EVERY_S = 60.0


@dataclass(frozen=True)
class Stored:
    """A kept answer."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Claim:
    """What :meth:`IdempotencyStore.claim` found: ``claimed`` (run the request), or one of the others."""

    claimed: bool = False
    replay: Stored | None = None
    mismatch: bool = False
    running: bool = False


class IdempotencyStore:
    def __init__(self, path: Path, secret: str, retention_s: float = RETENTION_S) -> None:
        self.engine = sqlite_engine(path)
        create_tables(metadata, self.engine, path)
        digest = hashlib.sha256(b"tongban-idempotency:" + secret.encode("utf-8")).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self.retention_s = retention_s
        self._pruned_at = 0.0

    def claim(self, username: str, key: str, fingerprint: str, now: float | None = None) -> Claim:
        """Claim ``key`` for ``username``'s request, or say why not (a kept answer, another request, running)."""
        at = time.time() if now is None else now
        if at - self._pruned_at > PRUNE_EVERY_S:
            self.prune(at)
        with self.engine.begin() as conn:
            taken = conn.execute(
                sqlite_insert(claims)
                .values(username=username, key=key, fingerprint=fingerprint, created_at=at)
                .on_conflict_do_nothing()
            ).rowcount
            if taken:
                return Claim(claimed=True)
            row = conn.execute(select(claims).where(claims.c.username == username, claims.c.key == key)).one()
            expired = at - row.created_at > self.retention_s
            abandoned = row.status is None and at - row.created_at > ABANDONED_S
            if expired or abandoned:
                conn.execute(
                    claims.update()
                    .where(claims.c.username == username, claims.c.key == key)
                    .values(fingerprint=fingerprint, created_at=at, status=None, body=None, content_type=None)
                )
                return Claim(claimed=True)
        if row.fingerprint != fingerprint:
            return Claim(mismatch=True)
        if row.status is None:
            return Claim(running=True)
        try:
            body = self._fernet.decrypt(row.body)
        except InvalidToken:
            # The node's secret key changed since: the answer cannot be shown; the request ran once.
            return Claim(mismatch=True)
        return Claim(replay=Stored(int(row.status), body, str(row.content_type)))

    def complete(self, username: str, key: str, answer: Stored) -> None:
        """Keep the answer of the request that claimed ``key``."""
        with self.engine.begin() as conn:
            conn.execute(
                claims.update()
                .where(claims.c.username == username, claims.c.key == key)
                .values(status=answer.status, body=self._fernet.encrypt(answer.body), content_type=answer.content_type)
            )

    def release(self, username: str, key: str) -> None:
        """Drop a claim whose request wrote nothing (it failed): the key may be used again."""
        with self.engine.begin() as conn:
            conn.execute(delete(claims).where(claims.c.username == username, claims.c.key == key))

    def prune(self, now: float | None = None) -> int:
        """Delete claims older than the retention; how many."""
        at = time.time() if now is None else now
        self._pruned_at = at
        with self.engine.begin() as conn:
            return int(conn.execute(delete(claims).where(claims.c.created_at < at - self.retention_s)).rowcount)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return len(conn.execute(select(claims.c.key)).all())
