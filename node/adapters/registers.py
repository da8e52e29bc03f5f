"""The reference registers (人口库, 法人库) held at one node: person and enterprise records, sealed at rest.

This adapter owns the node's register file (SQLite, beside its other state): one row per person keyed
by the PersonalData look-up key of the ID number (an HMAC, never the number), one per enterprise keyed
by the look-up key of its credit code. Everything personal — name, ID number, household, the reference
face encodings — is in the row's ``sealed`` column, encrypted with the city's data key
(:class:`node.adapters.pii.PersonalData`); in clear stay only what routing and counting need: the
registered residence (or address) code and the status.

It implements :class:`node.domain.identity.ReferenceLookup` for the face verifier: only active people's
encodings are references (a deceased or moved-out person's face never verifies).

Which records a node holds is :func:`node.domain.registers.held_at`'s rule; ``tongban registers
generate`` fills the register (see :mod:`node.entrypoints.cli`). A record not loaded here is looked up
among the register documents the city or the county replicated to this node (``documents``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.adapters.pii import PersonalData
from node.adapters.register_docs import RegisterDocuments
from node.adapters.sqlite import create_tables, sqlite_engine
from node.domain.errors import DomainError
from node.domain.registers import EnterpriseRecord, PersonRecord

__all__ = ["REGISTER_DB", "RegisterStore"]

REGISTER_DB = "registers.sqlite3"
_BATCH = 2000  # rows per insert statement when filling a register

metadata = MetaData()

people = Table(
    "people",
    metadata,
    Column("key", String, primary_key=True),  # PersonalData.lookup_key(id_number)
    Column("residence_code", String, nullable=False, index=True),
    Column("status", String, nullable=False),
    Column("has_face", Integer, nullable=False),
    Column("sealed", String, nullable=False),  # the whole PersonRecord, encrypted
    Column("updated_at", Float, nullable=False),
)

enterprises = Table(
    "enterprises",
    metadata,
    Column("key", String, primary_key=True),  # PersonalData.lookup_key(credit_code)
    Column("address_code", String, nullable=False, index=True),
    Column("status", String, nullable=False),
    Column("sealed", String, nullable=False),
    Column("updated_at", Float, nullable=False),
)


class RegisterStore:
    """The person and enterprise records this node holds, personal fields sealed with the data key."""

    def __init__(self, path: Path, personal_data: PersonalData, documents: RegisterDocuments | None = None) -> None:
        self.path = path
        self._pii = personal_data
        # Records replicated to this node as signed documents (node/adapters/register_docs.py): read on a miss.
        self.documents = documents
        self._engine = sqlite_engine(path)
        create_tables(metadata, self._engine, path)

    # --- writing ------------------------------------------------------------------------------------------

    def put_people(self, records: Iterable[PersonRecord]) -> int:
        """Insert or replace people (by ID number); returns how many were written."""
        written = 0
        batch: list[dict[str, object]] = []
        now = time.time()
        for record in records:
            batch.append(
                {
                    "key": self._pii.lookup_key(record.id_number),
                    "residence_code": record.residence_code,
                    "status": record.status,
                    "has_face": 1 if record.face_encodings else 0,
                    "sealed": self._pii.seal(record.to_dict()),
                    "updated_at": now,
                }
            )
            if len(batch) >= _BATCH:
                written += self._upsert(people, batch)
                batch = []
        return written + self._upsert(people, batch)

    def put_enterprises(self, records: Iterable[EnterpriseRecord]) -> int:
        now = time.time()
        rows = [
            {
                "key": self._pii.lookup_key(record.credit_code),
                "address_code": record.registered_address_code,
                "status": record.status,
                "sealed": self._pii.seal(record.to_dict()),
                "updated_at": now,
            }
            for record in records
        ]
        written = 0
        for start in range(0, len(rows), _BATCH):
            written += self._upsert(enterprises, rows[start : start + _BATCH])
        return written

    def _upsert(self, table: Table, rows: Sequence[dict[str, object]]) -> int:
        if not rows:
            return 0
        statement = sqlite_insert(table)
        updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name != "key"}
        with self._engine.begin() as conn:
            conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_=updates), list(rows))
        return len(rows)

    # --- reading ------------------------------------------------------------------------------------------

    def person(self, id_number: str) -> PersonRecord | None:
        """The person with this ID number, or None when this node's register does not hold them."""
        if not isinstance(id_number, str) or not 0 < len(id_number) <= 40:
            return None
        with self._engine.connect() as conn:
            sealed = conn.execute(
                select(people.c.sealed).where(people.c.key == self._pii.lookup_key(id_number))
            ).scalar()
        if sealed:
            return self._open_person(sealed)
        # Not loaded here: a record the city or the county replicated to this node, checked on every read
        # (so a status changed at the author is seen at once).
        return self.documents.find_person(id_number) if self.documents is not None else None

    def _open_person(self, sealed: str) -> PersonRecord | None:
        data = self._pii.open(sealed)
        if data is None:  # sealed under another data key: unreadable here, so not held
            return None
        try:
            return PersonRecord.from_dict(data)
        except DomainError:
            return None

    def enterprise(self, credit_code: str) -> EnterpriseRecord | None:
        if not isinstance(credit_code, str) or not 0 < len(credit_code) <= 40:
            return None
        with self._engine.connect() as conn:
            sealed = conn.execute(
                select(enterprises.c.sealed).where(enterprises.c.key == self._pii.lookup_key(credit_code))
            ).scalar()
        data = self._pii.open(sealed) if sealed else None
        if data is None:
            return None
        try:
            return EnterpriseRecord.from_dict(data)
        except DomainError:
            return None

    def reference_encodings(self, id_number: str) -> Sequence[Sequence[float]]:
        """``ReferenceLookup``: an active person's reference encodings; empty when none are held."""
        record = self.person(id_number)
        if record is None or record.status != "active":
            return ()
        return record.face_encodings

    def counts(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return {
                "people": int(conn.execute(select(func.count()).select_from(people)).scalar() or 0),
                "with_face": int(
                    conn.execute(select(func.count()).select_from(people).where(people.c.has_face == 1)).scalar() or 0
                ),
                "enterprises": int(conn.execute(select(func.count()).select_from(enterprises)).scalar() or 0),
            }

    def __repr__(self) -> str:
        return f"RegisterStore({self.path})"
