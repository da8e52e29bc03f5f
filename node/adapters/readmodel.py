"""The read model: a relational projection of the cases this node holds (inboxes, search, deadlines).

It follows the document store's ``_changes`` feed from a persisted checkpoint and can always be
rebuilt from the store. SQLite by default; any SQLAlchemy URL works (PostgreSQL in production).

Personal data is never in it in plaintext (docs/personal-data.md): the applicant's name and ID
number are sealed with the node's own keyring, and found through blind indexes (keyed hashes of the
exact, normalised full name and of the ID number); every value names the key it was made with, and
:meth:`ReadModel.rekey` moves every row to the current key after a rotation.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, Text, bindparam, delete, func, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from node.adapters.batching import GroupCommit
from node.adapters.docstore import Doc, DocStore
from node.adapters.eventstore import UNDECIDED, EventVerifier, Quarantined
from node.adapters.pii import IDENTIFIER, NAME, PersonalData
from node.adapters.sqlite import create_tables, sqlite_engine
from node.config import IDENTITY_DIR, LOCAL_KEY
from node.domain.case import Case, fold
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError
from node.domain.events import Event, parse_event_doc_id
from node.domain.messages import CaseChanged

READMODEL_DB = "readmodel.sqlite3"  # the read model's file in a node's data directory
DECIDED_STATES = ("approved", "rejected", "delivered")
UNREADABLE = "（无法解密）"  # the name shown for an applicant this node cannot open
REKEY_BATCH = 500  # rows re-sealed per transaction by ReadModel.rekey

metadata = MetaData()

cases = Table(
    "cases",
    metadata,
    Column("case_no", String, primary_key=True),
    Column("matter_code", String, nullable=False, index=True),
    Column("matter_name", String, nullable=False),
    Column("department", String, nullable=False, index=True),
    Column("state", String, nullable=False, index=True),
    Column("accepting_node", String, nullable=False, index=True),
    Column("handling_node", String, nullable=False, index=True),
    # The applicant, sealed with the node's keyring ("<key id>:<token>" of {"name", "id"}); NULL when the
    # event's sealed applicant could not be opened here.
    Column("applicant_sealed", Text, nullable=True),
    # Blind indexes with the node's keyring ("<key id>:<hmac>"): the exact normalised full name, the ID
    # number or credit code. Never the city's look-up key of the events: a stolen read model is worth nothing
    # without this node's own key.
    Column("name_index", String, nullable=True, index=True),
    Column("applicant_key", String, nullable=True, index=True),
    Column("deadline", String, nullable=True, index=True),
    Column("paused", Boolean, nullable=False),
    Column("flag", String, nullable=True),
    Column("handling_type", String, nullable=True),
    Column("accepted_at", String, nullable=False, index=True),
    Column("updated_at", String, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("transferred", Boolean, nullable=False),
    Column("event_ids", Text, nullable=False),  # JSON list: which events the row reflects
    Column("scope", Text, nullable=False),  # JSON list: the nodes that must hold the case
    # JSON list of predecessor hashes its events name but this node does not hold (a gap in the history,
    # re-requested from the parent); NULL when complete. Indexed: few rows have one.
    Column("missing", Text, nullable=True, index=True),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("doc_id", String, primary_key=True),
    Column("case_no", String, nullable=False, index=True),
    Column("node", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detected_at", String, nullable=False),
)

# Cases with events signed by a certificate not received yet; projected again when certificates arrive.
pending_cases = Table("pending_cases", metadata, Column("case_no", String, primary_key=True))

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("name", String, primary_key=True),
    Column("seq", Text, nullable=False),
)

# Built once: composing the statement per call cost more than executing it.
_insert_case = sqlite_insert(cases)
_UPSERT_CASE = _insert_case.on_conflict_do_update(
    index_elements=["case_no"],
    set_={c.name: _insert_case.excluded[c.name] for c in cases.columns if c.name != "case_no"},
)

# Bump when a projected table changes shape: an older read model is dropped and rebuilt from the store.
SCHEMA_VERSION = 4  # 3: the incomplete column; 4: applicant sealed and blind-indexed (before, names in plaintext)
schema = Table("schema", metadata, Column("version", Integer, primary_key=True))

PROJECTED_TABLES = (cases, quarantine, pending_cases, checkpoints)


@dataclass
class CaseRow:
    case_no: str
    matter_code: str
    matter_name: str
    department: str
    state: str
    accepting_node: str
    handling_node: str
    applicant_name: str
    deadline: str | None
    paused: bool
    flag: str | None
    accepted_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CaseFact:
    """What city-wide figures need of one case: where it was accepted and handled, its state and matter."""

    case_no: str
    accepting_node: str
    handling_node: str
    state: str
    flag: str | None
    transferred: bool
    matter_code: str
    matter_name: str
    accepted_at: str
    event_count: int


@dataclass(frozen=True)
class HeldCounts:
    """The cases this node holds by state and by deadline flag, and the documents it quarantined."""

    by_state: dict[str, int]
    by_flag: dict[str, int]
    quarantined: int
    incomplete: int = 0  # cases whose history has a gap (see ``incomplete_cases``)


class ReadModel:
    def __init__(self, path: Path, personal: PersonalData | None = None) -> None:
        """``personal``: the node's own keyring; by default the one of the node whose data directory holds ``path``
        (loaded when first needed: counting rows needs no key)."""
        self.engine = sqlite_engine(path)
        self._path = path
        self._personal = personal
        migrated: list[bool] = []
        create_tables(metadata, self.engine, path, lambda conn: migrated.append(self._migrate(conn)))
        if any(migrated):
            # What the older shape held may still sit in the write-ahead log's frames: empty it.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        # One SQLite transaction for the rows of concurrent requests: threads waiting in SQLite's
        # busy handler back off in sleeps of up to 100 ms, which made the slowest requests slow.
        self._upserts: GroupCommit[dict[str, Any], None] = GroupCommit(self._upsert_many)

    @staticmethod
    def _migrate(conn: Any) -> bool:
        """A read model of an older shape is thrown away; the checkpoint goes with it, so it is rebuilt."""
        version = conn.execute(select(func.max(schema.c.version))).scalar()
        if version != SCHEMA_VERSION:
            for table in (*PROJECTED_TABLES, schema):
                table.drop(conn, checkfirst=True)
            metadata.create_all(conn)
            conn.execute(schema.insert().values(version=SCHEMA_VERSION))
            # secure_delete (node.adapters.sqlite) zeroed what the older shape held (plaintext names before 3).
            return True
        return False

    @property
    def personal(self) -> PersonalData:
        """The node's own keyring (pii.MissingKey if the node has none: provisioning makes it)."""
        if self._personal is None:
            self._personal = PersonalData.load(self._path.parent / IDENTITY_DIR / LOCAL_KEY)
        return self._personal

    def _personal_columns(self, applicant: Mapping[str, Any] | None) -> dict[str, str | None]:
        """The sealed applicant and its blind indexes under the node's current key (NULLs if not opened)."""
        if not applicant:
            return {"applicant_sealed": None, "name_index": None, "applicant_key": None}
        name = str(applicant.get("name") or "")
        identifier = str(applicant.get("id_number") or applicant.get("credit_code") or applicant.get("id") or "")
        return {
            "applicant_sealed": self.personal.seal({"name": name, "id": identifier}),
            "name_index": self.personal.index(NAME, name) if name else None,
            "applicant_key": self.personal.index(IDENTIFIER, identifier) if identifier else None,
        }

    def upsert_case(
        self,
        case: Case,
        event_ids: list[str],
        catalogue: Catalogue,
        applicant: Mapping[str, Any] | None,
        scope: frozenset[str],
    ) -> None:
        """Project one case; ``applicant`` is its opened sealed applicant, stored sealed with the node's key."""
        matter = catalogue.get(case.matter_code) if case.matter_code in catalogue else None
        values = {
            "case_no": case.case_no,
            "matter_code": case.matter_code,
            "matter_name": matter.name if matter else case.matter_code,
            "department": matter.department if matter else "",
            "state": case.state.value,
            "accepting_node": case.accepting_node,
            "handling_node": case.handling_node,
            **self._personal_columns(applicant),
            "deadline": case.deadline.isoformat() if case.deadline else None,
            "paused": case.paused,
            "flag": (case.flags or {}).get("level"),
            "handling_type": case.handling_type,
            "accepted_at": case.accepted_at,
            "updated_at": case.updated_at,
            "event_count": len(case.timeline),
            "transferred": len(case.handlers_history) > 1,
            "event_ids": json.dumps(sorted(event_ids)),
            "scope": json.dumps(sorted(scope)),
            "missing": json.dumps(case.missing_predecessors) if case.missing_predecessors else None,
        }
        self._upserts.write([values])

    def _upsert_many(self, rows: list[dict[str, Any]]) -> list[None]:
        with self.engine.begin() as conn:
            conn.execute(_UPSERT_CASE, rows)
        return [None] * len(rows)

    def record_quarantine(self, items: list[Quarantined]) -> None:
        if not items:
            return
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self.engine.begin() as conn:
            for item in items:
                statement = sqlite_insert(quarantine).values(
                    doc_id=item.doc_id, case_no=item.case_no, node=item.node, reason=item.reason, detected_at=now
                )
                conn.execute(statement.on_conflict_do_nothing(index_elements=["doc_id"]))

    def set_pending(self, case_no: str, pending: bool, trusted: list[str] | None = None) -> None:
        """Mark the case as waiting (or not); ``trusted`` events lose a quarantine row that only said
        they had waited too long (what they waited for has arrived since)."""
        with self.engine.begin() as conn:
            if pending:
                conn.execute(sqlite_insert(pending_cases).values(case_no=case_no).on_conflict_do_nothing())
            else:
                conn.execute(delete(pending_cases).where(pending_cases.c.case_no == case_no))
            if trusted:
                conn.execute(
                    delete(quarantine).where(
                        quarantine.c.case_no == case_no,
                        quarantine.c.reason.startswith(UNDECIDED, autoescape=True),
                        quarantine.c.doc_id.in_(trusted),
                    )
                )

    def waited_out(self, doc_ids: list[str]) -> set[str]:
        """Those of ``doc_ids`` quarantined only for having waited too long (they may be trusted later)."""
        if not doc_ids:
            return set()
        with self.engine.connect() as conn:
            statement = select(quarantine.c.doc_id).where(
                quarantine.c.doc_id.in_(doc_ids), quarantine.c.reason.startswith(UNDECIDED, autoescape=True)
            )
            return set(conn.execute(statement).scalars())

    def cases_with_events_of(self, nodes: list[str]) -> list[str]:
        """Cases holding events written by any of ``nodes`` (a revocation makes them worth a second look)."""
        if not nodes:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(cases.c.case_no).where(
                    or_(*(cases.c.event_ids.contains(f'-{node}"', autoescape=True) for node in nodes))
                )
            )
            return list(rows.scalars())

    def pending(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(pending_cases.c.case_no)).scalars())

    def scopes(self, case_numbers: list[str]) -> dict[str, frozenset[str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(cases.c.case_no, cases.c.scope).where(cases.c.case_no.in_(case_numbers)))
            return {row.case_no: frozenset(json.loads(row.scope)) for row in rows}

    def known_event_ids(self, case_numbers: list[str]) -> dict[str, set[str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(cases.c.case_no, cases.c.event_ids).where(cases.c.case_no.in_(case_numbers)))
            return {row.case_no: set(json.loads(row.event_ids)) for row in rows}

    def quarantined_ids(self, doc_ids: list[str]) -> set[str]:
        if not doc_ids:
            return set()
        with self.engine.connect() as conn:
            return set(conn.execute(select(quarantine.c.doc_id).where(quarantine.c.doc_id.in_(doc_ids))).scalars())

    def quarantined(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(quarantine).order_by(quarantine.c.detected_at.desc())).all()
        return [dict(row._mapping) for row in rows]

    def incomplete_cases(self, case_numbers: list[str] | None = None, limit: int = 1_000) -> dict[str, list[str]]:
        """Cases with a gap in their history → the predecessor hashes missing (all, or of ``case_numbers``)."""
        query = select(cases.c.case_no, cases.c.missing).where(cases.c.missing.is_not(None))
        if case_numbers is not None:
            query = query.where(cases.c.case_no.in_(case_numbers))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(cases.c.case_no).limit(limit)).all()
        return {row.case_no: list(json.loads(row.missing)) for row in rows}

    def checkpoint(self, name: str) -> Any:
        with self.engine.connect() as conn:
            value = conn.execute(select(checkpoints.c.seq).where(checkpoints.c.name == name)).scalar_one_or_none()
        return json.loads(value) if value is not None else 0

    def save_checkpoint(self, name: str, seq: Any) -> None:
        statement = sqlite_insert(checkpoints).values(name=name, seq=json.dumps(seq))
        with self.engine.begin() as conn:
            conn.execute(statement.on_conflict_do_update(index_elements=["name"], set_={"seq": json.dumps(seq)}))

    def clear(self) -> None:
        with self.engine.begin() as conn:
            for table in PROJECTED_TABLES:
                conn.execute(delete(table))

    def _applicant(self, sealed: str | None) -> dict[str, Any] | None:
        return self.personal.open(sealed) if sealed else None

    def _rows(self, statement: Any, named: bool = True) -> list[CaseRow]:
        """Rows as CaseRow; ``named=False`` leaves the applicant sealed (name "") for callers that never show it."""
        with self.engine.connect() as conn:
            rows = conn.execute(statement).all()
        shown = [k for k in CaseRow.__dataclass_fields__ if k != "applicant_name"]
        result = []
        for row in rows:
            applicant = self._applicant(row._mapping["applicant_sealed"]) if named else {"name": ""}
            name = str(applicant.get("name") or "") if applicant else UNREADABLE
            result.append(CaseRow(**{k: row._mapping[k] for k in shown}, applicant_name=name))
        return result

    def inbox(self, node: str, role: str, department: str | None, limit: int = 200) -> list[CaseRow]:
        """Open cases waiting for this role at this node, most urgent deadline first."""
        open_states = ["accepted", "in_review", "supplement_requested"]
        query = select(cases)
        if role == "approver":
            query = query.where(
                cases.c.handling_node == node, cases.c.department == (department or ""), cases.c.state.in_(open_states)
            )
        elif role == "acceptor":
            # The village window: its cases waiting for a supplement or for delivery of a decision.
            query = query.where(
                cases.c.accepting_node == node,
                cases.c.state.in_(["supplement_requested", "approved", "rejected"]),
            )
        else:
            query = query.where(
                or_(cases.c.handling_node == node, cases.c.accepting_node == node), cases.c.state.in_(open_states)
            )
        query = query.order_by(cases.c.deadline.is_(None), cases.c.deadline, cases.c.accepted_at).limit(limit)
        return self._rows(query)

    def search(
        self,
        text: str = "",
        state: str | None = None,
        applicant_key: str | None = None,
        limit: int = 100,
        id_number: str | None = None,
    ) -> list[CaseRow]:
        """Cases whose number or matter contains ``text``, or whose applicant's full name or ID number is ``text``.

        Names are matched exactly (after normalisation) through the blind index: a substring of a name
        cannot be searched without the name in plaintext (docs/personal-data.md). ``applicant_key`` is a
        stored blind index; ``id_number`` an ID number or credit code to look up.
        """
        query = select(cases)
        if text:
            # autoescape: the text is matched literally, % and _ typed by a person are not wildcards.
            matches = [
                cases.c.case_no.contains(text, autoescape=True),
                cases.c.matter_name.contains(text, autoescape=True),
            ]
            if text.strip():
                matches.append(cases.c.name_index.in_(self.personal.indexes(NAME, text)))
                matches.append(cases.c.applicant_key.in_(self.personal.indexes(IDENTIFIER, text)))
            query = query.where(or_(*matches))
        if state:
            query = query.where(cases.c.state == state)
        if applicant_key:
            query = query.where(cases.c.applicant_key == applicant_key)
        if id_number is not None:
            query = query.where(cases.c.applicant_key.in_(self.personal.indexes(IDENTIFIER, id_number)))
        return self._rows(query.order_by(cases.c.accepted_at.desc()).limit(limit))

    def open_cases_held_by(self, node: str) -> list[CaseRow]:
        query = select(cases).where(
            cases.c.handling_node == node,
            cases.c.state.in_(["accepted", "in_review"]),
            cases.c.deadline.is_not(None),
        )
        return self._rows(query, named=False)  # the deadline sweep needs numbers, not names

    def snapshot(self) -> list[dict[str, Any]]:
        """Every projected row, for comparing an incremental model with a rebuilt one."""
        with self.engine.connect() as conn:
            case_rows = [dict(r._mapping) for r in conn.execute(select(cases).order_by(cases.c.case_no))]
        for row in case_rows:
            # Sealed values differ at every write (random IV): compare what they hold.
            row["applicant_sealed"] = self._applicant(row["applicant_sealed"])
        with self.engine.connect() as conn:
            q_rows = [
                {k: v for k, v in r._mapping.items() if k != "detected_at"}
                for r in conn.execute(select(quarantine).order_by(quarantine.c.doc_id))
            ]
        return case_rows + q_rows

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(cases)).scalar_one())

    def rekey(self, batch: int = REKEY_BATCH) -> tuple[int, int]:
        """After a rotation of the node's keyring: re-seal and re-index every row under the current key.

        Returns (rows moved to the current key, rows left because no key opens them). Rows a running
        process writes meanwhile already use the current key (it reloads the keyring on change); a row it
        wrote just before still opens and is found with the old key (search uses every key's index).
        """
        current = self.personal.key_id
        moved = unreadable = 0
        after = ""
        while True:
            query = (
                select(cases.c.case_no, cases.c.applicant_sealed, cases.c.name_index, cases.c.applicant_key)
                .where(cases.c.case_no > after, cases.c.applicant_sealed.is_not(None))
                .order_by(cases.c.case_no)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return moved, unreadable
            after = rows[-1].case_no
            updates = []
            for row in rows:
                values = (row.applicant_sealed, row.name_index, row.applicant_key)
                if all(value is None or self.personal.sealed_with(value) == current for value in values):
                    continue
                applicant = self._applicant(row.applicant_sealed)
                if applicant is None:
                    unreadable += 1
                    continue
                updates.append({"no": row.case_no, **self._personal_columns(applicant)})
            if updates:
                statement = (
                    cases.update()
                    .where(cases.c.case_no == bindparam("no"))
                    .values(
                        applicant_sealed=bindparam("applicant_sealed"),
                        name_index=bindparam("name_index"),
                        applicant_key=bindparam("applicant_key"),
                    )
                )
                with self.engine.begin() as conn:
                    conn.execute(statement, updates)
                moved += len(updates)

    def held_counts(self) -> HeldCounts:
        with self.engine.connect() as conn:
            by_state = conn.execute(select(cases.c.state, func.count()).group_by(cases.c.state)).all()
            by_flag = conn.execute(
                select(cases.c.flag, func.count()).where(cases.c.flag.is_not(None)).group_by(cases.c.flag)
            ).all()
            quarantined = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
            incomplete = conn.execute(select(func.count()).where(cases.c.missing.is_not(None))).scalar_one()
        return HeldCounts(
            {state: int(n) for state, n in by_state},
            {flag: int(n) for flag, n in by_flag},
            int(quarantined),
            int(incomplete),
        )

    def decided_event_counts(self) -> dict[str, int]:
        """Decided cases (approved, rejected, delivered): case number → how many events the row reflects."""
        query = select(cases.c.case_no, cases.c.event_count).where(cases.c.state.in_(DECIDED_STATES))
        with self.engine.connect() as conn:
            return {case_no: int(count) for case_no, count in conn.execute(query)}

    def case_facts(self) -> list[CaseFact]:
        """Every case held, reduced to what figures count (one pass over the table, plain tuples)."""
        columns = [getattr(cases.c, name) for name in CaseFact.__dataclass_fields__]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*columns)).all()
        return [
            CaseFact(no, accepting, handling, state, flag, bool(moved), code, name, accepted, int(count))
            for no, accepting, handling, state, flag, moved, code, name, accepted, count in rows
        ]


