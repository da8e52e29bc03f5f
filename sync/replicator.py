"""Node-driven CouchDB replication protocol: one-shot, resumable, checkpointed on both sides.

Owns the replication loop and the :class:`Peer` contract it runs against. The loop is the one
CouchDB's and PouchDB's replicators run — changes (style=all_docs) → ``_revs_diff`` →
``_bulk_get?revs=true&attachments=true`` → ``_bulk_docs new_edits:false`` → checkpoint in a
``_local`` doc on both sides — so revision trees (deletions, conflicts, attachments) come out
exactly as the native replicator makes them; tests/test_replication_differential.py checks that
against pouchdb-server's own ``_replicate``.

A peer need not be a plain database: a parent node's API that filters its changes by routing
scope is a peer too. The loop relies on the Peer calls only, treats sequence values as opaque
(stored, passed back, compared for equality at most) and stops at the first empty page.

pouchdb-server 4.2.0, measured here (ARCHITECTURE §3 lists the rest):

- ``_bulk_get`` honours ``revs=true`` and ``attachments=true`` (base64 inline, digest and revpos
  kept, the same attachment fields the native replicator writes), several revisions of one id and
  deleted revisions; so the ``GET /db/id?open_revs=[…]`` fallback is not needed. Results come
  grouped by id, not in request order; a revision it lacks comes back as ``{"missing": rev}``.
- ``_bulk_get`` with ``latest=true`` and a revision the tree lacks kills the server process, and
  with an empty ``docs`` list it never answers: neither is ever sent (see ``DocStore.bulk_get``).
  Without ``latest`` a revision superseded and compacted away between the changes read and the
  fetch is simply not returned; it is reported in ``errors`` and its successor, which has a later
  seq, arrives in a later batch.
- ``_bulk_docs new_edits:false`` answers ``[]`` on success, as CouchDB does: only failures are listed.
  It sets every inline attachment's ``revpos`` to the generation of the revision being written,
  whatever the body says; the native replicator's writes get the same, so the results still match.
- ``_revs_diff`` returns no ``possible_ancestors``; nothing here needs them (attachments go inline).

Throughput (bench/bench_replication.py): the target's ``_bulk_docs`` is the bottleneck, so the loop
runs as a pipeline — changes, revs_diff and bulk_get each in their own thread a couple of batches
ahead, checkpoints written in the background — keeping both single-threaded stores busy at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import requests

from node.adapters.docstore import DocStore, StoreUnavailable

Doc = dict[str, Any]
# Opaque: an integer on pouchdb-server, a string on CouchDB 3. Never compute with it.
Seq = Any
T = TypeVar("T")

CHECKPOINT_VERSION = 1
# PouchDB keeps 5 sessions, CouchDB 50; a few suffice to find a session both sides recorded.
CHECKPOINT_HISTORY = 5
# Batches each pipeline step may run ahead of the next: enough to keep both stores busy.
PREFETCH_BATCHES = 2
TRANSIENT: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)


class Peer(Protocol):
    """One end of a replication. ``id`` names it stably (URL, node code) for the checkpoint id.

    A pipelined run calls a peer from several threads at once (one per pipeline step, plus the
    checkpoint writer); a peer that cannot allow that is run with ``pipelined=False``.
    """

    id: str

    def changes(self, since: Seq, limit: int) -> tuple[list[Doc], Seq]:
        """Up to ``limit`` rows ``{"id", "changes": [{"rev"}, …], "seq"}`` after ``since`` with every
        leaf revision (style=all_docs), and the seq to resume from. Rows are empty only when the feed
        is exhausted: a filtering peer keeps reading until it has something to return or reaches the end.

        A row may carry ``"doc"``, the winning revision as ``include_docs=true`` gives it; it then
        stands in for a bulk_get when it is the document's whole history (see :func:`_whole_history`).
        """
        ...

    def revs_diff(self, revs: dict[str, list[str]]) -> dict[str, Doc]:
        """id → ``{"missing": [rev, …]}`` for the revisions of ``revs`` this peer lacks."""
        ...

    def bulk_get(self, wanted: list[Doc]) -> list[Doc]:
        """The ``{"id", "rev"}`` revisions with ``_revisions`` and inline attachments; unknown ones left out."""
        ...

    def bulk_docs(self, docs: list[Doc], new_edits: bool = False) -> list[Doc]:
        """Store revisions as given; returns the failures (``{"id", "error", …}``)."""
        ...

    def get_local(self, name: str) -> Doc | None: ...

    def put_local(self, name: str, body: Doc) -> None: ...


class StorePeer:
    """A peer that is a CouchDB-API database reached directly (wraps a :class:`DocStore`).

    Composition rather than a DocStore subclass: the Peer's ``changes`` returns ``(rows, last_seq)``
    where DocStore's returns the raw feed, and code holding a DocStore must keep getting the latter.
    """

    def __init__(self, store: DocStore, include_docs: bool = True) -> None:
        self.store = store
        self.id = store.db_url
        # Bodies in the feed spare most bulk_get work for immutable event docs (one revision each):
        # halves the source's CPU per document, measured. Off for a feed read over a slow link.
        self.include_docs = include_docs
        self._open = False
        self._lock = threading.Lock()

    @classmethod
    def open(cls, base_url: str, db_name: str, timeout: float = 60.0) -> StorePeer:
        return cls(DocStore(base_url, db_name, timeout=timeout))

    def _ready(self) -> DocStore:
        # DocStore opens (and creates) its database on first use; not from several pipeline threads at once.
        if not self._open:
            with self._lock:
                _ = self.store.db
                self._open = True
        return self.store

    def changes(self, since: Seq, limit: int) -> tuple[list[Doc], Seq]:
        feed = self._ready().changes(since=since, limit=limit, include_docs=self.include_docs)
        return feed["results"], feed["last_seq"]

    def revs_diff(self, revs: dict[str, list[str]]) -> dict[str, Doc]:
        return self._ready().revs_diff(revs)

    def bulk_get(self, wanted: list[Doc]) -> list[Doc]:
        return self._ready().bulk_get(wanted, revs=True, attachments=True)

    def bulk_docs(self, docs: list[Doc], new_edits: bool = False) -> list[Doc]:
        return [row for row in self._ready().bulk_docs(docs, new_edits=new_edits) if "error" in row]

    def get_local(self, name: str) -> Doc | None:
        return self._ready().get_local(name)

    def put_local(self, name: str, body: Doc) -> None:
        self._ready().put_local(name, body)


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff for transient failures (refused or reset connections, timeouts).

    Every call the loop makes is safe to repeat: reads, ``new_edits:false`` writes (idempotent) and
    checkpoint writes (re-read their ``_rev`` each time). One-shot runs give up after ``attempts``
    and leave the next run to the node's timer or a wake-up, resuming from the checkpoint.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    attempts: int = 8
    retry_on: tuple[type[BaseException], ...] = TRANSIENT

    def call(self, fn: Callable[[], T]) -> T:
        delay, attempt = self.initial_s, 1
        while True:
            try:
                return fn()
            except self.retry_on:
                if attempt >= self.attempts:
                    raise
            time.sleep(delay)
            delay, attempt = min(delay * self.factor, self.max_s), attempt + 1

    def pause(self, failures: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """How long to wait after ``failures`` failures in a row: ``initial_s · factor^(failures-1)``,
        capped at ``max_s``, with jitter (half to all of it) so that nodes failing together do not
        retry together."""
        exponent = min(max(failures, 1) - 1, 64)
        return rng(0.5, 1.0) * min(self.max_s, self.initial_s * self.factor**exponent)


@dataclass
class ReplicationResult:
    docs_read: int = 0
    docs_written: int = 0
    missing_revs: int = 0
    last_seq: Seq = 0
    errors: list[Doc] = field(default_factory=list)


class ReplicationError(Exception):
    """Replication stopped early; ``result`` says how far it got (checkpointed up to ``result.last_seq``)."""

    def __init__(self, result: ReplicationResult) -> None:
        super().__init__(f"replication stopped after {result.docs_written} documents at seq {result.last_seq!r}")
        self.result = result


def replication_id(source: Peer, target: Peer) -> str:
    """Name of the ``_local`` checkpoint doc on both sides, derived from both ends like CouchDB's."""
    digest = hashlib.sha256(f"tongban-replication-v{CHECKPOINT_VERSION}\n{source.id}\n{target.id}".encode())
    return f"tongban-{digest.hexdigest()[:32]}"


