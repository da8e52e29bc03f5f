"""Case events: the immutable documents a case is made of, their hashes and their hash chain.

A case is never edited. Each change — accepted, routed, approved, delivered, … — is a new
:class:`Event` document written once by one node and replicated unchanged, so replication can never
create conflicts on it (ARCHITECTURE §3). Every event names the hash of the previous event of its case
*as the writer knew it* (``prev_hash``), the writer's hybrid-logical-clock timestamp (``hlc``, see
:mod:`node.domain.hlc`) and, once the signing adapter has done its job, the writing node's signature over
:func:`event_hash`.

- :func:`canonical_bytes` / :func:`event_hash`: canonical JSON (sorted keys, no whitespace, UTF-8, no
  ASCII escaping) of every field except ``signature``, and its SHA-256 in hex. The signature covers the
  hash; the hash covers everything else.
- :func:`event_doc_id`: ``event:<case_no>:<hlc>`` — a case's events are contiguous in the document-id
  order and sorted by clock within it (:func:`event_id_range` gives the key range).
- :meth:`Event.to_doc` / :meth:`Event.from_doc`: the CouchDB JSON document (``doc_type: "event"``).
- :func:`verify_chain`: checks a case's events link up; a predecessor that has not arrived yet is
  *missing* (wait for replication), anything else wrong is *broken* (quarantine).

The meaning of each event type — which state it may follow and which node may write it — lives in
:mod:`node.domain.case`. This module checks only the shape of an event and of its payload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from node.domain.errors import DomainError, ErrorKind
from node.domain.hlc import NODE_PATTERN, Timestamp

__all__ = [
    "BAD_EVALUATION_LEVELS",
    "CATALOGUE_VERSION",
    "DELIVERY_METHODS",
    "EVALUATION_LEVELS",
    "FLAG_LEVELS",
    "GENESIS_TYPES",
    "MAX_EVENT_WALL_MS",
    "ChainCheck",
    "ChainIssue",
    "Event",
    "EventType",
    "canonical_bytes",
    "canonical_json",
    "event_doc_id",
    "event_hash",
    "event_id_range",
    "owns_case_number",
    "parse_event_doc_id",
    "payload_problems",
    "routed_by",
    "verify_chain",
]

DOC_TYPE = "event"
ID_PREFIX = "event:"


class EventType(StrEnum):
    """What happened to a case. The values are stored in documents: never rename them."""

    ACCEPTED = "accepted"  # 受理: the first event of a case
    REFUSED = "refused"  # 不予受理: the first (and last) event of a case that was not accepted
    SETTLED = "settled"  # 即办件: approved and handed over on the spot
    ROUTED = "routed"  # sent to the handling node
    RECEIVED = "received"  # the handling node took it in (签收)
    SUPPLEMENT_REQUESTED = "supplement_requested"  # 补正: pauses the clock
    SUPPLEMENT_PROVIDED = "supplement_provided"  # resumes it, with a new deadline
    APPROVED = "approved"
    REJECTED = "rejected"
    RESULT_RECORDED = "result_recorded"
    DELIVERED = "delivered"  # 送达
    TRANSFERRED = "transferred"  # 转办: to another handling node
    WITHDRAWAL_REQUESTED = "withdrawal_requested"
    WITHDRAWN = "withdrawn"
    EVALUATED = "evaluated"  # 好差评
    DEADLINE_FLAGGED = "deadline_flagged"  # 预警 / 黄牌 / 红牌
    JOINT_SESSION_SCHEDULED = "joint_session_scheduled"  # 多图联审 / 联合验收: the lead sets the session
    # Results without a trip (issue 15): fees, the sealed result, postal delivery.
    PAYMENT_REQUESTED = "payment_requested"  # a payment order (缴款码) was issued for the case's fees
    PAYMENT_UPDATED = "payment_updated"  # the order's state changed (paid, failed, closed, refunded, …)
    RESULT_SEALED = "result_sealed"  # the result document was sealed; the PDF travels sealed (encrypted)
    POST_ORDERED = "post_ordered"  # a courier waybill was created for the result
    POST_TRACKED = "post_tracked"  # a tracking step of that waybill (from a verified callback or a poll)
    RECEIPT_ISSUED = "receipt_issued"  # the sealed electronic receipt (财政电子票据) of a paid order
    LICENCE_REVOKED = "licence_revoked"  # the issuing department revoked the case's licence (signed record)
    # The applicant's face verification and the library materials the case reuses, written by the accepting
    # node right after the first event and naming its hash (issue 12; never the photo).
    IDENTITY_VERIFIED = "identity_verified"


GENESIS_TYPES = frozenset({EventType.ACCEPTED, EventType.REFUSED})
DELIVERY_METHODS = ("window", "post", "electronic")
FLAG_LEVELS = ("warning", "yellow", "red")
# GB/T 39734: five levels, 4 and 5 are bad reviews that open a fix-and-follow-up loop.
EVALUATION_LEVELS = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}
BAD_EVALUATION_LEVELS = frozenset({4, 5})
# The payload field naming the catalogue version an ``accepted`` or ``transferred`` event was routed by
# (signed with the rest of the payload). Events written before it existed lack it: see
# docs/threat-model.md for how they are checked.
CATALOGUE_VERSION = "catalogue_version"
MAX_CATALOGUE_VERSION = 1_000_000_000
ROUTED_TYPES = frozenset({EventType.ACCEPTED, EventType.TRANSFERRED})
PAYMENT_STATES = (
    "created",
    "paying",
    "succeeded",
    "failed",
    "cancelled",
    "closed",
    "refunding",
    "partially_refunded",
    "refunded",
)
POST_CODES = (
    "created",
    "picked_up",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "delivery_failed",
    "returned",
    "cancelled",
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_CASE_NO = re.compile(r"^[^\s:]{1,80}$")
# The last millisecond of year 9999: a clock beyond it cannot be shown as a date (OverflowError), so an
# event carrying one is malformed, not a crash.
MAX_EVENT_WALL_MS = 253_402_300_799_999


def _malformed(detail_zh: str, detail_en: str) -> DomainError:
    return DomainError(
        "malformed_event", f"事件格式不正确：{detail_zh}", f"malformed event: {detail_en}", ErrorKind.INVALID
    )


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no ASCII escaping, no NaN/Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _normalise_payload(payload: Any) -> dict[str, Any]:
    """A private deep copy that survives a JSON round trip unchanged (tuples become lists, …)."""
    if not isinstance(payload, Mapping):
        raise _malformed("payload 必须是对象", f"payload must be a JSON object, got {type(payload).__name__}")
    try:
        copied = json.loads(canonical_json(dict(payload)))
    except (TypeError, ValueError) as exc:
        raise _malformed("payload 不能转换为 JSON", f"payload is not JSON-able ({exc})") from None
    return copied


@dataclass(frozen=True, kw_only=True)
class Event:
    """One immutable case event. ``payload`` is a private JSON-normalised copy: never mutate it.

    ``hlc`` is the writer's clock reading as :meth:`Timestamp.to_str`; its node part must be ``node``.
    ``signature`` (``{"alg", "signer", "cert_sha256", "value"}``) is filled in by the signing adapter and is
    the only field :func:`event_hash` leaves out.
    """

    case_no: str
    type: EventType
    actor_id: str
    actor_role: str
    node: str
    hlc: str
    prev_hash: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    signature: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.case_no, str) or not _CASE_NO.match(self.case_no):
            raise _malformed(
                "案件编号不能为空且不能含空白或冒号",
                f"case_no must be non-empty without spaces or ':', got {self.case_no!r}",
            )
        try:
            object.__setattr__(self, "type", EventType(self.type))
        except ValueError:
            raise _malformed(f"未知的事件类型 {self.type!r}", f"unknown event type {self.type!r}") from None
        for name in ("actor_id", "actor_role"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise _malformed(f"{name} 不能为空", f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.node, str) or not NODE_PATTERN.match(self.node):
            raise _malformed(f"节点代码 {self.node!r} 不正确", f"node must be a node code, got {self.node!r}")
        try:
            stamp = Timestamp.parse(self.hlc)
        except DomainError:
            raise _malformed(f"时间戳 {self.hlc!r} 不正确", f"hlc must be a clock string, got {self.hlc!r}") from None
        if stamp.wall_ms > MAX_EVENT_WALL_MS:
            raise _malformed("时间戳超出公元 9999 年", f"the hlc {self.hlc!r} lies past the year 9999")
        if stamp.node != self.node:
            raise _malformed(
                f"时间戳节点 {stamp.node} 与写入节点 {self.node} 不一致",
                f"the hlc was stamped by {stamp.node}, not by the writing node {self.node}",
            )
        if self.prev_hash is not None and (not isinstance(self.prev_hash, str) or not _HEX64.match(self.prev_hash)):
            raise _malformed(
                "prev_hash 必须是 64 位十六进制",
                f"prev_hash must be null or 64 lowercase hex digits, got {self.prev_hash!r}",
            )
        object.__setattr__(self, "payload", _normalise_payload(self.payload))
        if self.signature is not None:
            if not isinstance(self.signature, Mapping):
                raise _malformed(
                    "签名必须是对象", f"signature must be null or an object, got {type(self.signature).__name__}"
                )
            try:
                object.__setattr__(self, "signature", json.loads(canonical_json(dict(self.signature))))
            except (TypeError, ValueError) as exc:
                raise _malformed("签名不能转换为 JSON", f"signature is not JSON-able ({exc})") from None
        problems = payload_problems(self.type, self.payload)
        if self.type is EventType.ACCEPTED and self.payload.get("accepting_node") not in (None, self.node):
            problems.append(f"accepting_node {self.payload['accepting_node']} is not the writing node {self.node}")
        if problems:
            raise _malformed("；".join(problems), "; ".join(problems))

    def __hash__(self) -> int:
        return hash(event_hash(self))

    # --- derived values ---------------------------------------------------------------------------

    @property
    def timestamp(self) -> Timestamp:
        return Timestamp.parse(self.hlc)

    @property
    def doc_id(self) -> str:
        return event_doc_id(self.case_no, self.hlc)

    @property
    def hash(self) -> str:
        return event_hash(self)

    def with_signature(self, signature: Mapping[str, Any]) -> Event:
        """The same event with ``signature`` set (its hash does not change)."""
        return dataclasses.replace(self, signature=dict(signature))

    # --- documents --------------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        """The CouchDB document (no ``_rev``)."""
        return {
            "_id": self.doc_id,
            "doc_type": DOC_TYPE,
            **_hashed_fields(self),
            "signature": None if self.signature is None else dict(self.signature),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Event:
        """Read a CouchDB document; ``_rev``, ``_revisions`` and other ``_`` fields are ignored.

        Raises ``DomainError("malformed_event")`` for anything that is not a well-formed event document,
        including one whose ``_id`` does not match its case number and clock.
        """
        if not isinstance(doc, Mapping):
            raise _malformed("文档必须是对象", f"a document must be an object, got {type(doc).__name__}")
        if doc.get("doc_type") != DOC_TYPE:
            raise _malformed("不是事件文档", f"doc_type is {doc.get('doc_type')!r}, not {DOC_TYPE!r}")
        required = ("case_no", "type", "actor_id", "actor_role", "node", "hlc", "payload")
        absent = [name for name in required if name not in doc]
        if absent:
            raise _malformed(f"缺少字段 {', '.join(absent)}", f"missing field(s) {', '.join(absent)}")
        event = cls(
            case_no=doc["case_no"],
            type=doc["type"],
            actor_id=doc["actor_id"],
            actor_role=doc["actor_role"],
            node=doc["node"],
            hlc=doc["hlc"],
            prev_hash=doc.get("prev_hash"),
            payload=doc["payload"],
            signature=doc.get("signature"),
        )
        if "_id" in doc and doc["_id"] != event.doc_id:
            raise _malformed(
                f"文档编号 {doc['_id']!r} 与案件编号和时间戳不符",
                f"_id {doc['_id']!r} does not match case_no and hlc (expected {event.doc_id!r})",
            )
        return event


def _hashed_fields(event: Event) -> dict[str, Any]:
    return {
        "case_no": event.case_no,
        "type": str(event.type),
        "actor_id": event.actor_id,
        "actor_role": event.actor_role,
        "node": event.node,
        "hlc": event.hlc,
        "prev_hash": event.prev_hash,
        "payload": event.payload,
    }


def canonical_bytes(event: Event) -> bytes:
    """Canonical JSON (UTF-8) of every field of ``event`` except ``signature``."""
    return canonical_json(_hashed_fields(event)).encode("utf-8")


def event_hash(event: Event) -> str:
    """Hex SHA-256 of :func:`canonical_bytes`; what the signature covers and what ``prev_hash`` names."""
    return hashlib.sha256(canonical_bytes(event)).hexdigest()


# --- document ids -------------------------------------------------------------------------------------


def event_doc_id(case_no: str, hlc_str: str) -> str:
    """``event:<case_no>:<hlc>``: a case's events are contiguous and in clock order by id."""
    return f"{ID_PREFIX}{case_no}:{hlc_str}"


