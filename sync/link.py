"""A node's link to its parent (push up, pull down), the wake-ups it sends its children, and heartbeats.

Statistics of each direction are kept for city operations: last success, documents moved, errors,
the last error, and how many changes were still waiting at the last look.

After a pull, cases whose history has a gap (an event names a predecessor this node does not hold:
withheld by a hostile hop or lost on the way) are re-requested from the parent by the missing hashes
(:class:`GapFiller`); what comes back passes the same guard as a pull. Each case is asked again with
a growing pause, so a gap the parent cannot fill costs a request an hour, not one per cycle.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from node.adapters.mqtt import MqttLink, wake_topic
from node.bootstrap import NodeContext
from sync.authority import LinkPolicy, Refusal, refusals_as_quarantine
from sync.node_peer import NodeApiPeer
from sync.replicator import Backoff, ReplicationError, StorePeer, replicate
from sync.routing import case_of, goes_everywhere, touches_subtree
from sync.trust import TrustedStorePeer, TrustFilter

HEARTBEAT_DOC = "heartbeat:{node}"
# Re-requests of a case's missing steps: at most this many cases per request (the parent's bound is 100),
# each case asked again after 30 s, doubling up to an hour (with jitter) while its gap stays open.
GAP_CASES_PER_REQUEST = 50
GAP_HASHES_PER_REQUEST = 400
GAP_RETRIES = Backoff(initial_s=30.0, max_s=3600.0)


@dataclass
class DirectionStats:
    last_success: float | None = None
    last_attempt: float | None = None
    docs_written: int = 0
    errors: int = 0
    last_error: str | None = None
    last_seq: Any = None
    checkpoint_moved_at: float | None = None


class CheckpointCache:
    """A peer whose replication checkpoints this process remembers between runs.

    Only this agent writes the checkpoints of its own link, so after the first read the remembered
    copy is current: each run saves two round trips per side. Everything else passes through.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.id = inner.id
        self._logs: dict[str, Any] = {}

    def get_local(self, name: str) -> Any:
        if name not in self._logs:
            self._logs[name] = self.inner.get_local(name)
        return self._logs[name]

    def put_local(self, name: str, body: Any) -> None:
        self.inner.put_local(name, body)
        self._logs[name] = body

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class GuardedTarget:
    """The local store as the target of a pull: only what the parent may send is written (see sync.authority).

    Refusals are recorded in the read model's quarantine, which the agent reports to city operations.
    """

    def __init__(self, inner: Any, context: NodeContext, parent: str) -> None:
        self.inner = inner
        self.id = inner.id
        self.store = context.store
        self.readmodel = context.readmodel
        self.policy = LinkPolicy(context.tree, context.identity.ca_pem, store=context.store)
        self.parent = parent
        self.refused = 0

    def bulk_docs(self, docs: list[Any], new_edits: bool = False) -> list[Any]:
        ids = sorted({d["_id"] for d in docs if isinstance(d, dict) and isinstance(d.get("_id"), str)})
        accepted, refused = self.policy.from_parent(docs, self.parent, self.store.current_revs(ids))
        if refused:
            self.record(refused)
        return self.inner.bulk_docs(accepted, new_edits=new_edits) if accepted else []

    def record(self, refused: list[Refusal]) -> None:
        self.refused += len(refused)
        self.readmodel.record_quarantine(refusals_as_quarantine(refused))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class GapStats:
    incomplete: int = 0  # cases with a gap at the last look
    requested: int = 0  # cases asked for since start
    fetched: int = 0  # missing events received and written
    errors: int = 0
    last_request: float | None = None
    last_error: str | None = None


class GapFiller:
    """Asks the parent again for the events missing in the middle of this node's case histories."""

    def __init__(self, context: NodeContext, parent: Any, guard: GuardedTarget) -> None:
        self.readmodel = context.readmodel
        self.store = context.store
        self.parent = parent
        self.guard = guard
        self.stats = GapStats()
        self._next_try: dict[str, float] = {}
        self._tries: dict[str, int] = {}

    def due(self, now: float) -> dict[str, list[str]]:
        """The incomplete cases to ask about now, within one request's bounds."""
        gaps = self.readmodel.incomplete_cases()
        self.stats.incomplete = len(gaps)
        for case_no in [c for c in self._next_try if c not in gaps]:  # closed: forget its backoff
            self._next_try.pop(case_no, None)
            self._tries.pop(case_no, None)
        wanted: dict[str, list[str]] = {}
        hashes = 0
        for case_no, missing in gaps.items():
            if self._next_try.get(case_no, 0.0) > now:
                continue
            if len(wanted) >= GAP_CASES_PER_REQUEST or hashes + len(missing) > GAP_HASHES_PER_REQUEST:
                break
            wanted[case_no] = missing
            hashes += len(missing)
        return wanted

    def fill(self, now: float | None = None) -> int:
        """One re-request of the gaps due; returns how many missing events were written."""
        now = time.time() if now is None else now
        wanted = self.due(now)
        if not wanted:
            return 0
        for case_no in wanted:
            self._tries[case_no] = self._tries.get(case_no, 0) + 1
            self._next_try[case_no] = now + GAP_RETRIES.pause(self._tries[case_no])
        self.stats.requested += len(wanted)
        self.stats.last_request = now
        try:
            docs = [doc for doc in self.parent.missing_events(wanted) if isinstance(doc, dict)]
            ids = sorted({d["_id"] for d in docs if isinstance(d.get("_id"), str)})
            held = self.store.current_revs(ids) if ids else {}
            new = [d for d in docs if d.get("_id") not in held]
            refused_before = self.guard.refused
            failures = self.guard.bulk_docs(new) if new else []
            refused = self.guard.refused - refused_before
        except Exception as exc:  # a failed re-request waits for its next turn; it never stops the link
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return 0
        written = len(new) - refused - len(failures)
        self.stats.fetched += max(0, written)
        return max(0, written)