def start_seq(source_log: Doc | None, target_log: Doc | None) -> Seq:
    """Where to resume: CouchDB's ``compare_replication_logs``.

    A seq is only safe if both sides recorded it in the same session (the target may have lost
    writes the source log claims, or the reverse). Without a common session: from the start.
    """
    if not source_log or not target_log:
        return 0
    if source_log.get("session_id") == target_log.get("session_id"):
        return source_log.get("last_seq", 0)
    source_history, target_history = source_log.get("history", []), target_log.get("history", [])
    for i in range(min(len(source_history), len(target_history))):
        if source_history[i].get("session_id") in {entry.get("session_id") for entry in target_history[i:]}:
            return source_history[i]["last_seq"]
        if target_history[i].get("session_id") in {entry.get("session_id") for entry in source_history[i + 1 :]}:
            return target_history[i]["last_seq"]
    return 0


def next_log(previous: Doc | None, session: str, seq: Seq) -> Doc:
    """The checkpoint doc after ``session`` reached ``seq`` (PouchDB's format: session, seq, short history)."""
    history = [entry for entry in (previous or {}).get("history", []) if entry.get("session_id") != session]
    return {
        "session_id": session,
        "last_seq": seq,
        "history": [{"session_id": session, "last_seq": seq}, *history][:CHECKPOINT_HISTORY],
        "replicator": "tongban",
        "version": CHECKPOINT_VERSION,
    }


