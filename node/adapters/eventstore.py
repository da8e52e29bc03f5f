"""Case events and certificates in the node's document store, and the check of their signatures.

An event whose signature or hash chain fails is never folded into a case: :class:`EventVerifier`
sorts a case's documents into trusted events and quarantined ones, each with its reason.

Everything here comes from other nodes, so nothing is assumed: a signature is checked against the
certificate valid at the event's own time (old cases stay verifiable after a renewal or expiry), a
first event must carry a case number of its signer (no squatting), a clock far ahead of ours is
refused, and an event that cannot be decided yet (its signer's certificate, its case's first event
or the catalogue version it names has not arrived) waits at most ``max_undecided_s`` after it first
reached this node before it is quarantined, so it never holds a link up for good (should what it
waited for arrive later, it is trusted then and its "undecided" quarantine row goes). One bad
document is quarantined alone; it never fails the case or the process.

With a catalogue source, an ``accepted`` event's handling node and a transfer's target must agree with
the catalogue version the event names (:mod:`node.domain.jurisdiction`); with a revocation list, an
event signed with a revoked certificate after its revocation is quarantined (earlier ones stay).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from node.adapters.batching import GroupCommit
from node.adapters.docstore import Doc, DocStore, StoreUnavailable
from node.adapters.pki import certificate_doc, verify_signature
from node.adapters.pki.revocation import Revoked
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import (
    GENESIS_TYPES,
    Event,
    EventType,
    event_id_range,
    owns_case_number,
    routed_by,
    verify_chain,
)
from node.domain.hlc import NODE_PATTERN
from node.domain.jurisdiction import accepted_routing_problem, transfer_problem
from tiers import DivisionTree, yiyang

HEX64 = re.compile(r"^[0-9a-f]{64}$")
# How long an event may stay undecided (certificate or first event not arrived) before quarantine.
MAX_UNDECIDED_S = 600.0
# How far ahead of this node's clock another node's event may be stamped.
MAX_AHEAD_S = 900.0
# Reasons of quarantine rows that only say "waited too long": cleared if the event is trusted later.
UNDECIDED = "undecided: "
_PENDING = "pending"
_MAX_REMEMBERED_ARRIVALS = 100_000


class CatalogueVersions(Protocol):
    """Where the verifier finds the catalogue version an event names (see ``PublishedCatalogue``)."""

    def version(self, number: int) -> Catalogue | None: ...

    def versions_held(self) -> list[Catalogue]: ...


class Revocations(Protocol):
    """The city CA's revocation list as this node holds it (see ``PublishedRevocations``)."""

    def revoked(self, cert_sha256: str) -> Revoked | None: ...

    def revoked_nodes(self) -> list[str]: ...


@dataclass
class Quarantined:
    doc_id: str
    case_no: str
    node: str
    reason: str


@dataclass
class VerifiedCase:
    case_no: str
    events: list[Event] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    # Signed by a certificate this node has not received yet: neither trusted nor condemned.
    pending: list[str] = field(default_factory=list)
    # Predecessor hashes named by trusted events but not held here: the history has a gap.
    missing_predecessors: list[str] = field(default_factory=list)
    # Quarantined only for waiting too long: decided again when what they waited for arrives.
    retry: list[str] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        return bool(self.missing_predecessors)


