"""A parent answers revs_diff from the look-up the push needs, and reuses it: same answers, same refusals.

``LinkServer.revs_diff`` answers events and certificates from the revisions held (one ``_all_docs`` look-up)
and hands that look-up to the ``bulk_docs`` that follows (``RecentLookups`` in the sync API); these tests hold it
to the store's own ``_revs_diff`` answer and to the immutability rule, on a real pouchdb-server.
"""

from __future__ import annotations

from typing import Any

from node.adapters.docstore import DocStore
from node.entrypoints.web.sync_api import RecentLookups
from sync.authority import LinkPolicy
from sync.serving import LinkServer
from tiers import yiyang

VILLAGE = "430903101201"
TOWNSHIP = "430903101000"
R1, R2, R3 = "1-" + "a" * 32, "1-" + "b" * 32, "2-" + "c" * 32
HELD = f"event:{VILLAGE}-20250603-1:1748910600000-0000-{VILLAGE}"
DELETED = f"event:{VILLAGE}-20250603-2:1748910600001-0000-{VILLAGE}"
ABSENT = f"event:{VILLAGE}-20250603-3:1748910600002-0000-{VILLAGE}"
CERT = f"cert:{VILLAGE}:{'d' * 64}"
BEAT = f"heartbeat:{VILLAGE}"


def server(store: DocStore) -> LinkServer:
    tree = yiyang()
    return LinkServer(store, tree, TOWNSHIP, policy=LinkPolicy(tree, b""))


def seed(store: DocStore) -> None:
    store.bulk_docs(
        [
            {"_id": HELD, "_rev": R1, "v": 1},
            {"_id": DELETED, "_rev": R1, "v": 1},
            {"_id": BEAT, "_rev": R1, "at": 1},
        ],
        new_edits=False,
    )
    deletion = {"_id": DELETED, "_rev": R3, "_deleted": True, "_revisions": {"start": 2, "ids": ["c" * 32, "a" * 32]}}
    store.bulk_docs([deletion], new_edits=False)


def normalised(answer: dict[str, Any]) -> dict[str, list[str]]:
    return {doc_id: sorted(entry.get("missing", [])) for doc_id, entry in answer.items() if entry.get("missing")}


def test_revs_diff_answers_as_the_store_does_and_hands_over_what_it_looked_up(store: DocStore) -> None:
    seed(store)
    asked = {
        HELD: [R1],  # held, the same revision: nothing missing
        DELETED: [R1, R2],  # held (deleted) under another winner: R2 missing, R1 known
        ABSENT: [R1],  # absent: missing
        CERT: [R2],  # absent certificate: missing
        BEAT: [R2],  # a heartbeat (changes over time): the store's own answer
        f"event:{VILLAGE}-x:bad": [],  # nothing offered: nothing missing
    }
    held: dict[str, str | None] = {}
    ours = server(store).revs_diff(asked, held_out=held)
    assert normalised(ours) == normalised(store.revs_diff(asked))
    assert normalised(ours) == {DELETED: [R2], ABSENT: [R1], CERT: [R2], BEAT: [R2]}
    assert held[HELD] == R1 and held[DELETED] == R3 and held[ABSENT] is None and held[CERT] is None
    assert BEAT not in held


def test_a_push_that_reuses_the_look_up_still_refuses_another_revision_and_writes_nothing(store: DocStore) -> None:
    seed(store)
    link = server(store)
    held: dict[str, str | None] = {}
    link.revs_diff({HELD: [R2], DELETED: [R2]}, held_out=held)
    failures, refused = link.accept_push(
        VILLAGE, [{"_id": HELD, "_rev": R2, "v": 2}, {"_id": DELETED, "_rev": R2, "v": 2}], known=held
    )
    assert (failures, refused) == ([], 2)
    assert store.get(HELD)["_rev"] == R1 and "_conflicts" not in store.get(HELD, conflicts="true")
    assert store.get(DELETED) is None  # still deleted: no second branch brought it back


def test_recent_look_ups_serve_once_per_child_and_expire() -> None:
    lookups = RecentLookups(ttl_s=60.0, capacity=3)
    lookups.remember("a", {"x": "1-x", "y": None})
    assert lookups.take("b", {"x", "y"}) == {}  # another child's look-up is not this one's
    assert lookups.take("a", {"x", "y", "z"}) == {"x": "1-x", "y": None}
    assert lookups.take("a", {"x", "y"}) == {}  # each entry serves one push
    lookups.remember("a", {"1": None, "2": None, "3": None, "4": None})
    assert lookups.take("a", {"1", "2", "3", "4"}) == {"2": None, "3": None, "4": None}  # the oldest went
    stale = RecentLookups(ttl_s=-1.0)
    stale.remember("a", {"x": "1-x"})
    assert stale.take("a", {"x"}) == {}