@dataclass
class _Batch:
    rows: list[Doc]
    last_seq: Seq
    wanted: list[Doc] = field(default_factory=list)
    docs: list[Doc] = field(default_factory=list)
    not_found: list[Doc] = field(default_factory=list)


def _change_pages(source: Peer, since: Seq, limit: int, backoff: Backoff) -> Iterator[_Batch]:
    """Pages of the source's changes feed in order, ending with the first empty one."""
    while True:
        rows, last_seq = backoff.call(partial(source.changes, since, limit))
        yield _Batch(rows, last_seq)
        if not rows:
            return
        since = last_seq


def _whole_history(row: Doc) -> Doc | None:
    """The row's included doc if it is all there is to copy: the only leaf, generation 1, not deleted,
    no attachments (included docs carry stubs only). Then ``_rev`` alone is its revision tree, so
    no ``_revisions`` are needed — PouchDB's replicator takes such docs from ``_all_docs`` likewise.
    """
    doc, changes = row.get("doc"), row["changes"]
    if not doc or len(changes) != 1 or doc.get("_rev") != changes[0]["rev"] or not doc["_rev"].startswith("1-"):
        return None
    return None if doc.get("_deleted") or doc.get("_attachments") else doc


def _diffed(target: Peer, backoff: Backoff, batch: _Batch) -> _Batch:
    revs: dict[str, list[str]] = {}
    for row in batch.rows:
        revs.setdefault(row["id"], []).extend(change["rev"] for change in row["changes"])
    diff = backoff.call(partial(target.revs_diff, revs)) if revs else {}
    batch.wanted = [{"id": doc_id, "rev": rev} for doc_id, entry in diff.items() for rev in entry.get("missing", [])]
    return batch


def _fetched(source: Peer, backoff: Backoff, batch: _Batch) -> _Batch:
    at_hand = {(doc["_id"], doc["_rev"]): doc for doc in filter(None, map(_whole_history, batch.rows))}
    batch.docs = [at_hand[want["id"], want["rev"]] for want in batch.wanted if (want["id"], want["rev"]) in at_hand]
    fetch = [want for want in batch.wanted if (want["id"], want["rev"]) not in at_hand]
    batch.docs += backoff.call(partial(source.bulk_get, fetch)) if fetch else []
    got = {(doc["_id"], doc["_rev"]) for doc in batch.docs}
    batch.not_found = [
        {**want, "error": "not_found", "reason": "revision gone from the source since its changes were read"}
        for want in batch.wanted
        if (want["id"], want["rev"]) not in got
    ]
    return batch