# The applicant's opened fields ({"name", "id_number" | "credit_code"}), None when they cannot be opened.
ApplicantFields = Callable[[Case], dict[str, Any] | None]


class Projector:
    """Brings the read model up to date with the store, case by case; says :class:`CaseChanged` for each."""

    CHECKPOINT = "changes"

    def __init__(
        self,
        store: DocStore,
        readmodel: ReadModel,
        verifier: EventVerifier,
        catalogue: Callable[[], Catalogue],
        applicant: ApplicantFields,
        scope_of: Callable[[Case], frozenset[str]],
        publish: Callable[[CaseChanged], None] | None = None,
        own_node: str | None = None,
    ) -> None:
        self.scope_of = scope_of
        self.own_node = own_node
        self.store = store
        self.readmodel = readmodel
        self.verifier = verifier
        self.catalogue = catalogue
        self.applicant = applicant
        self.publish = publish
        self._lock = threading.Lock()

    def project_events(self, events: list[Event], from_write: bool = False) -> Case | None:
        """Project a case from events already verified (or just signed here, ``from_write``): no store read."""
        try:
            case = fold(events)
        except DomainError:
            return None  # the first event has not arrived yet; a later change brings it
        self.readmodel.upsert_case(
            case, [e.doc_id for e in events], self.catalogue(), self.applicant(case), self.scope_of(case)
        )
        if self.publish is not None:
            self.publish(CaseChanged(case, tuple(events), from_write))
        return case

    def project_case(self, case_no: str, docs: list[Doc] | None = None) -> Case | None:
        if docs is None:
            docs = self.verifier.events.case_docs(case_no)
        verified = self.verifier.verify_docs(case_no, docs)
        self.readmodel.record_quarantine(verified.quarantined)
        trusted = [e.doc_id for e in verified.events]
        self.readmodel.set_pending(case_no, bool(verified.pending or verified.retry), trusted)
        return self.project_events(verified.events) if verified.events else None

    def project_cases(self, case_numbers: list[str]) -> None:
        """Project several cases; their documents are read a few at a time in parallel.

        One range read per case is the cost of projecting replicated documents; the store serves
        several at once, which matters when a reconnecting village brings a thousand cases.
        """
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="case-docs") as pool:
            for case_no, docs in zip(case_numbers, pool.map(self.verifier.events.case_docs, case_numbers), strict=True):
                self.project_case(case_no, docs)

    def catch_up(self, batch: int = 500) -> int:
        """Project every change since the checkpoint; returns how many cases were refreshed.

        A case whose changed documents the read model already reflects (the web process projected
        them when it wrote them) is skipped, so local writes are not projected twice.
        """
        with self._lock:
            refreshed = 0
            since = self.readmodel.checkpoint(self.CHECKPOINT)
            while True:
                feed = self.store.changes(since=since, limit=batch)
                results = feed.get("results", [])
                if not results:
                    break
                changed: dict[str, set[str]] = {}
                for row in results:
                    try:
                        case_no, _ = parse_event_doc_id(row["id"])
                    except DomainError:
                        continue
                    changed.setdefault(case_no, set()).add(row["id"])
                stale = self._stale(changed)
                if any(row["id"].startswith(("cert:", "catalogue")) for row in results):
                    # What waiting events waited for (a certificate, a catalogue version) may have come.
                    stale.extend(c for c in self.readmodel.pending() if c not in stale)
                if any(row["id"] == "crl" for row in results):
                    # A new revocation list: events already trusted may have been signed after a revocation.
                    revoked = self.verifier.revoked_nodes()
                    stale.extend(c for c in self.readmodel.cases_with_events_of(revoked) if c not in stale)
                self.project_cases(stale)
                refreshed += len(stale)
                since = feed["last_seq"]
                self.readmodel.save_checkpoint(self.CHECKPOINT, since)
            return refreshed

    # How long the web process gets to project what it has just written before the agent does it.
    OWN_WRITE_GRACE_S = 0.05

    def _stale(self, changed: dict[str, set[str]]) -> list[str]:
        """Cases whose changed events the read model does not reflect yet.

        The web process writes events, then projects them: a change seen in between is this node's
        own write about to be projected. Projecting it here too would read the case back from the
        store for nothing, and under load that was a fifth of the machine; so cases whose only
        unreflected events were written here get a moment's grace and a second look.
        """
        known = self.readmodel.known_event_ids(list(changed))
        stale: list[str] = []
        own: list[str] = []
        for case_no, ids in changed.items():
            unreflected = ids - known.get(case_no, set())
            if unreflected:
                (own if self._written_here(unreflected) else stale).append(case_no)
        if own:
            time.sleep(self.OWN_WRITE_GRACE_S)
            known = self.readmodel.known_event_ids(own)
            stale.extend(case_no for case_no in own if not changed[case_no] <= known.get(case_no, set()))
        return stale

    def _written_here(self, doc_ids: set[str]) -> bool:
        return self.own_node is not None and all(
            parse_event_doc_id(doc_id)[1].endswith(f"-{self.own_node}") for doc_id in doc_ids
        )

    def rebuild(self) -> int:
        with self._lock:
            self.readmodel.clear()
        return self.catch_up()