class EventStore:
    def __init__(self, store: DocStore) -> None:
        self.store = store
        # The store's per-request cost dominates a small write (ARCHITECTURE §4: 224 single PUTs/s
        # against 6,100 docs/s in bulk), so concurrent appends share one _bulk_docs.
        self._group: GroupCommit[Doc, Doc] = GroupCommit(store.bulk_docs)

    def case_docs(self, case_no: str) -> list[Doc]:
        start, end = event_id_range(case_no)
        return self.store.all_docs(start, end)

    def append(self, events: list[Event]) -> None:
        """Write new events in one request; an id already taken means someone else wrote first."""
        results = self._group.write([event.to_doc() for event in events])
        failed = [r for r in results if r.get("error")]
        if failed:
            raise DomainError(
                "concurrent_update",
                "案件刚被他人更新，请刷新后重试",
                f"the case was updated concurrently ({failed[0].get('error')}); reload and try again",
                ErrorKind.CONFLICT,
            )

    def publish_certificate(self, pem: bytes) -> None:
        doc = certificate_doc(pem)
        if self.store.get(doc["_id"]) is None:
            self.store.bulk_docs([doc])

    def certificate(self, signer: str, sha: str) -> bytes | None:
        if not NODE_PATTERN.match(signer) or not HEX64.match(sha):
            return None  # never let a value from another node shape a store path
        doc = self.store.get(f"cert:{signer}:{sha}")
        return doc["pem"].encode() if doc and isinstance(doc.get("pem"), str) else None