class _Ahead(Generic[T]):
    """Runs an iterator in its own thread, at most ``depth`` items ahead of whoever consumes it.

    Chained stages share one ``stop`` event, so closing the pipeline ends every thread in it.
    """

    def __init__(self, items: Iterator[T], depth: int, stop: threading.Event, name: str) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = stop
        threading.Thread(target=self._run, args=(items,), name=name, daemon=True).start()

    def _run(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._offer(("item", item)):
                    return
        except BaseException as exc:
            self._offer(("error", exc))
            return
        self._offer(("end", None))

    def _offer(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> _Ahead[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                kind, value = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._stop.is_set():
                    raise StopIteration from None
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value


def replicate(
    source: Peer,
    target: Peer,
    batch_size: int = 500,
    checkpoint: bool = True,
    progress: Callable[[ReplicationResult], None] | None = None,
    backoff: Backoff | None = None,
    pipelined: bool = True,
) -> ReplicationResult:
    """Copy to ``target`` every leaf revision ``source`` has and ``target`` lacks, then return.

    Resumes from the checkpoint both sides agree on and checkpoints after every batch written.
    ``pipelined`` runs changes, revs_diff and bulk_get each in its own thread, up to
    ``PREFETCH_BATCHES`` batches ahead of the next step, and writes each checkpoint in the
    background once its batch is stored (never before); ``False`` runs the same protocol strictly
    in sequence. Transient failures are retried with ``backoff``; a call that fails for good raises
    :class:`ReplicationError`, and what was checkpointed until then stays done.
    """
    backoff = backoff or Backoff()
    rep_id = replication_id(source, target)
    session = uuid.uuid4().hex
    logs: dict[str, Doc | None] = {"source": None, "target": None}
    result = ReplicationResult()
    checkpointer = ThreadPoolExecutor(1, "replicate-checkpoint") if checkpoint and pipelined else None
    pending: Future[None] | None = None
    stop = threading.Event()

    def save_checkpoint(seq: Seq) -> None:
        # Target first, as CouchDB does: a source log ahead of its target must never be trusted alone.
        for side, peer in (("target", target), ("source", source)):
            log = next_log(logs[side], session, seq)
            backoff.call(partial(peer.put_local, rep_id, log))
            logs[side] = log
        result.last_seq = seq

    def batch_stored(seq: Seq) -> None:
        nonlocal pending
        if not checkpoint:
            result.last_seq = seq
            return
        if pending is not None:
            pending.result()  # one at a time, in order; a failed checkpoint write stops the run
        if checkpointer is None:
            save_checkpoint(seq)
        else:
            pending = checkpointer.submit(save_checkpoint, seq)

    def close() -> None:
        stop.set()  # a read still in flight only reads: it is not waited for
        if checkpointer is not None:
            checkpointer.shutdown(wait=True)

    try:
        if checkpoint:
            logs = {
                side: backoff.call(partial(peer.get_local, rep_id))
                for side, peer in (("source", source), ("target", target))
            }
            result.last_seq = start_seq(logs["source"], logs["target"])
        stored_seq = result.last_seq
        pages: Iterator[_Batch] = _change_pages(source, stored_seq, batch_size, backoff)
        stages = {"diff": partial(_diffed, target, backoff), "fetch": partial(_fetched, source, backoff)}
        if pipelined:
            # Each step in its own thread, a few batches apart: the source serves changes and
            # bulk_get while the target serves revs_diff and bulk_docs, all at the same time.
            pages = _Ahead(pages, PREFETCH_BATCHES, stop, "replicate-changes")
            for name, stage in stages.items():
                pages = _Ahead(map(stage, pages), PREFETCH_BATCHES, stop, f"replicate-{name}")
        else:
            for stage in stages.values():
                pages = map(stage, pages)
        for batch in pages:
            if not batch.rows:
                # A filtering source may have passed over a tail of changes: remember that too.
                if batch.last_seq != stored_seq:
                    batch_stored(batch.last_seq)
                break
            result.docs_read += len(batch.docs)
            result.missing_revs += len(batch.wanted)
            result.errors.extend(batch.not_found)
            if batch.docs:
                failures = backoff.call(partial(target.bulk_docs, batch.docs, new_edits=False))
                # Like CouchDB (not PouchDB): a revision the target refuses is counted and passed over.
                result.docs_written += len(batch.docs) - len(failures)
                result.errors.extend(failures)
            batch_stored(stored_seq := batch.last_seq)
            if progress is not None:
                progress(dataclasses.replace(result, errors=list(result.errors)))
        if pending is not None:
            pending.result()
    except Exception as exc:
        close()  # first, so that the error reports the checkpoint of every batch that was stored
        raise ReplicationError(result) from exc
    finally:
        close()
    return result