def owns_case_number(node: str, case_no: str) -> bool:
    """Whether ``case_no`` was issued by ``node``: numbers are ``<node>-<YYYYMMDD>-<serial>``."""
    return case_no.startswith(f"{node}-")


def event_id_range(case_no: str) -> tuple[str, str]:
    """``(startkey, endkey)`` covering exactly the event documents of ``case_no``."""
    prefix = f"{ID_PREFIX}{case_no}:"
    return prefix, prefix + "\ufff0"


def parse_event_doc_id(doc_id: str) -> tuple[str, str]:
    """``(case_no, hlc_str)`` from an event document id; raises ``DomainError("malformed_event")``."""
    if isinstance(doc_id, str) and doc_id.startswith(ID_PREFIX):
        case_no, sep, hlc_str = doc_id[len(ID_PREFIX) :].partition(":")
        if sep and _CASE_NO.match(case_no):
            try:
                Timestamp.parse(hlc_str)
            except DomainError:
                pass
            else:
                return case_no, hlc_str
    raise _malformed(f"不是事件文档编号：{doc_id!r}", f"not an event document id: {doc_id!r}")


# --- payload shapes -----------------------------------------------------------------------------------


def _text(payload: Mapping[str, Any], key: str, problems: list[str], *, required: bool = True) -> None:
    value = payload.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        problems.append(f"payload.{key} must be a non-empty string")


