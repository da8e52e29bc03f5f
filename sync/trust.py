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


# The local document (never replicated) listing events passed over after waiting too long, to offer
# again once they are trusted; bounded, oldest dropped first.
REOFFER_DOC = "trust-reoffer"
MAX_REOFFER = 1_000


class TrustedStorePeer:
    """A local store as a replication source that yields trusted documents only.

    An event quarantined only for waiting too long (:data:`~node.adapters.eventstore.UNDECIDED`) is
    passed over, so the link goes on; it is remembered, and offered again on a later run once what it
    waited for has arrived and it is trusted (the feed's checkpoint is already past it).
    """

    def __init__(self, inner: Any, trust: TrustFilter) -> None:
        self.inner = inner
        self.trust = trust
        self.id = inner.id
        self._reoffer: list[str] | None = None  # read from the store once, then written through

    def changes(self, since: Any, limit: int) -> tuple[list[Doc], Any]:
        offered = self._trusted_again(since)
        while True:
            rows, last_seq = self.inner.changes(since, limit)
            if not rows:
                return offered + rows, last_seq
            kept, decided_seq, complete = self.trust.page(rows)
            kept_ids = {row["id"] for row in kept}
            # Only rows condemned for waiting too long are found; rows still waiting have no quarantine row.
            self._remember(self.trust.readmodel.waited_out([row["id"] for row in rows if row["id"] not in kept_ids]))
            if not complete:
                # A document waits for its signer's certificate: stop before it and offer it next run.
                return offered + kept, since if decided_seq is None else decided_seq
            if kept or offered:
                return offered + kept, last_seq
            since = last_seq  # a page of only condemned documents: read on, as a filtering peer must

    def _waiting(self) -> list[str]:
        if self._reoffer is None:
            held = self.inner.store.get_local(REOFFER_DOC) or {}
            ids = held.get("ids")
            self._reoffer = [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
        return self._reoffer

    def _save(self, ids: list[str]) -> None:
        self.inner.store.put_local(REOFFER_DOC, {"ids": ids})
        self._reoffer = ids

    def _remember(self, doc_ids: set[str]) -> None:
        waiting = self._waiting()
        new = sorted(doc_ids - set(waiting))
        if new:
            self._save([*waiting, *new][-MAX_REOFFER:])

    def _trusted_again(self, since: Any) -> list[Doc]:
        """Rows for remembered events that are trusted now (they leave the list)."""
        waiting = self._waiting()
        if not waiting:
            return []
        trusted = self.trust.trusted_ids(waiting)
        if not trusted:
            return []
        self._save([i for i in waiting if i not in trusted])
        revs = self.inner.store.current_revs(sorted(trusted))
        return [{"id": doc_id, "changes": [{"rev": rev}], "seq": since} for doc_id, rev in revs.items()]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
