"""Only trusted documents leave a node: quarantined events are never pushed up or served down.

An event document is trusted once the read model reflects it (its signature and hash chain were
checked when it was projected). One not yet projected is projected on the spot; one that failed is
held back. Other documents (certificates, heartbeats, the catalogue and its kept versions, the
revocation list) pass: :mod:`sync.authority` decides what of them a link may carry.
"""

from __future__ import annotations

from typing import Any

from node.adapters.readmodel import Projector, ReadModel
from sync.routing import case_of

Doc = dict[str, Any]


class TrustFilter:
    def __init__(self, readmodel: ReadModel, projector: Projector) -> None:
        self.readmodel = readmodel
        self.projector = projector

    def trusted_ids(self, doc_ids: list[str]) -> set[str]:
        by_case: dict[str, list[str]] = {}
        passed: set[str] = set()
        for doc_id in doc_ids:
            case_no = case_of(doc_id)
            if case_no is None:
                passed.add(doc_id)
            else:
                by_case.setdefault(case_no, []).append(doc_id)
        if not by_case:
            return passed
        known = self.readmodel.known_event_ids(list(by_case))
        unprojected = [c for c, ids in by_case.items() if not set(ids) <= known.get(c, set())]
        self.projector.project_cases(unprojected)
        if unprojected:
            known.update(self.readmodel.known_event_ids(unprojected))
        for case_no, ids in by_case.items():
            passed.update(doc_id for doc_id in ids if doc_id in known.get(case_no, set()))
        return passed

    def page(self, rows: list[Doc]) -> tuple[list[Doc], Any, bool]:
        """``(trusted rows, seq of the last row decided, whether every row was decided)``.

        Quarantined documents are dropped for good. A document neither trusted nor quarantined (its
        signer's certificate has not arrived) stops the page just before it, so it is offered again
        on the next run instead of being passed over (the seq is None when the very first row waits).
        """
        trusted = self.trusted_ids([row["id"] for row in rows])
        undecided = [row["id"] for row in rows if row["id"] not in trusted]
        condemned = self.readmodel.quarantined_ids(undecided)
        kept: list[Doc] = []
        decided_seq: Any = None
        for row in rows:
            if row["id"] not in trusted and row["id"] not in condemned:
                return kept, decided_seq, False
            if row["id"] in trusted:
                kept.append(row)
            decided_seq = row["seq"]
        return kept, decided_seq, True


class TrustedStorePeer:
    """A local store as a replication source that yields trusted documents only."""

    def __init__(self, inner: Any, trust: TrustFilter) -> None:
        self.inner = inner
        self.trust = trust
        self.id = inner.id

    def changes(self, since: Any, limit: int) -> tuple[list[Doc], Any]:
        while True:
            rows, last_seq = self.inner.changes(since, limit)
            if not rows:
                return rows, last_seq
            kept, decided_seq, complete = self.trust.page(rows)
            if not complete:
                # A document waits for its signer's certificate: stop before it and offer it next run.
                return kept, since if decided_seq is None else decided_seq
            if kept:
                return kept, last_seq
            since = last_seq  # a page of only condemned documents: read on, as a filtering peer must

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
