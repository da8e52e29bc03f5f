"""The parent's side of a link: what it serves to a child and what it accepts from one.

A child pulls through :meth:`LinkServer.changes` / :meth:`LinkServer.bulk_get`, which only ever
yield documents whose scope touches the child's subtree, and pushes through
:meth:`LinkServer.accept_push`, which only takes documents the child's subtree may author
(:mod:`sync.authority`: its own events, certificates and heartbeats, never a new revision or deletion). The parent's
document store stays on loopback: the child reaches it only through this filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node.adapters.docstore import DocStore
from node.domain.errors import DomainError
from node.domain.events import Event, event_id_range
from sync.authority import LinkPolicy, Refusal
from sync.registers import is_register, register_visible
from sync.routing import case_of, case_scope, goes_everywhere, touches_subtree, widens_scope
from sync.trust import TrustFilter
from tiers import DivisionTree

Doc = dict[str, Any]
# How far a filtering read may scan the parent's feed for one page before answering (keeps requests short).
MAX_SCAN = 5_000


class LinkServer:
    def __init__(
        self,
        store: DocStore,
        tree: DivisionTree,
        node: str,
        trust: TrustFilter | None = None,
        *,
        policy: LinkPolicy,
        on_refused: Callable[[list[Refusal]], None] | None = None,
    ) -> None:
        self.store = store
        self.tree = tree
        self.node = node
        self.trust = trust
        self.policy = policy
        self.on_refused = on_refused

    def is_child(self, code: str) -> bool:
        return code in self.tree and self.tree.parent(code) == self.node

    def _case_docs(self, case_no: str) -> list[Doc]:
        start, end = event_id_range(case_no)
        return self.store.all_docs(start, end)

    def _visible(self, doc_id: str, child: str, scopes: dict[str, frozenset[str]]) -> bool:
        """Whether ``child``'s subtree may hold ``doc_id``; ``scopes`` caches case scopes across calls."""
        if goes_everywhere(doc_id):
            return True
        if is_register(doc_id):  # issue 12: a register record goes to its residence's subtree only
            return register_visible(doc_id, child, self.tree)
        case_no = case_of(doc_id)
        if case_no is None:
            return False  # heartbeats and the rest travel up only
        if case_no not in scopes:
            scopes[case_no] = case_scope(self._case_docs(case_no), self.tree)
        return touches_subtree(scopes[case_no], child, self.tree)

    def visible_to(self, doc_ids: list[str], children: tuple[str, ...]) -> list[str]:
        """The children whose subtree may hold any of ``doc_ids``."""
        scopes: dict[str, frozenset[str]] = {}
        return [child for child in children if any(self._visible(doc_id, child, scopes) for doc_id in doc_ids)]

    def changes(self, child: str, since: Any, limit: int) -> tuple[list[Doc], Any]:
        """Changes the child may have, after ``since``; empty only when the feed is exhausted."""
        scanned = 0
        while True:
            feed = self.store.changes(since=since, limit=limit, include_docs=True)
            results = feed.get("results", [])
            if not results:
                return [], feed.get("last_seq", since)
            scopes: dict[str, frozenset[str]] = {}
            rows: list[Doc] = []
            listed: set[str] = set()
            for row in results:
                doc = row.get("doc") or {}
                if not self._visible(row["id"], child, scopes):
                    continue
                if row["id"] not in listed:
                    rows.append({"id": row["id"], "changes": row["changes"], "seq": row["seq"]})
                    listed.add(row["id"])
                if widens_scope(doc):
                    # The case reached a new branch: send its whole history there, not just this change.
                    for old in self._case_docs(str(case_of(row["id"]))):
                        if old["_id"] not in listed:
                            rows.append({"id": old["_id"], "changes": [{"rev": old["_rev"]}], "seq": row["seq"]})
                            listed.add(old["_id"])
            if self.trust is not None and rows:
                rows, decided_seq, complete = self.trust.page(rows)
                if not complete:
                    # A document waits for its signer's certificate: stop before it, offer it next run.
                    return rows, since if decided_seq is None else decided_seq
            since = feed["last_seq"]
            scanned += len(results)
            if rows or scanned >= MAX_SCAN:
                return rows, since

    def bulk_get(self, child: str, wanted: list[Doc]) -> list[Doc]:
        scopes: dict[str, frozenset[str]] = {}
        allowed = [w for w in wanted if isinstance(w, dict) and self._visible(str(w.get("id")), child, scopes)]
        if self.trust is not None:
            trusted = self.trust.trusted_ids([str(w.get("id")) for w in allowed])
            allowed = [w for w in allowed if w.get("id") in trusted]
        return self.store.bulk_get(allowed, revs=True, attachments=True)

    def missing_events(self, child: str, wanted: dict[str, list[str]]) -> list[Doc]:
        """The events a child lacks in the middle of a case's history, asked for by their hashes.

        ``wanted`` maps case numbers to predecessor hashes the child's events name but it does not
        hold (its read model's gap list). Only cases whose scope touches the child's subtree and only
        trusted events are served, as on the changes feed; each requested event comes with its own
        trusted predecessors, so a gap of several steps closes in one round. Events are immutable
        first revisions, so the child writes them as they are (``new_edits=false``) through the
        same guard as a pull.
        """
        found: list[Doc] = []
        for case_no, hashes in wanted.items():
            docs = self._case_docs(case_no)
            if not docs or not touches_subtree(case_scope(docs, self.tree), child, self.tree):
                continue
            if self.trust is not None:
                trusted = self.trust.trusted_ids([doc["_id"] for doc in docs])
                docs = [doc for doc in docs if doc["_id"] in trusted]
            by_hash: dict[str, tuple[Event, Doc]] = {}
            for doc in docs:
                try:
                    event = Event.from_doc(doc)
                except DomainError:
                    continue
                by_hash[event.hash] = (event, doc)
            todo, sent = list(hashes), set()
            while todo:
                wanted_hash = todo.pop()
                if wanted_hash in sent or wanted_hash not in by_hash:
                    continue
                sent.add(wanted_hash)
                event, doc = by_hash[wanted_hash]
                found.append(doc)
                if event.prev_hash is not None:
                    todo.append(event.prev_hash)
        return found

    def revs_diff(self, revs: dict[str, list[str]], held_out: dict[str, str | None] | None = None) -> dict[str, Doc]:
        """Which revisions the parent lacks. A child asking about a document it may not author and the
        parent lacks is told "missing": its push of that document is then refused and counted.

        Events and certificates (one revision each) are answered from the look-up of the revisions held
        here that :meth:`accept_push` needs anyway; ``held_out`` receives it (id → revision held, None when
        absent) so that the push which follows need not ask the store again. Ids held under another
        revision, and all other documents, are asked of the store's own ``_revs_diff``.
        """
        once = [doc_id for doc_id in revs if doc_id.startswith(("event:", "cert:"))]
        held = self.store.current_revs(sorted(once)) if once else {}
        ask = {doc_id: wanted for doc_id, wanted in revs.items() if not doc_id.startswith(("event:", "cert:"))}
        answer: dict[str, Doc] = {}
        for doc_id in once:
            if doc_id not in held:
                if revs[doc_id]:  # absent here: every revision offered is missing
                    answer[doc_id] = {"missing": list(revs[doc_id])}
            elif any(rev != held[doc_id] for rev in revs[doc_id]):
                ask[doc_id] = revs[doc_id]  # held under another revision: the store's own answer
        if held_out is not None:
            held_out.update({doc_id: held.get(doc_id) for doc_id in once})
        answer.update(self.store.revs_diff(ask) if ask else {})
        return answer

    def accept_push(
        self, child: str, docs: list[Any], known: dict[str, str | None] | None = None
    ) -> tuple[list[Doc], int]:
        """Write what the child may author (new_edits=false); returns (failures, refused count).

        Refusals are never written; they are handed to ``on_refused`` (recorded for city operations).
        ``known``: revisions held here from a look-up moments ago (:meth:`revs_diff`'s ``held_out``); the
        other ids are looked up now.
        """
        ids = {doc["_id"] for doc in docs if isinstance(doc, dict) and isinstance(doc.get("_id"), str)}
        known = known or {}
        held = {doc_id: rev for doc_id, rev in known.items() if doc_id in ids and rev is not None}
        held.update(self.store.current_revs(sorted(ids - known.keys())))
        accepted, refused = self.policy.from_child(docs, child, held)
        if refused and self.on_refused is not None:
            self.on_refused(refused)
        failures = (
            [row for row in self.store.bulk_docs(accepted, new_edits=False) if "error" in row] if accepted else []
        )
        return failures, len(refused)

    @staticmethod
    def local_name(child: str, name: str) -> str:
        """Checkpoints a child keeps here live under its own prefix, so children cannot touch each other's."""
        return f"link-{child}-{name}"
