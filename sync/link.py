"""A node's link to its parent (push up, pull down), the wake-ups it sends its children, and heartbeats.

Statistics of each direction are kept for city operations: last success, documents moved, errors,
the last error, and how many changes were still waiting at the last look.
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
        return pushed + pulled

    def stats(self) -> dict[str, Any]:
        return {"parent": self.context.division.parent, "push": asdict(self.push), "pull": asdict(self.pull)}


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
