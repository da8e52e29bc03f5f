"""sync.replicator against pouchdb-server's own ``_replicate``: identical revision trees, resumable, idempotent.

The differential test plays the same seeded random histories (creates, edits, deletions,
resurrections, conflicting branches injected with ``new_edits:false``, conflicts made by editing
both sides, attachments added, kept and dropped) on two identical pairs of databases, then syncs
one pair both ways with ``sync.replicator.replicate`` and the other with native one-shot
``POST /_replicate`` (plain source/target URLs only: selector, doc_ids and filter are broken or
crash pouchdb-server 4.2.0), and compares every document's full state. Seeded rather than
Hypothesis-driven: a fixed number of histories keeps the run short, and a failure names its seed
and the operations that led to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from node.adapters.docstore import DocStore
from sync.replicator import (
    Backoff,
    ReplicationError,
    StorePeer,
    next_log,
    replicate,
    replication_id,
    start_seq,
)
from tests.conftest import Services

Doc = dict[str, Any]
SEEDS = range(8)
ROUNDS = 3
IDS = ["a", "b", "c", "d", "e", "f", "事件-1", "x y"]
FAST = Backoff(initial_s=0.01, max_s=0.05, attempts=4)


class Db:
    """Raw HTTP access to one database (the test must see exactly what the server stores)."""

    def __init__(self, http: requests.Session, url: str) -> None:
        self.http = http
        self.url = url
        http.put(url).raise_for_status()

    def doc_url(self, doc_id: str) -> str:
        return f"{self.url}/{quote(doc_id, safe='')}"

    def call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        response = self.http.request(method, self.url + path, **kwargs)
        response.raise_for_status()
        return response.json()

    def leaves(self, doc_id: str) -> list[Doc]:
        response = self.http.get(
            self.doc_url(doc_id),
            params={"open_revs": "all", "revs": "true", "attachments": "true"},
            headers={"Accept": "application/json"},
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return [entry["ok"] for entry in response.json() if "ok" in entry]

    def winner(self, doc_id: str) -> Doc | None:
        response = self.http.get(self.doc_url(doc_id))
        return response.json() if response.status_code == 200 else None

    def all_ids(self) -> set[str]:
        feed = self.call("GET", "/_changes", params={"style": "all_docs"})
        return {row["id"] for row in feed["results"]}


def attachment_data(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Pair:
    """Two databases that must stay identical: one synced by sync.replicator, the other natively."""

    ours: Db
    native: Db
    log: list[str] = field(default_factory=list)

    def both(self, method: str, doc_id: str, **kwargs: Any) -> Doc:
        results = []
        for db in (self.ours, self.native):
            response = db.http.request(method, db.doc_url(doc_id), **kwargs)
            assert response.status_code < 300, f"{method} {doc_id}: {response.text}"
            results.append(response.json())
        assert results[0] == results[1], f"deterministic revs expected, got {results}"
        self.log.append(f"{method} {doc_id} {kwargs.get('params', '')} → {results[0].get('rev')}")
        return results[0]

    def inject(self, docs: list[Doc]) -> None:
        for db in (self.ours, self.native):
            db.call("POST", "/_bulk_docs", json={"docs": docs, "new_edits": False})
        self.log.append(f"inject {[(d['_id'], d['_rev'], d.get('_deleted', False)) for d in docs]}")


def random_body(rng: random.Random) -> Doc:
    body: Doc = {
        "n": rng.randrange(1000),
        "tags": rng.sample(["受理", "审查", "决定", "送达", "补正"], k=rng.randrange(3)),
    }
    if rng.random() < 0.3:
        body["nested"] = {"deep": [rng.random() < 0.5, None, rng.randrange(9)], "text": "通办" * rng.randrange(4)}
    return body


def random_attachments(rng: random.Random, current: Doc | None) -> Doc | None:
    """Keep some existing attachments (as stubs with their digest), drop some, add some."""
    kept = {name: att for name, att in ((current or {}).get("_attachments") or {}).items() if rng.random() < 0.7}
    for _ in range(rng.choice([0, 0, 1, 2])):
        name = rng.choice(["scan.pdf", "photo.jpg", "申请表.txt"])
        kept[name] = {"content_type": "application/octet-stream", "data": attachment_data(f"{name}:{rng.random()}")}
    return kept or None


def step(pair: Pair, rng: random.Random) -> None:
    """One random edit, applied identically to both databases of the pair."""
    doc_id = rng.choice(IDS)
    winner = pair.ours.winner(doc_id)
    leaves = pair.ours.leaves(doc_id)
    roll = rng.random()
    if winner is None and roll < 0.75:
        body = {**random_body(rng), "_id": doc_id}
        if (atts := random_attachments(rng, None)) is not None:
            body["_attachments"] = atts
        pair.both("PUT", doc_id, json=body)  # a create, or a resurrection when the winner is deleted
    elif winner is not None and roll < 0.45:
        body = {**random_body(rng), "_id": doc_id, "_rev": winner["_rev"]}
        if (atts := random_attachments(rng, winner)) is not None:
            body["_attachments"] = atts
        pair.both("PUT", doc_id, json=body)
    elif winner is not None and roll < 0.6:
        pair.both("DELETE", doc_id, params={"rev": winner["_rev"]})
    elif winner is not None and len(leaves) > 1 and roll < 0.7:
        loser = rng.choice([leaf["_rev"] for leaf in leaves if leaf["_rev"] != winner["_rev"]])
        pair.both("DELETE", doc_id, params={"rev": loser})
    else:
        # A conflicting branch, as another node's edit arriving by replication would make it:
        # forked from a random ancestor of a random leaf, or a new root when there is none.
        branch: Doc = {**random_body(rng), "_id": doc_id}
        new_ids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(rng.randrange(1, 4))]
        if leaves:
            history = rng.choice(leaves)["_revisions"]
            cut = rng.randrange(len(history["ids"]))
            ancestors, start = history["ids"][cut:], history["start"] - cut
        else:
            ancestors, start = [], 0
        branch["_revisions"] = {"start": start + len(new_ids), "ids": new_ids + ancestors}
        branch["_rev"] = f"{start + len(new_ids)}-{new_ids[0]}"
        if rng.random() < 0.2:
            branch["_deleted"] = True
        elif rng.random() < 0.3:
            branch["_attachments"] = {
                "branch.bin": {"content_type": "image/png", "data": attachment_data(f"branch:{rng.random()}")}
            }
        pair.inject([branch])


def snapshot(db: Db) -> Doc:
    """Everything replication decides: every leaf with its history, body and attachments, and the winners.

    The winner comes with its conflicts and ``_revs_info`` (which ancestors still have a body).
    """

    def state(doc_id: str) -> Doc:
        leaves = sorted(db.leaves(doc_id), key=lambda d: d["_rev"])
        for leaf in leaves:
            for att in (leaf.get("_attachments") or {}).values():
                att["data"] = hashlib.md5(base64.b64decode(att["data"])).hexdigest()
        winner = db.http.get(
            db.doc_url(doc_id), params={"conflicts": "true", "deleted_conflicts": "true", "revs_info": "true"}
        )
        return {"leaves": leaves, "winner": winner.json() if winner.status_code == 200 else winner.status_code}

    ids = sorted(db.all_ids())
    with ThreadPoolExecutor(8) as pool:
        docs = dict(zip(ids, pool.map(state, ids), strict=True))
    return {
        "docs": docs,
        "all_docs": [(row["id"], row["value"]["rev"]) for row in db.call("GET", "/_all_docs")["rows"]],
        "doc_count": db.call("GET")["doc_count"],  # pouchdb-server reports no doc_del_count
    }


def native_replicate(services: Services, http: requests.Session, source: Db, target: Db) -> None:
    response = http.post(f"{services.docstore_url}/_replicate", json={"source": source.url, "target": target.url})
    response.raise_for_status()
    assert response.json().get("ok"), response.text


@pytest.mark.parametrize("seed", SEEDS)
def test_same_revision_trees_as_native_replication(services: Services, seed: int) -> None:
    rng = random.Random(seed)
    http = requests.Session()
    # pouchdb-server closes idle keep-alive connections; on a busy machine a read can meet one closing.
    http.mount("http://", HTTPAdapter(max_retries=Retry(total=3, backoff_factor=0.1, allowed_methods={"GET"})))
    prefix = f"diff-{seed}-{uuid.uuid4().hex[:6]}"
    x = Pair(Db(http, f"{services.docstore_url}/{prefix}-x-ours"), Db(http, f"{services.docstore_url}/{prefix}-x-nat"))
    y = Pair(Db(http, f"{services.docstore_url}/{prefix}-y-ours"), Db(http, f"{services.docstore_url}/{prefix}-y-nat"))
    # With included docs, generation-1 documents skip bulk_get; without, everything goes through it.
    inline = seed % 4 != 3
    x_peer = StorePeer(DocStore(services.docstore_url, x.ours.url.rsplit("/", 1)[1]), include_docs=inline)
    y_peer = StorePeer(DocStore(services.docstore_url, y.ours.url.rsplit("/", 1)[1]), include_docs=inline)
    for round_ in range(ROUNDS):
        # Both sides edit, often the same ids: replication then has conflicts to carry both ways.
        for _ in range(rng.randrange(6, 16)):
            step(x, rng)
        for _ in range(rng.randrange(0, 8)):
            step(y, rng)
        batch = rng.choice([1, 2, 3, 5, 100])
        pushed = replicate(x_peer, y_peer, batch_size=batch, backoff=FAST, pipelined=rng.random() < 0.7)
        native_replicate(services, http, x.native, y.native)
        pulled = replicate(y_peer, x_peer, batch_size=batch, backoff=FAST, pipelined=rng.random() < 0.7)
        native_replicate(services, http, y.native, x.native)
        assert pushed.errors == pulled.errors == []
        context = f"seed {seed}, round {round_}, batch {batch}\nx: {x.log}\ny: {y.log}"
        x_ours = snapshot(x.ours)
        assert x_ours == snapshot(x.native), context
        assert snapshot(y.ours) == snapshot(y.native), context
    assert x_ours["docs"] and x_ours["all_docs"] == snapshot(y.ours)["all_docs"]  # synced both ways: converged


# --- resumable, idempotent, retrying ------------------------------------------------------------


class Recording:
    """A peer wrapper that records calls and fails the chosen ones (``None``: let that call through)."""

    def __init__(self, inner: StorePeer, fail: dict[str, list[BaseException | None]] | None = None) -> None:
        self.inner = inner
        self.id = inner.id
        self.fail = fail or {}
        self.calls: dict[str, list[Any]] = {}
        self.stored: list[tuple[str, str]] = []  # (id, rev) of every revision bulk_docs passed on

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.setdefault(name, []).append(args)
        failures = self.fail.get(name)
        if failures:
            error = failures.pop(0)
            if error is not None:
                raise error
        answer = getattr(self.inner, name)(*args, **kwargs)
        if name == "bulk_docs":
            self.stored += [(doc["_id"], doc["_rev"]) for doc in args[0]]
        return answer

    def changes(self, since: Any, limit: int) -> tuple[list[Doc], Any]:
        return self._call("changes", since, limit)

    def revs_diff(self, revs: dict[str, list[str]]) -> dict[str, Doc]:
        return self._call("revs_diff", revs)

    def bulk_get(self, wanted: list[Doc]) -> list[Doc]:
        return self._call("bulk_get", wanted)

    def bulk_docs(self, docs: list[Doc], new_edits: bool = False) -> list[Doc]:
        return self._call("bulk_docs", docs, new_edits=new_edits)

    def get_local(self, name: str) -> Doc | None:
        return self._call("get_local", name)

    def put_local(self, name: str, body: Doc) -> None:
        return self._call("put_local", name, body)


def loaded_source(store: DocStore, count: int) -> StorePeer:
    store.bulk_docs([{"_id": f"event:{i:03d}", "n": i} for i in range(count)])
    return StorePeer(store)


def fresh_target(services: Services) -> StorePeer:
    return StorePeer(DocStore(services.docstore_url, f"test-target-{uuid.uuid4().hex[:12]}"))


@pytest.mark.parametrize("pipelined", [True, False])
def test_interrupted_replication_resumes_from_its_checkpoint(
    services: Services, store: DocStore, pipelined: bool
) -> None:
    source, target = loaded_source(store, 50), fresh_target(services)
    # The link drops on the third write (not a connection error: no retry, the run stops).
    first = Recording(target, fail={"bulk_docs": [None, None, RuntimeError("link dropped")]})
    with pytest.raises(ReplicationError) as stopped:
        replicate(source, first, batch_size=10, backoff=FAST, pipelined=pipelined)
    assert stopped.value.result.docs_written == 20
    checkpoint_seq = source.changes(0, 20)[1]
    assert stopped.value.result.last_seq == checkpoint_seq
    rep_id = replication_id(source, target)
    assert target.get_local(rep_id)["last_seq"] == checkpoint_seq
    assert source.get_local(rep_id)["last_seq"] == checkpoint_seq

    second_source, second = Recording(source), Recording(target)
    result = replicate(second_source, second, batch_size=10, backoff=FAST, pipelined=pipelined)
    assert second_source.calls["changes"][0][0] == checkpoint_seq  # resumed, not restarted
    assert result.docs_written == 30 and result.errors == []
    written = first.stored + second.stored
    assert len(written) == len(set(written)) == 50  # every revision arrived exactly once
    assert target.store.info()["doc_count"] == 50
    assert target.get_local(rep_id)["last_seq"] == result.last_seq == source.changes(0, 1000)[1]


def test_replicating_twice_writes_nothing_the_second_time(services: Services, store: DocStore) -> None:
    source, target = loaded_source(store, 30), fresh_target(services)
    first = replicate(source, target, batch_size=7, backoff=FAST)
    assert (first.docs_read, first.docs_written, first.missing_revs) == (30, 30, 30)
    again = Recording(target)
    second = replicate(source, again, batch_size=7, backoff=FAST)
    assert (second.docs_read, second.docs_written, second.missing_revs, second.errors) == (0, 0, 0, [])
    assert "bulk_docs" not in again.calls and "put_local" not in again.calls
    # Without a checkpoint the whole feed is read again, and revs_diff finds nothing missing.
    third = replicate(source, again, batch_size=7, backoff=FAST, checkpoint=False)
    assert (third.docs_written, third.missing_revs) == (0, 0)
    assert "bulk_docs" not in again.calls


def test_connection_errors_are_retried_with_backoff(services: Services, store: DocStore) -> None:
    source = Recording(
        loaded_source(store, 12),
        fail={"changes": [requests.ConnectionError("refused")], "bulk_get": [None, ConnectionResetError("reset")]},
    )
    target = Recording(fresh_target(services), fail={"bulk_docs": [requests.Timeout("slow")] * 2})
    result = replicate(source, target, batch_size=5, backoff=FAST)
    assert result.docs_written == 12 and result.errors == []
    assert len(target.calls["bulk_docs"]) == 3 + 2  # the first batch took three attempts
    assert len(target.stored) == len(set(target.stored)) == 12
    with pytest.raises(ReplicationError) as given_up:
        replicate(
            Recording(source.inner, fail={"changes": [requests.ConnectionError("down")] * 5}),
            fresh_target(services),
            backoff=FAST,
        )
    assert isinstance(given_up.value.__cause__, requests.ConnectionError)


def test_a_filtering_source_checkpoints_past_what_it_left_out(services: Services, store: DocStore) -> None:
    """The shape of a parent's scoped feed: only some documents, and the seq moves past the rest."""

    class Scoped(Recording):
        def changes(self, since: Any, limit: int) -> tuple[list[Doc], Any]:
            while True:
                rows, last_seq = self.inner.changes(since, limit)
                kept = [row for row in rows if int(row["id"].split(":")[1]) % 3 == 0]
                if kept or not rows:
                    return kept, last_seq
                since = last_seq

    source, target = Scoped(loaded_source(store, 20)), fresh_target(services)
    result = replicate(source, target, batch_size=4, backoff=FAST)
    assert result.docs_written == 7
    held = [row["id"] for row in target.store.all_docs("", "\ufff0", include_docs=False)]
    assert held == [f"event:{i:03d}" for i in range(0, 20, 3)]
    assert result.last_seq == source.inner.changes(0, 1000)[1]


def test_checkpoint_logs_are_compared_as_couchdb_does() -> None:
    first = next_log(None, "s1", 10)
    second = next_log(first, "s2", 20)
    assert start_seq(second, second) == 20
    assert start_seq(None, second) == 0 and start_seq(second, None) == 0
    # The source's checkpoint of session s2 never reached the target: resume from s1, which both hold.
    assert start_seq(second, first) == 10
    assert start_seq(first, second) == 10
    assert start_seq(next_log(None, "a", 5), next_log(None, "b", 7)) == 0
    assert json.loads(json.dumps(second))["history"][0] == {"session_id": "s2", "last_seq": 20}
