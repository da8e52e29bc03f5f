"""The shared materials library (申办材料共享库) held at one node, and the log of every use of a person's data.

This adapter owns one SQLite file with four tables:

- ``materials``: each library record once (:class:`node.domain.materials.LibraryMaterial`: owner key,
  material code, grade, SHA-256, issuer, validity); the owner is the PersonalData look-up key of their ID
  number or credit code, never the number itself;
- ``files``: the file of a record, encrypted with the city's data key (an attachment, apart from the rows
  a look-up reads);
- ``verifications``: the face verifications decided at this node (distance, threshold, model, channel),
  under a random ticket the acceptance names so a verification result can never be typed in by a client;
  never the photo;
- ``uses``: every use of a person's data here — a verification, a look-up of their register record, a
  reuse of a library material — with who, where, for which case; the owner reads it back by their key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, and_, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.adapters.pii import PersonalData
from node.adapters.sqlite import create_tables, sqlite_engine
from node.domain.errors import DomainError
from node.domain.identity import Verification
from node.domain.materials import LibraryMaterial, MaterialGrade

__all__ = ["LIBRARY_DB", "MAX_MATERIAL_BYTES", "MaterialsLibrary", "StoredVerification", "UseLog"]

LIBRARY_DB = "library.sqlite3"
MAX_MATERIAL_BYTES = 5 * 1024 * 1024
MAX_USES_SHOWN = 500

metadata = MetaData()

materials = Table(
    "materials",
    metadata,
    Column("material_id", String, primary_key=True),
    Column("owner_key", String, nullable=False, index=True),
    Column("material_code", String, nullable=False),
    Column("grade", String, nullable=False),
    Column("sha256", String, nullable=False),
    Column("issuer", String, nullable=False),
    Column("issued_on", String, nullable=False),
    Column("valid_until", String, nullable=True),
    Column("status", String, nullable=False),
    Column("media_type", String, nullable=False),
    Column("created_at", Float, nullable=False),
)

files = Table(
    "files",
    metadata,
    Column("material_id", String, primary_key=True),
    Column("sealed", String, nullable=False),
)

verifications = Table(
    "verifications",
    metadata,
    Column("ticket", String, primary_key=True),
    Column("owner_key", String, nullable=False),
    Column("match", Integer, nullable=False),
    Column("distance", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("model", String, nullable=False),
    Column("channel", String, nullable=False),
    Column("liveness", Integer, nullable=True),  # the head-turn check: 1 passed, 0 failed, null not made
    Column("actor", String, nullable=False),
    Column("at", Float, nullable=False),
    Column("used_by_case", String, nullable=True),
)

uses = Table(
    "uses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner_key", String, nullable=False, index=True),
    Column("kind", String, nullable=False),  # verification | register | material
    Column("material_id", String, nullable=True),
    Column("material_code", String, nullable=True),
    Column("case_no", String, nullable=True),
    Column("node", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("role", String, nullable=False),
    Column("outcome", String, nullable=True),
    Column("at", Float, nullable=False),
)


def _record(row: Any) -> LibraryMaterial:
    return LibraryMaterial(
        material_id=row.material_id,
        owner_key=row.owner_key,
        material_code=row.material_code,
        grade=MaterialGrade(row.grade),
        sha256=row.sha256,
        issuer=row.issuer,
        issued_on=row.issued_on,
        valid_until=row.valid_until,
        status=row.status,
    )


class MaterialsLibrary:
    """Library records of this node, and their encrypted files."""

    def __init__(self, path: Path, personal_data: PersonalData) -> None:
        self.path = path
        self._pii = personal_data
        self._engine = sqlite_engine(path)
        create_tables(metadata, self._engine, path)

    @staticmethod
    def new_id(node: str) -> str:
        return f"lib:{node}:{uuid.uuid4().hex}"

    def add(
        self,
        *,
        material_id: str,
        owner_key: str,
        material_code: str,
        grade: MaterialGrade | str,
        issuer: str,
        issued_on: date | str,
        valid_until: date | str | None,
        content: bytes,
        media_type: str = "application/octet-stream",
    ) -> LibraryMaterial:
        """Store a material once: the record (validated by the domain) and its file, sealed, in one transaction."""
        return self.add_many(
            [
                {
                    "material_id": material_id,
                    "owner_key": owner_key,
                    "material_code": material_code,
                    "grade": grade,
                    "issuer": issuer,
                    "issued_on": issued_on,
                    "valid_until": valid_until,
                    "content": content,
                    "media_type": media_type,
                }
            ]
        )[0]

    def add_many(self, items: Iterable[dict[str, Any]], *, if_absent: bool = False) -> list[LibraryMaterial]:
        """Several materials (the keyword arguments of :meth:`add` each), all or none, in one transaction.

        ``if_absent``: a material id already stored is left as it is (idempotent seeding: several processes
        of a node may seed the same demo documents at once).
        """
        records: list[LibraryMaterial] = []
        rows: list[dict[str, Any]] = []
        sealed_files: list[dict[str, str]] = []
        now = time.time()
        for item in items:
            content = item["content"]
            if not isinstance(content, bytes) or not content:
                raise DomainError("material_file_missing", "请上传材料文件", "the material's file is missing")
            if len(content) > MAX_MATERIAL_BYTES:
                raise DomainError(
                    "material_file_too_large",
                    f"材料文件不能超过 {MAX_MATERIAL_BYTES // 1048576} MB",
                    f"a material file must not exceed {MAX_MATERIAL_BYTES // 1048576} MB",
                )
            media_type = item.get("media_type") or "application/octet-stream"
            if not isinstance(media_type, str) or not 0 < len(media_type) <= 100 or not media_type.isprintable():
                media_type = "application/octet-stream"
            record = LibraryMaterial(
                material_id=item["material_id"],
                owner_key=item["owner_key"],
                material_code=item["material_code"],
                grade=item["grade"],
                sha256=hashlib.sha256(content).hexdigest(),
                issuer=item["issuer"],
                issued_on=item["issued_on"],
                valid_until=item.get("valid_until"),
            )
            records.append(record)
            rows.append({**record.to_dict(), "media_type": media_type, "created_at": now})
            sealed = self._pii.seal({"content": base64.b64encode(content).decode("ascii")})
            sealed_files.append({"material_id": record.material_id, "sealed": sealed})
        if rows:
            with self._engine.begin() as conn:
                if if_absent:
                    conn.execute(sqlite_insert(materials).on_conflict_do_nothing(), rows)
                    conn.execute(sqlite_insert(files).on_conflict_do_nothing(), sealed_files)
                else:
                    conn.execute(insert(materials), rows)
                    conn.execute(insert(files), sealed_files)
        return records

    def get(self, material_id: str) -> LibraryMaterial | None:
        if not isinstance(material_id, str) or not 0 < len(material_id) <= 80:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(materials).where(materials.c.material_id == material_id)).first()
        return _record(row) if row else None

    def of_owner(self, owner_key: str) -> list[LibraryMaterial]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(materials).where(materials.c.owner_key == owner_key).order_by(materials.c.created_at)
            ).all()
        return [_record(row) for row in rows]

    def content(self, material_id: str) -> bytes | None:
        """The decrypted file, checked against the record's SHA-256 (a mismatch reads as absent)."""
        record = self.get(material_id)
        with self._engine.connect() as conn:
            sealed = conn.execute(select(files.c.sealed).where(files.c.material_id == material_id)).scalar()
        opened = self._pii.open(sealed) if record and sealed else None
        if not opened or not isinstance(opened.get("content"), str):
            return None
        data = base64.b64decode(opened["content"])
        return data if record and hashlib.sha256(data).hexdigest() == record.sha256 else None

    def count(self) -> int:
        with self._engine.connect() as conn:
            return len(conn.execute(select(materials.c.material_id)).all())