@dataclass
class Link:
    context: NodeContext
    push: DirectionStats = field(default_factory=DirectionStats)
    pull: DirectionStats = field(default_factory=DirectionStats)

    def __post_init__(self) -> None:
        assert self.context.config.parent_url
        local = StorePeer(self.context.store)
        trust = TrustFilter(self.context.readmodel, self.context.projector)
        parent_code = self.context.division.parent or ""
        parent = NodeApiPeer(self.context.config.parent_url, self.context.identity, timeout=30, parent=parent_code)
        # Separate caches per direction: each names its own checkpoint documents.
        self.push_source, self.push_target = CheckpointCache(TrustedStorePeer(local, trust)), CheckpointCache(parent)
        self.guard = GuardedTarget(local, self.context, parent_code)
        self.pull_source, self.pull_target = CheckpointCache(parent), CheckpointCache(self.guard)
        self.gaps = GapFiller(self.context, parent, self.guard)
        # Short retries inside one cycle; the agent's timer is the long backoff.
        self.backoff = Backoff(initial_s=0.2, max_s=1.0, attempts=3)

    def _run(self, stats: DirectionStats, source: Any, target: Any) -> int:
        stats.last_attempt = time.time()
        try:
            result = replicate(source, target, backoff=self.backoff)
        except ReplicationError as exc:
            stats.errors += 1
            stats.last_error = f"{type(exc.__cause__).__name__}: {exc.__cause__}"[:300]
            return 0
        except Exception as exc:  # a refused link must not stop the agent
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return 0
        stats.last_success = time.time()
        stats.docs_written += result.docs_written
        if result.last_seq != stats.last_seq:
            stats.last_seq, stats.checkpoint_moved_at = result.last_seq, time.time()
        return result.docs_written

    def sync(self, push: bool = True, pull: bool = True) -> int:
        """Push what this node holds up, then pull what the parent has for this subtree."""
        pushed = self._run(self.push, self.push_source, self.push_target) if push else 0
        pulled = self._run(self.pull, self.pull_source, self.pull_target) if pull else 0
        if pull:
            pulled += self.fill_gaps()
        return pushed + pulled

    def fill_gaps(self) -> int:
        """Re-request the steps missing in this node's case histories (those due); the events written."""
        try:
            return self.gaps.fill()
        except Exception as exc:  # the read model may fail like the store: the link goes on
            self.gaps.stats.errors += 1
            self.gaps.stats.last_error = f"{type(exc).__name__}"
            return 0

    def stats(self) -> dict[str, Any]:
        return {
            "parent": self.context.division.parent,
            "push": asdict(self.push),
            "pull": asdict(self.pull),
            "gaps": asdict(self.gaps.stats),
        }


def wake_children(context: NodeContext, since: Any, mqtt: MqttLink) -> Any:
    """Wake each child whose subtree may hold documents that changed here since ``since``.

    A hint only (a child also syncs on its timer), so the read model's scopes serve: no store reads.
    """
    children = context.tree.children(context.config.code)
    if not children:
        return since
    feed = context.store.changes(since=since, limit=5_000)
    ids = [row["id"] for row in feed.get("results", [])]
    if not ids:
        return feed.get("last_seq", since)
    touched: set[str] = set()
    if any(goes_everywhere(doc_id) for doc_id in ids):
        touched.update(children)
    scopes = context.readmodel.scopes(list({c for c in map(case_of, ids) if c}))
    for members in scopes.values():
        touched.update(child for child in children if touches_subtree(members, child, context.tree))
    for child in sorted(touched):
        mqtt.signal(wake_topic(child), {"node": child, "from": context.config.code})
    return feed["last_seq"]


def put_heartbeat(context: NodeContext) -> None:
    """A document that travels up like any other: its age at the city is the link's lag."""
    doc_id = HEARTBEAT_DOC.format(node=context.config.code)
    current = context.store.get(doc_id)
    doc = {"_id": doc_id, "node": context.config.code, "at": time.time(), "version": context.version}
    if current:
        doc["_rev"] = current["_rev"]
    context.store.put(doc)