def _iso_date(payload: Mapping[str, Any], key: str, problems: list[str], *, required: bool = False) -> None:
    value = payload.get(key)
    if value is None:
        if required:
            problems.append(f"payload.{key} is required (YYYY-MM-DD)")
        return
    try:
        if not isinstance(value, str) or not _ISO_DATE.match(value):
            raise ValueError
        date.fromisoformat(value)
    except ValueError:
        problems.append(f"payload.{key} must be a date YYYY-MM-DD, got {value!r}")


def _one_of(
    payload: Mapping[str, Any], key: str, allowed: Iterable[Any], problems: list[str], *, required: bool = True
) -> None:
    value = payload.get(key)
    if value is None and not required:
        return
    options = tuple(allowed)
    if isinstance(value, bool) or value not in options:
        problems.append(f"payload.{key} must be one of {', '.join(map(str, options))}, got {value!r}")


def payload_problems(event_type: EventType | str, payload: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``payload`` for an event of ``event_type`` (English, empty when fine).

    Only the fields the fold relies on are checked; extra fields are allowed.
    """
    kind = EventType(event_type)
    problems: list[str] = []
    if CATALOGUE_VERSION in payload:
        version = payload[CATALOGUE_VERSION]
        if (
            isinstance(version, bool)
            or not isinstance(version, int)
            or not 1 <= version <= MAX_CATALOGUE_VERSION
            or kind not in ROUTED_TYPES
        ):
            problems.append(f"payload.{CATALOGUE_VERSION} must be a catalogue version (accepted/transferred only)")
    if kind is EventType.ACCEPTED:
        for key in ("matter_code", "accepting_node", "handling_node"):
            _text(payload, key, problems)
        if not isinstance(payload.get("applicant"), Mapping):
            problems.append("payload.applicant must be an object")
        _iso_date(payload, "deadline", problems)
        days = payload.get("promised_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
            problems.append(f"payload.promised_days must be a non-negative integer, got {days!r}")
        if payload.get("materials") is not None and not isinstance(payload["materials"], list):
            problems.append("payload.materials must be a list")
    elif kind in (EventType.REFUSED, EventType.SUPPLEMENT_REQUESTED, EventType.REJECTED):
        _text(payload, "reason", problems)
    elif kind is EventType.SETTLED:
        _one_of(payload, "method", DELIVERY_METHODS, problems, required=False)
    elif kind is EventType.ROUTED:
        _text(payload, "handling_node", problems)
    elif kind is EventType.SUPPLEMENT_PROVIDED:
        _iso_date(payload, "deadline", problems)
    elif kind is EventType.RESULT_RECORDED:
        _text(payload, "summary", problems)
        _text(payload, "certificate_id", problems, required=False)
    elif kind is EventType.DELIVERED:
        _one_of(payload, "method", DELIVERY_METHODS, problems)
    elif kind is EventType.TRANSFERRED:
        _text(payload, "new_handling_node", problems)
        _text(payload, "reason", problems)
    elif kind is EventType.EVALUATED:
        _one_of(payload, "level", EVALUATION_LEVELS, problems)
    elif kind is EventType.DEADLINE_FLAGGED:
        _one_of(payload, "level", FLAG_LEVELS, problems)
    elif kind is EventType.JOINT_SESSION_SCHEDULED:
        _iso_date(payload, "date", problems)
        _one_of(payload, "mode", ("onsite", "online"), problems)
        _text(payload, "place", problems)
        departments = payload.get("departments")
        if not isinstance(departments, list) or not all(isinstance(d, str) for d in departments):
            problems.append("payload.departments must be a list of department codes")
    elif kind in (EventType.PAYMENT_REQUESTED, EventType.PAYMENT_UPDATED):
        _text(payload, "order_id", problems)
        _one_of(payload, "state", PAYMENT_STATES, problems)
        total = payload.get("total_fen")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            problems.append(f"payload.total_fen must be a non-negative integer, got {total!r}")
    elif kind in (EventType.RESULT_SEALED, EventType.RECEIPT_ISSUED):
        for key in ("document_id", "issuer", "sealed_pdf"):
            _text(payload, key, problems)
    elif kind is EventType.LICENCE_REVOKED:
        _text(payload, "identifier", problems)
        _text(payload, "reason", problems)
        if not isinstance(payload.get("signed"), Mapping):
            problems.append("payload.signed must be an object (the signed revocation record)")
    elif kind is EventType.POST_ORDERED:
        _text(payload, "waybill_no", problems)
    elif kind is EventType.POST_TRACKED:
        _text(payload, "waybill_no", problems)
        _one_of(payload, "code", POST_CODES, problems)
        seq = payload.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            problems.append(f"payload.seq must be a positive integer, got {seq!r}")
    elif kind is EventType.IDENTITY_VERIFIED:
        _identity_problems(payload, problems)
    return problems


def routed_by(event: Event) -> int | None:
    """The catalogue version an accepted or transferred event names (None: written before versions were named)."""
    version = event.payload.get(CATALOGUE_VERSION)
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _identity_problems(payload: Mapping[str, Any], problems: list[str]) -> None:
    """The shape of an ``identity_verified`` payload: a verification (or none) and a bounded list of links."""
    verification = payload.get("verification")
    if verification is not None:
        if not isinstance(verification, Mapping):
            problems.append("payload.verification must be an object")
        else:
            if not isinstance(verification.get("match"), bool):
                problems.append("payload.verification.match must be true or false")
            for key in ("distance", "threshold"):
                value = verification.get(key)
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
                    problems.append(f"payload.verification.{key} must be a number in [0, 10]")
            _text(verification, "model", problems)
            _text(verification, "channel", problems)
    links = payload.get("material_links")
    if links is not None and (
        not isinstance(links, list) or len(links) > 100 or not all(isinstance(link, Mapping) for link in links)
    ):
        problems.append("payload.material_links must be a list of at most 100 objects")
    application = payload.get("application_hash")
    if not isinstance(application, str) or not _HEX64.match(application):
        problems.append("payload.application_hash must be the first event's hash (64 hex digits)")


# --- the hash chain -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainIssue:
    """One problem with one event: ``problem`` is a stable code, ``detail`` English prose."""

    event_id: str
    event_hash: str
    problem: str
    detail: str
    predecessor: str | None = None  # the prev_hash in question, when there is one

    def __str__(self) -> str:
        return f"{self.event_id}: {self.problem}: {self.detail}"


@dataclass(frozen=True)
class ChainCheck:
    """The result of :func:`verify_chain`.

    ``missing``: events whose predecessor has not arrived (``problem == "missing_predecessor"``) — hold
    them back and wait for replication. ``broken``: events that can never be valid (a second first
    event, a predecessor of another case or later than the event, …) — quarantine them.
    """

    missing: list[ChainIssue] = field(default_factory=list)
    broken: list[ChainIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.broken

    @property
    def missing_hashes(self) -> frozenset[str]:
        """The predecessor hashes to wait for."""
        return frozenset(issue.predecessor for issue in self.missing if issue.predecessor is not None)

    def problems(self) -> list[str]:
        return [str(issue) for issue in (*self.broken, *self.missing)]


def _order_key(event: Event) -> tuple[str, str]:
    return event.hlc, event_hash(event)


def verify_chain(events: Iterable[Event]) -> ChainCheck:
    """Check the hash chain of one case's events (in any order; duplicates are ignored).

    The first event by clock must be ``accepted`` or ``refused`` with ``prev_hash`` null, and no other
    event may be either. Every other event's ``prev_hash`` must be the hash of an *earlier* event of the
    same case in the set — not necessarily the latest one: a node that is not the holder may chain a
    request to an older event it knew. Signatures are not checked here.
    """
    by_hash: dict[str, Event] = {}
    for event in events:
        by_hash.setdefault(event_hash(event), event)
    ordered = sorted(by_hash.values(), key=_order_key)
    missing: list[ChainIssue] = []
    broken: list[ChainIssue] = []
    if not ordered:
        return ChainCheck()

    counts = Counter(e.case_no for e in ordered)
    case_no = min(counts, key=lambda no: (-counts[no], no))  # the majority's case; the others are strays
    genesis = next(
        (e for e in ordered if e.type in GENESIS_TYPES and e.prev_hash is None and e.case_no == case_no), None
    )

    def issue(event: Event, problem: str, detail: str) -> ChainIssue:
        return ChainIssue(event.doc_id, event_hash(event), problem, detail, event.prev_hash)

    for event in ordered:
        if event.case_no != case_no:
            broken.append(issue(event, "wrong_case", f"belongs to case {event.case_no}, not {case_no}"))
        elif event is genesis:
            continue
        elif event.type in GENESIS_TYPES and event.prev_hash is not None:
            broken.append(issue(event, "genesis_with_predecessor", f"a {event.type} event must not name a predecessor"))
        elif event.type in GENESIS_TYPES:
            broken.append(issue(event, "second_genesis", f"a {event.type} event can only be the first event of a case"))
        elif event.prev_hash is None:
            broken.append(issue(event, "no_predecessor", f"a {event.type} event must name its predecessor"))
        elif genesis is not None and _order_key(event) < _order_key(genesis):
            broken.append(issue(event, "before_genesis", f"stamped {event.hlc}, before the first event {genesis.hlc}"))
        elif event.prev_hash not in by_hash:
            missing.append(issue(event, "missing_predecessor", f"waits for predecessor {event.prev_hash}"))
        else:
            previous = by_hash[event.prev_hash]
            if previous.case_no != event.case_no:
                broken.append(issue(event, "foreign_predecessor", f"predecessor belongs to case {previous.case_no}"))
            elif _order_key(previous) >= _order_key(event):
                broken.append(
                    issue(
                        event, "predecessor_not_earlier", f"predecessor {previous.hlc} is not earlier than {event.hlc}"
                    )
                )
    return ChainCheck(missing=missing, broken=broken)