@dataclass(frozen=True)
class StoredVerification:
    ticket: str
    owner_key: str
    verification: Verification
    channel: str
    liveness: bool | None
    actor: str
    at: float
    used_by_case: str | None


class UseLog:
    """Face verifications under their tickets, and every use of a person's data at this node."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._engine = sqlite_engine(path)
        create_tables(metadata, self._engine, path)

    # --- verifications ----------------------------------------------------------------------------------

    def store_verification(self, owner_key: str, verification: Verification, channel: str, actor: str) -> str:
        ticket = secrets.token_urlsafe(24)
        with self._engine.begin() as conn:
            conn.execute(
                insert(verifications).values(
                    ticket=ticket,
                    owner_key=owner_key,
                    match=1 if verification.match else 0,
                    distance=verification.distance,
                    threshold=verification.threshold,
                    model=verification.model,
                    channel=channel,
                    liveness=None if verification.liveness is None else int(verification.liveness.passed),
                    actor=actor,
                    at=time.time(),
                    used_by_case=None,
                )
            )
        return ticket

    def verification(self, ticket: str) -> StoredVerification | None:
        if not isinstance(ticket, str) or not 0 < len(ticket) <= 64:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(verifications).where(verifications.c.ticket == ticket)).first()
        if row is None:
            return None
        return StoredVerification(
            ticket=row.ticket,
            owner_key=row.owner_key,
            verification=Verification(bool(row.match), row.distance, row.threshold, row.model),
            channel=row.channel,
            liveness=None if row.liveness is None else bool(row.liveness),
            actor=row.actor,
            at=row.at,
            used_by_case=row.used_by_case,
        )

    def use_verification(self, ticket: str, claim: str) -> bool:
        """Claim an unused ticket for one acceptance; False when another acceptance already has it (single use)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(verifications)
                .where(and_(verifications.c.ticket == ticket, verifications.c.used_by_case.is_(None)))
                .values(used_by_case=claim)
            )
        return result.rowcount == 1

    def release_verification(self, ticket: str, claim: str) -> None:
        """Give a claimed ticket back (the acceptance wrote nothing)."""
        self._set_claimed(ticket, claim, None)

    def confirm_verification(
        self, ticket: str, claim: str, case_no: str, uses_logged: Iterable[dict[str, Any]] = ()
    ) -> None:
        """The claimed ticket now belongs to the case written with it; the case's data uses, in the same transaction."""
        self._set_claimed(ticket, claim, case_no, uses_logged)

    def _set_claimed(
        self, ticket: str, claim: str, value: str | None, uses_logged: Iterable[dict[str, Any]] = ()
    ) -> None:
        now = time.time()
        rows = [{**entry, "at": now} for entry in uses_logged]
        with self._engine.begin() as conn:
            conn.execute(
                update(verifications)
                .where(and_(verifications.c.ticket == ticket, verifications.c.used_by_case == claim))
                .values(used_by_case=value)
            )
            if rows:
                conn.execute(insert(uses), rows)

    # --- uses -------------------------------------------------------------------------------------------

    def log(
        self,
        owner_key: str,
        kind: str,
        *,
        node: str,
        actor: str,
        role: str,
        case_no: str | None = None,
        material_id: str | None = None,
        material_code: str | None = None,
        outcome: str | None = None,
    ) -> None:
        self.log_many(
            [
                {
                    "owner_key": owner_key,
                    "kind": kind,
                    "node": node,
                    "actor": actor,
                    "role": role,
                    "case_no": case_no,
                    "material_id": material_id,
                    "material_code": material_code,
                    "outcome": outcome,
                }
            ]
        )

    def log_many(self, entries: Iterable[dict[str, Any]]) -> None:
        now = time.time()
        rows = [{**entry, "at": now} for entry in entries]
        if rows:
            with self._engine.begin() as conn:
                conn.execute(insert(uses), rows)

    def uses_of(self, owner_key: str, limit: int = MAX_USES_SHOWN) -> list[dict[str, Any]]:
        """The owner's data uses here, newest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(uses).where(uses.c.owner_key == owner_key).order_by(uses.c.id.desc()).limit(limit)
            ).all()
        return [
            {
                "kind": row.kind,
                "material_id": row.material_id,
                "material_code": row.material_code,
                "case_no": row.case_no,
                "node": row.node,
                "actor": row.actor,
                "role": row.role,
                "outcome": row.outcome,
                "at": row.at,
            }
            for row in rows
        ]
