"""Who may write what across a link: a parent's check of what a child pushes, a child's check of what its parent sends.

A node writes only what it may author: its own events (and its subtree's, relayed), its own
certificate and heartbeat. Events and certificates are immutable — one first revision, never a new
one, never a deletion — so nothing received can change or hide a document already held. A child
never sends the catalogue (nor its kept versions ``catalogue:v<N>``), the revocation list ``crl``, nor
anything outside these namespaces; a parent never sends heartbeats. What a parent sends of the
city's documents must verify and must not take a node back: a catalogue or revocation list not newer
than the one held is refused (the same one again is a no-op).
Every document is bounded and validated before it is written; what fails is refused with a reason
(:class:`Refusal`), never written, and the caller records it for city operations
(docs/threat-model.md lists the rules).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from node.adapters.catalogue_doc import catalogue_problem, content_digest, document_version, parse_version_doc_id
from node.adapters.eventstore import HEX64, MAX_AHEAD_S, Quarantined
from node.adapters.pki import certificate_doc, verify_certificate, verify_department_certificate
from node.adapters.pki.revocation import CRL_DOC, crl_digest, crl_problem, parse_crl
from node.domain.errors import DomainError
from node.domain.events import GENESIS_TYPES, Event, owns_case_number, parse_event_doc_id
from node.domain.hlc import NODE_PATTERN, Timestamp
from sync.registers import is_register, register_problem
from tiers import DivisionTree

Doc = dict[str, Any]
MAX_DOC_BYTES = 1024 * 1024  # an event or certificate is a few kB; materials travel by reference
MAX_ID_CHARS = 300
REV = re.compile(r"^([1-9][0-9]{0,8})-[0-9a-f]{32}$")
_ID = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,300}$")
CATALOGUE_ID = "catalogue"
# Refusals recorded one by one per request; beyond this a single summary row stands for the rest.
MAX_RECORDED_REFUSALS = 50
# What _problem answers for a document that is neither written nor refused: the same one is held already.
_NO_OP = ""


@dataclass(frozen=True)
class Refusal:
    doc_id: str
    rev: str
    peer: str  # the node that sent the document
    reason: str

    def as_quarantined(self) -> Quarantined:
        case_no = ""
        with contextlib.suppress(DomainError):
            case_no = parse_event_doc_id(self.doc_id)[0]
        return Quarantined(
            f"refused:{self.peer}:{self.doc_id}#{self.rev}"[:400],
            case_no,
            self.peer,
            f"refused from {self.peer} / 拒收: {self.reason}"[:500],
        )


def refusals_as_quarantine(refusals: list[Refusal]) -> list[Quarantined]:
    """What to record for city operations: one row per refusal, bounded per request."""
    rows = [r.as_quarantined() for r in refusals[:MAX_RECORDED_REFUSALS]]
    if len(refusals) > MAX_RECORDED_REFUSALS:
        first = refusals[MAX_RECORDED_REFUSALS]
        rows.append(
            Refusal(
                f"{len(refusals) - MAX_RECORDED_REFUSALS}-more-after-{first.doc_id}"[:200],
                first.rev,
                first.peer,
                f"{len(refusals) - MAX_RECORDED_REFUSALS} more documents refused in the same request",
            ).as_quarantined()
        )
    return rows


def _generation(rev: str) -> int:
    match = REV.match(rev)
    return int(match.group(1)) if match else 0


def heartbeat_node(doc_id: str) -> str | None:
    if doc_id.startswith("heartbeat:"):
        node = doc_id[len("heartbeat:") :]
        return node if NODE_PATTERN.match(node) else None
    return None


def cert_node(doc_id: str) -> str | None:
    parts = doc_id.split(":")
    if len(parts) == 3 and parts[0] == "cert" and NODE_PATTERN.match(parts[1]) and HEX64.match(parts[2]):
        return parts[1]
    return None


def event_origin(doc_id: str) -> str | None:
    """The node whose clock stamped an event id (its writer), or None for anything else."""
    try:
        return Timestamp.parse(parse_event_doc_id(doc_id)[1]).node
    except DomainError:
        return None


class LinkPolicy:
    def __init__(
        self,
        tree: DivisionTree,
        ca_pem: bytes,
        *,
        max_ahead_s: float = MAX_AHEAD_S,
        now: Callable[[], float] = time.time,
        store: Any = None,
    ) -> None:
        """``store`` (the receiving node's): where the catalogue and revocation list held are read, so
        that an older one sent again is refused; without it only their signatures are checked."""
        self.tree = tree
        self.ca_pem = ca_pem
        self.max_ahead_s = max_ahead_s
        self.now = now
        self.store = store

    # --- id level: cheap, used to answer revs_diff ------------------------------------------------

    def in_subtree(self, node: str | None, root: str) -> bool:
        return node is not None and node in self.tree and self.tree.is_in_subtree(node, root)

    def child_may_author(self, doc_id: str, child: str) -> bool:
        """Whether an id lies in a namespace ``child``'s subtree may write (its events, certificates, heartbeats)."""
        if not isinstance(doc_id, str) or not _ID.match(doc_id) or doc_id.startswith("_"):
            return False
        origin = event_origin(doc_id) or cert_node(doc_id) or heartbeat_node(doc_id)
        return self.in_subtree(origin, child)

    # --- document level ---------------------------------------------------------------------------

    def from_child(self, docs: list[Any], child: str, held: dict[str, str]) -> tuple[list[Doc], list[Refusal]]:
        return self._sort(docs, child, held, from_child=True)

    def from_parent(self, docs: list[Any], parent: str, held: dict[str, str]) -> tuple[list[Doc], list[Refusal]]:
        return self._sort(docs, parent, held, from_child=False)

    def _sort(
        self, docs: list[Any], peer: str, held: dict[str, str], *, from_child: bool
    ) -> tuple[list[Doc], list[Refusal]]:
        accepted: list[Doc] = []
        refused: list[Refusal] = []
        seen: set[str] = set()
        for doc in docs:
            doc_id = str(doc.get("_id"))[:MAX_ID_CHARS] if isinstance(doc, dict) else "?"
            rev = str(doc.get("_rev"))[:40] if isinstance(doc, dict) else "?"
            try:
                problem = self._problem(doc, peer, held, from_child, seen)
            except Exception as exc:  # a hostile document must never fail the request
                problem = f"unreadable document ({type(exc).__name__})"
            if problem is None:
                accepted.append(doc)
                seen.add(doc["_id"])
            elif problem == _NO_OP:
                seen.add(doc["_id"])
            else:
                refused.append(Refusal(doc_id, rev, peer, problem))
        return accepted, refused

    def _problem(self, doc: Any, peer: str, held: dict[str, str], from_child: bool, seen: set[str]) -> str | None:
        if not isinstance(doc, dict):
            return "not a JSON object"
        doc_id, rev = doc.get("_id"), doc.get("_rev")
        if not isinstance(doc_id, str) or not _ID.match(doc_id) or doc_id.startswith("_"):
            return "malformed or reserved document id"
        if not isinstance(rev, str) or not REV.match(rev):
            return "malformed revision"
        if doc_id in seen:
            return "the same document twice in one batch"
        if len(json.dumps(doc, ensure_ascii=False)) > MAX_DOC_BYTES:
            return f"larger than {MAX_DOC_BYTES} bytes"
        if doc.get("_attachments"):
            return "attachments are not replicated between nodes"
        if doc_id.startswith("event:"):
            return self._event_problem(doc, peer, held, from_child)
        if doc_id.startswith("cert:"):
            return self._cert_problem(doc, peer, held, from_child)
        if doc_id.startswith("heartbeat:"):
            if not from_child:
                return "heartbeats travel up only"
            node = heartbeat_node(doc_id)
            if not self.in_subtree(node, peer) or doc.get("node") != node:
                return f"a heartbeat of a node outside {peer}'s subtree"
            return "heartbeats are never deleted" if doc.get("_deleted") else None
        if doc_id == CATALOGUE_ID or parse_version_doc_id(doc_id) is not None:
            # Only the city authors the catalogue; it travels down only, signed by the city.
            if from_child:
                return "only the city publishes the catalogue"
            if doc.get("_deleted"):
                return "deletion of the catalogue"
            problem = catalogue_problem(doc, self.ca_pem, self.tree.root)
            return problem or self._replay_problem(doc, held, "catalogue version", self._catalogue_key)
        if doc_id == CRL_DOC:
            # Only the city CA signs the revocation list; it travels down only.
            if from_child:
                return "only the city CA publishes the revocation list"
            if doc.get("_deleted"):
                return "deletion of the revocation list"
            problem = crl_problem(doc, self.ca_pem)
            return problem or self._replay_problem(doc, held, "revocation list number", self._crl_key)
        if is_register(doc_id):  # issue 12: register records, authored by the city or the residence's county
            return register_problem(doc, peer, self.tree, from_child)
        return "not a document that travels between nodes"

    def _catalogue_key(self, doc: Any) -> tuple[int, str] | None:
        """(version, content digest) of a verified catalogue document, None when it does not verify."""
        if catalogue_problem(doc, self.ca_pem, self.tree.root) is not None:
            return None
        try:
            return int(document_version(doc) or 0), content_digest(doc)
        except DomainError:
            return None

    def _crl_key(self, doc: Any) -> tuple[int, str] | None:
        if crl_problem(doc, self.ca_pem) is not None:
            return None
        return parse_crl(doc).number, crl_digest(doc)

    def _replay_problem(
        self, doc: Doc, held: dict[str, str], what: str, key: Callable[[Any], tuple[int, str] | None]
    ) -> str | None:
        """Refuse what would take this node back: a version (or CRL number) not newer than the one held.

        The same version with the same content is a no-op (another revision of what is held); one held
        here that does not verify (written before signatures) may be replaced.
        """
        if self.store is None or doc["_id"] not in held:
            return None
        mine = key(self.store.get(doc["_id"]))
        if mine is None:
            return None
        theirs = key(doc)
        if theirs is None:  # verified by the caller already
            return "unverifiable"
        if theirs == mine:
            return _NO_OP
        if theirs[0] < mine[0]:
            return f"{what} {theirs[0]} is older than {mine[0]} held here (a replay)"
        if theirs[0] == mine[0]:
            return f"a different document under {what} {theirs[0]}, which is held here already"
        return None

    def _immutable_problem(self, doc: Doc, held: dict[str, str], what: str) -> str | None:
        if doc.get("_deleted"):
            return f"deletion of {what}"
        if _generation(doc["_rev"]) != 1 or len((doc.get("_revisions") or {}).get("ids") or [1]) != 1:
            return f"a new revision of {what} (written once, never changed)"
        current = held.get(doc["_id"])
        if current is not None and current != doc["_rev"]:
            return f"another version of {what} already held here"
        return None

    def _event_problem(self, doc: Doc, peer: str, held: dict[str, str], from_child: bool) -> str | None:
        problem = self._immutable_problem(doc, held, "an event")
        if problem:
            return problem
        try:
            event = Event.from_doc(doc)
        except DomainError as exc:
            return exc.message_en[:300]
        if from_child and not self.in_subtree(event.node, peer):
            return f"an event written by {event.node}, outside {peer}'s subtree"
        if not from_child and event.node not in self.tree:
            return f"an event written by {event.node}, which is not a node"
        if event.timestamp.wall_ms / 1000 - self.now() > self.max_ahead_s:
            return f"stamped {event.timestamp.iso}, more than {self.max_ahead_s:.0f} s ahead of this node"
        signature = event.signature or {}
        if signature.get("signer") != event.node or not HEX64.match(str(signature.get("cert_sha256"))):
            return "unsigned, or signed by another node, or with a malformed certificate fingerprint"
        if event.type in GENESIS_TYPES and not owns_case_number(event.node, event.case_no):
            return f"case number {event.case_no} was not issued by {event.node}"
        for key in ("accepting_node", "handling_node", "new_handling_node"):
            target = event.payload.get(key)
            if key in event.payload and (not isinstance(target, str) or target not in self.tree):
                return f"payload.{key} {str(target)[:40]!r} is not a node"
        return None

    def _cert_problem(self, doc: Doc, peer: str, held: dict[str, str], from_child: bool) -> str | None:
        problem = self._immutable_problem(doc, held, "a certificate")
        if problem:
            return problem
        node = cert_node(doc["_id"])
        if node is None:
            return "malformed certificate id"
        if from_child and not self.in_subtree(node, peer):
            return f"a certificate of {node}, outside {peer}'s subtree"
        pem = doc.get("pem")
        if not isinstance(pem, str) or len(pem) > 16_384:
            return "no certificate"
        try:
            expected = certificate_doc(pem)
            issued_at = x509.load_pem_x509_certificate(pem.encode()).not_valid_before_utc
            if "department" in expected:
                verify_department_certificate(pem, self.ca_pem, at=issued_at)
            else:
                verify_certificate(pem, self.ca_pem, at=issued_at)
        except (DomainError, ValueError) as exc:
            return f"not a certificate of the city CA ({str(exc)[:200]})"
        body = {k: v for k, v in doc.items() if not k.startswith("_")}
        if expected["_id"] != doc["_id"] or body != {k: v for k, v in expected.items() if k != "_id"}:
            return "the certificate does not match its document id"
        return None