class EventVerifier:
    """Checks signatures against the city CA and hash chains; caches certificates it has seen."""

    def __init__(
        self,
        events: EventStore,
        ca_pem: bytes,
        *,
        max_undecided_s: float = MAX_UNDECIDED_S,
        max_ahead_s: float = MAX_AHEAD_S,
        now: Callable[[], float] = time.time,
        tree: DivisionTree | None = None,
        catalogues: CatalogueVersions | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.tree = tree or yiyang()
        self.events = events
        self.ca_pem = ca_pem
        self.max_undecided_s = max_undecided_s
        self.max_ahead_s = max_ahead_s
        self.now = now
        self.catalogues = catalogues
        self.revocations = revocations
        self._certs: dict[tuple[str, str], bytes] = {}
        self._arrivals: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_seen(self, doc_id: str) -> float:
        """When this node first saw ``doc_id`` undecided: kept in a local (never replicated) document of
        the store, so every process of the node and a restart agree. The event's own clock is the
        writer's word and is not used for waiting."""
        with self._lock:
            if doc_id in self._arrivals:
                return self._arrivals[doc_id]
        name = "arrival-" + hashlib.sha256(doc_id.encode()).hexdigest()[:40]
        store = self.events.store
        try:
            held = store.get_local(name)
        except StoreUnavailable:
            raise
        except Exception:  # an odd answer from the store must not condemn the event: count from now
            held = None
        if held and isinstance(held.get("at"), int | float) and not isinstance(held.get("at"), bool):
            at = float(held["at"])
        else:
            at = self.now()
            try:
                store.put_local(name, {"at": at, "doc_id": doc_id[:300]})
            except StoreUnavailable:
                raise
            except Exception:  # another process recorded it at the same moment: read theirs
                again = store.get_local(name) or {}
                at = float(again["at"]) if isinstance(again.get("at"), int | float) else at
        with self._lock:
            if len(self._arrivals) >= _MAX_REMEMBERED_ARRIVALS:
                self._arrivals.clear()
            self._arrivals[doc_id] = at
        return at

    def revoked_nodes(self) -> list[str]:
        """Nodes with a revoked certificate in the newest revocation list (read now)."""
        return self.revocations.revoked_nodes() if self.revocations is not None else []

    def _waited_s(self, event: Event) -> float:
        return self.now() - self.first_seen(event.doc_id)

    def _certificate(self, signer: str, sha: str) -> bytes | None:
        key = (signer, sha)
        with self._lock:
            if key in self._certs:
                return self._certs[key]
        pem = self.events.certificate(signer, sha)
        if pem is not None:
            with self._lock:
                self._certs[key] = pem
        return pem

    def signature_problem(self, event: Event) -> str | None:
        """None when trusted; ``"pending"`` when the signer's certificate has not arrived; else why not."""
        signature = event.signature
        if not signature:
            return "unsigned event / 事件未签名"
        if signature.get("signer") != event.node:
            signer = str(signature.get("signer"))[:80]
            return f"signed by {signer!r} but written as {event.node!r} / 签名节点与事件节点不符"
        sha = signature.get("cert_sha256")
        if not isinstance(sha, str) or not HEX64.match(sha):
            return "signature.cert_sha256 is not 64 lowercase hex digits / 证书指纹格式不正确"
        pem = self._certificate(event.node, sha)
        if pem is None:
            return "pending"
        try:
            # The certificate must have been valid when the event was signed, not necessarily now.
            verify_signature(signature, event.hash, pem, self.ca_pem, at=event.timestamp.to_datetime())
        except DomainError as exc:
            return f"{exc.message_en} / {exc.message_zh}"
        revoked = self.revocations.revoked(sha) if self.revocations is not None else None
        if revoked is not None and event.timestamp.to_datetime() > revoked.revoked_at:
            return (
                f"revoked: certificate {sha[:16]}… of {revoked.node} was revoked at "
                f"{revoked.revoked_at:%Y-%m-%d %H:%M:%S} UTC ({revoked.reason[:80]}), before this event was signed"
                " / 签名证书已吊销"
            )
        return None

    def routing_problem(self, event: Event, genesis: Event | None) -> str | None:
        """Whether an accepted event's handling node, or a transfer's target, agrees with the catalogue
        version the event names; ``"pending"`` while that version has not arrived here.

        An event that names no version (written before events named one) must agree with at least
        one version this node holds: no routing the city never published.
        """
        if self.catalogues is None or event.type not in (EventType.ACCEPTED, EventType.TRANSFERRED):
            return None
        if event.type is EventType.TRANSFERRED and (genesis is None or genesis.type is not EventType.ACCEPTED):
            return None  # no matter to check against: the fold will not apply it
        number = routed_by(event)
        if number is None:
            versions = self.catalogues.versions_held()
        else:
            found = self.catalogues.version(number)
            if found is None:
                return _PENDING
            versions = [found]
        problem: str | None = "no catalogue version"
        for catalogue in versions:
            if event.type is EventType.ACCEPTED:
                problem = accepted_routing_problem(event.payload, event.node, self.tree, catalogue)
            else:
                assert genesis is not None
                matter = str(genesis.payload.get("matter_code"))
                problem = transfer_problem(matter, event.payload.get("new_handling_node"), self.tree, catalogue)
            if problem is None:
                return None
        if number is None:
            problem = f"routing agrees with no catalogue version held here (the event names none): {problem}"
        return f"{problem} / 流转不符合事项目录"

    def _age_s(self, event: Event) -> float:
        return self.now() - event.timestamp.wall_ms / 1000

    def admission_problem(self, event: Event) -> str | None:
        """What makes ``event`` unacceptable whatever its signature: a clock far ahead, a squatted number."""
        if -self._age_s(event) > self.max_ahead_s:
            return f"stamped {event.timestamp.iso}, more than {self.max_ahead_s:.0f} s ahead of this node / 时间戳超前"
        if event.type in GENESIS_TYPES and not owns_case_number(event.node, event.case_no):
            return f"case number {event.case_no} was not issued by {event.node} / 案件编号不属于该节点"
        for key in ("accepting_node", "handling_node", "new_handling_node"):
            target = event.payload.get(key)
            if key in event.payload and (not isinstance(target, str) or target not in self.tree):
                return f"payload.{key} {str(target)[:40]!r} is not a node / 节点代码不存在"
        if event.node not in self.tree:
            return f"written by {event.node}, which is not a node / 节点代码不存在"
        return None

    def _check_doc(self, case_no: str, doc: Doc, result: VerifiedCase) -> Event | None:
        try:
            event = Event.from_doc(doc)
        except DomainError as exc:
            result.quarantined.append(
                Quarantined(str(doc.get("_id", "?"))[:200], case_no, str(doc.get("node"))[:64], exc.message_en[:500])
            )
            return None
        problem = self.admission_problem(event) or self.signature_problem(event)
        if problem == _PENDING:
            if self._waited_s(event) <= self.max_undecided_s:
                result.pending.append(event.doc_id)
                return None
            problem = (
                f"{UNDECIDED}the signer's certificate did not arrive within {self.max_undecided_s:.0f} s"
                " / 签名证书迟迟未到达"
            )
            result.retry.append(event.doc_id)
        if problem:
            result.quarantined.append(Quarantined(event.doc_id, case_no, event.node, problem))
            return None
        return event

    def verify_docs(self, case_no: str, docs: list[Doc]) -> VerifiedCase:
        result = VerifiedCase(case_no)
        candidates: list[Event] = []
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("_deleted"):
                continue
            try:
                event = self._check_doc(case_no, doc, result)
            except StoreUnavailable:
                raise  # the store, not the document, is at fault: decide later
            except Exception as exc:  # one hostile document must never fail the case or the process
                reason = f"unverifiable: {type(exc).__name__} / 无法校验"
                result.quarantined.append(Quarantined(str(doc.get("_id", "?"))[:200], case_no, "?", reason))
                continue
            if event is not None:
                candidates.append(event)
        candidates = self._routed(case_no, candidates, result)
        if candidates and not any(e.type in GENESIS_TYPES for e in candidates):
            # An orphan: its case's first event has not arrived. Wait a while, then condemn it.
            waiting = [e for e in candidates if self._waited_s(e) <= self.max_undecided_s]
            reason = (
                f"{UNDECIDED}the case's first event did not arrive within {self.max_undecided_s:.0f} s"
                " / 案件受理记录缺失"
            )
            condemned = [e for e in candidates if e not in waiting]
            result.quarantined.extend(Quarantined(e.doc_id, case_no, e.node, reason) for e in condemned)
            result.retry.extend(e.doc_id for e in condemned)
            result.pending.extend(e.doc_id for e in waiting)
            return result
        chain = verify_chain(candidates)
        result.missing_predecessors = sorted(chain.missing_hashes)
        broken = {issue.event_id: issue for issue in chain.broken}
        for event in candidates:
            if event.doc_id in broken:
                issue = broken[event.doc_id]
                result.quarantined.append(
                    Quarantined(event.doc_id, case_no, event.node, f"hash chain broken: {issue.problem} / 哈希链断裂")
                )
            else:
                result.events.append(event)
        return result

    def _routed(self, case_no: str, candidates: list[Event], result: VerifiedCase) -> list[Event]:
        """The candidates whose routing agrees with the catalogue; the others quarantined or waiting.

        First events are checked first: a transfer is checked against the matter of the first event
        that stays (a case whose first event goes is an orphan for the caller to wait on).
        """
        if self.catalogues is None:
            return candidates
        kept: list[Event] = []
        for phase in (GENESIS_TYPES, None):
            genesis = min(
                (e for e in kept if e.type in GENESIS_TYPES and e.prev_hash is None),
                key=lambda e: (e.hlc, e.hash),
                default=None,
            )
            for event in candidates:
                if (event.type in GENESIS_TYPES) != (phase is not None):
                    continue
                problem = self.routing_problem(event, genesis)
                if problem == _PENDING:
                    if self._waited_s(event) <= self.max_undecided_s:
                        result.pending.append(event.doc_id)
                        continue
                    number = routed_by(event)
                    problem = (
                        f"{UNDECIDED}catalogue version {number} named by the event did not arrive within "
                        f"{self.max_undecided_s:.0f} s / 事项目录版本迟迟未到达"
                    )
                    result.retry.append(event.doc_id)
                if problem:
                    result.quarantined.append(Quarantined(event.doc_id, case_no, event.node, problem))
                    continue
                kept.append(event)
        return kept

    def verified_case(self, case_no: str) -> VerifiedCase:
        return self.verify_docs(case_no, self.events.case_docs(case_no))
