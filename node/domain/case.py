"""The case state machine: folding events into a case, who may do what, and which nodes hold a case.

Stages (ARCHITECTURE §8): 受理 accept → 审查 review → 决定 decide → 送达 deliver; 补正 pauses the clock;
不予受理 ends a case before it starts. A :class:`Case` is never stored as such: it is :func:`fold` of the
case's events, and every node gets the same case from the same events whatever order replication
delivered them in — the fold sorts by ``(hlc, event hash)`` first. An event that makes no sense in the
state reached (an approval after a rejection, a decision written by a node that no longer holds the
case, …) is skipped and listed in :attr:`Case.anomalies`; it never makes the fold fail.

*Single writer* (§3): only the current handling node appends state transitions (receive, request a
supplement, approve, reject, record the result, transfer, withdraw, settle). A supplement may be recorded
and the result delivered at the accepting node (the village window) or at the handling node. Any node
may append requests — a withdrawal request, an evaluation, a deadline flag — that the holder acts on.
:func:`check_command` applies the same table before a command is carried out, plus the role and
department rules, and :func:`event_type_for` says which event a permitted command appends.

:func:`scope` lists the nodes that must hold a case's documents.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import Enum, StrEnum
from typing import Any

from node.domain.errors import DomainError, ErrorKind
from node.domain.events import (
    BAD_EVALUATION_LEVELS,
    EVALUATION_LEVELS,
    GENESIS_TYPES,
    Event,
    EventType,
    event_hash,
)
from tiers import DivisionTree, UnknownDivisionError

__all__ = [
    "ACTIONS",
    "ROLES",
    "Case",
    "CaseState",
    "allowed_actions",
    "check_command",
    "check_recorded",
    "event_type_for",
    "fold",
    "scope",
]


class CaseState(StrEnum):
    ACCEPTED = "accepted"  # 受理, awaiting routing / receipt by the handling node
    IN_REVIEW = "in_review"  # 审查
    SUPPLEMENT_REQUESTED = "supplement_requested"  # 补正, the clock is paused
    APPROVED = "approved"
    REJECTED = "rejected"
    DELIVERED = "delivered"  # 送达: the result (either decision) has reached the applicant
    REFUSED = "refused"  # 不予受理
    WITHDRAWN = "withdrawn"

    @property
    def label_zh(self) -> str:
        return _STATE_LABELS[self][0]

    @property
    def label_en(self) -> str:
        return _STATE_LABELS[self][1]

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_STATE_LABELS = {
    CaseState.ACCEPTED: ("已受理", "accepted"),
    CaseState.IN_REVIEW: ("审查中", "in review"),
    CaseState.SUPPLEMENT_REQUESTED: ("待补正", "awaiting supplement"),
    CaseState.APPROVED: ("准予办理", "approved"),
    CaseState.REJECTED: ("不予办理", "rejected"),
    CaseState.DELIVERED: ("已办结送达", "delivered"),
    CaseState.REFUSED: ("不予受理", "refused"),
    CaseState.WITHDRAWN: ("已撤回", "withdrawn"),
}
_TERMINAL = frozenset({CaseState.DELIVERED, CaseState.REFUSED, CaseState.WITHDRAWN})
_OPEN = frozenset({CaseState.ACCEPTED, CaseState.IN_REVIEW, CaseState.SUPPLEMENT_REQUESTED})
_DECIDED = frozenset({CaseState.APPROVED, CaseState.REJECTED})
_ANY_STATE = frozenset(CaseState)


class _Writer(Enum):
    HOLDER = "holder"  # only the current handling node
    ACCEPTING = "accepting"  # only the accepting node
    ACCEPTING_OR_HOLDER = "accepting_or_holder"
    ANY = "any"  # a request any node holding the case may append


@dataclass(frozen=True)
class _Rule:
    states: frozenset[CaseState]
    writer: _Writer


# Which state each (non-first) event may follow and which node may write it. Shared by fold and commands.
_RULES: dict[EventType, _Rule] = {
    EventType.SETTLED: _Rule(frozenset({CaseState.ACCEPTED}), _Writer.HOLDER),
    EventType.ROUTED: _Rule(_OPEN, _Writer.ACCEPTING),
    EventType.RECEIVED: _Rule(frozenset({CaseState.ACCEPTED}), _Writer.HOLDER),
    EventType.SUPPLEMENT_REQUESTED: _Rule(frozenset({CaseState.IN_REVIEW}), _Writer.HOLDER),
    EventType.SUPPLEMENT_PROVIDED: _Rule(frozenset({CaseState.SUPPLEMENT_REQUESTED}), _Writer.ACCEPTING_OR_HOLDER),
    EventType.APPROVED: _Rule(frozenset({CaseState.IN_REVIEW}), _Writer.HOLDER),
    EventType.REJECTED: _Rule(frozenset({CaseState.IN_REVIEW, CaseState.SUPPLEMENT_REQUESTED}), _Writer.HOLDER),
    EventType.RESULT_RECORDED: _Rule(_DECIDED, _Writer.HOLDER),
    EventType.DELIVERED: _Rule(_DECIDED, _Writer.ACCEPTING_OR_HOLDER),
    EventType.TRANSFERRED: _Rule(frozenset({CaseState.ACCEPTED, CaseState.IN_REVIEW}), _Writer.HOLDER),
    EventType.WITHDRAWAL_REQUESTED: _Rule(_OPEN, _Writer.ANY),
    EventType.WITHDRAWN: _Rule(_OPEN, _Writer.HOLDER),
    EventType.EVALUATED: _Rule(_ANY_STATE, _Writer.ANY),
    EventType.DEADLINE_FLAGGED: _Rule(_OPEN, _Writer.ANY),
    EventType.JOINT_SESSION_SCHEDULED: _Rule(_OPEN, _Writer.HOLDER),
    # Results without a trip (issue 15): recorded by the node that holds the payment order, the seal or
    # the waybill — the accepting or the handling node; never changes the case's state.
    EventType.PAYMENT_REQUESTED: _Rule(_OPEN | _DECIDED, _Writer.ACCEPTING_OR_HOLDER),
    EventType.PAYMENT_UPDATED: _Rule(_ANY_STATE, _Writer.ACCEPTING_OR_HOLDER),
    EventType.RESULT_SEALED: _Rule(_DECIDED, _Writer.HOLDER),
    EventType.POST_ORDERED: _Rule(_DECIDED, _Writer.ACCEPTING_OR_HOLDER),
    EventType.POST_TRACKED: _Rule(_DECIDED | {CaseState.DELIVERED}, _Writer.ACCEPTING_OR_HOLDER),
    EventType.RECEIPT_ISSUED: _Rule(_ANY_STATE, _Writer.ACCEPTING_OR_HOLDER),
    # Only the node that issued a licence (the holder when it decided) revokes it.
    EventType.LICENCE_REVOKED: _Rule(frozenset({CaseState.APPROVED, CaseState.DELIVERED}), _Writer.HOLDER),
    # Issue 12: the accepting node records the verification right after the first event, in any state
    # that first event can leave (accepted, settled on the spot, refused).
    EventType.IDENTITY_VERIFIED: _Rule(_ANY_STATE, _Writer.ACCEPTING),
}

# --- roles and actions --------------------------------------------------------------------------------

ACCEPTOR, APPROVER, SUPERVISOR, OPS, ADMIN = "acceptor", "approver", "supervisor", "ops", "admin"
CITIZEN = "citizen"  # the applicant acting through the online hall or a kiosk
ROLES = frozenset({ACCEPTOR, APPROVER, SUPERVISOR, OPS, ADMIN, CITIZEN})
_ROLE_LABELS = {
    ACCEPTOR: "受理人员",
    APPROVER: "审批人员",
    SUPERVISOR: "监督人员",
    OPS: "运维人员",
    ADMIN: "管理员",
    CITIZEN: "申请人",
}

# action -> (zh label, roles allowed). An approver must belong to the matter's department.
_ACTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "approve": ("批准", frozenset({APPROVER})),
    "reject": ("作出不予办理决定", frozenset({APPROVER})),
    "request_supplement": ("要求补正", frozenset({APPROVER})),
    "supplement": ("登记补正材料", frozenset({ACCEPTOR, APPROVER})),
    "receive": ("接收案件", frozenset({APPROVER})),
    "record_result": ("登记办理结果", frozenset({APPROVER})),
    "deliver": ("送达", frozenset({ACCEPTOR, APPROVER})),
    "transfer": ("转办", frozenset({APPROVER, SUPERVISOR})),
    "withdraw": ("撤回申请", frozenset({ACCEPTOR, APPROVER, CITIZEN})),
    "evaluate": ("评价", frozenset({ACCEPTOR, CITIZEN})),
    "schedule_joint_session": ("安排联合审查（验收）", frozenset({APPROVER})),
}
ACTIONS = frozenset(_ACTIONS)
_ACTION_EVENTS = {
    "approve": EventType.APPROVED,
    "reject": EventType.REJECTED,
    "request_supplement": EventType.SUPPLEMENT_REQUESTED,
    "supplement": EventType.SUPPLEMENT_PROVIDED,
    "receive": EventType.RECEIVED,
    "record_result": EventType.RESULT_RECORDED,
    "deliver": EventType.DELIVERED,
    "transfer": EventType.TRANSFERRED,
    "evaluate": EventType.EVALUATED,
    "schedule_joint_session": EventType.JOINT_SESSION_SCHEDULED,
}

_METHOD_LABELS = {"window": "窗口领取", "post": "邮寄送达", "electronic": "电子送达"}
_FLAG_LABELS = {"warning": "预警", "yellow": "黄牌", "red": "红牌"}
PAYMENT_STATE_LABELS = {
    "created": ("待缴费", "awaiting payment"),
    "paying": ("支付中", "paying"),
    "succeeded": ("已缴费", "paid"),
    "failed": ("缴费失败", "payment failed"),
    "cancelled": ("缴费单已取消", "payment order cancelled"),
    "closed": ("缴费单已过期关闭", "payment order expired"),
    "refunding": ("退款处理中", "refund in progress"),
    "partially_refunded": ("已部分退款", "partially refunded"),
    "refunded": ("已退款", "refunded"),
}
POST_CODE_LABELS = {
    "created": ("已下单", "waybill created"),
    "picked_up": ("已揽收", "picked up"),
    "in_transit": ("运输中", "in transit"),
    "out_for_delivery": ("派送中", "out for delivery"),
    "delivered": ("已签收", "delivered"),
    "delivery_failed": ("投递失败", "delivery failed"),
    "returned": ("已退回", "returned to sender"),
    "cancelled": ("已取消", "cancelled"),
}


# --- the case -----------------------------------------------------------------------------------------


@dataclass
class Case:
    """A case as its events make it. Built by :func:`fold`; never stored, never edited by hand.

    ``handlers_history`` lists every handling node in order (the first one included, no repeats in a
    row). ``decision`` is ``"approved"``, ``"rejected"`` or ``None``. ``reason`` is the reason of the
    current refusal, rejection, supplement request or withdrawal. ``flags`` is the latest deadline flag.
    ``last_event_hash`` / ``last_hlc`` describe the newest event known (applied or not): the next event's
    ``prev_hash`` and the reading to :meth:`HybridLogicalClock.observe` before stamping it.
    ``updated_at`` is when the last applied event happened (ISO-8601 UTC).
    """

    case_no: str
    matter_code: str
    applicant: dict[str, Any]
    state: CaseState
    accepting_node: str
    handling_node: str
    handlers_history: list[str]
    deadline: date | None = None
    paused: bool = False
    decision: str | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None
    delivery: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    withdrawal_requested: bool = False
    flags: dict[str, Any] | None = None
    joint_session: dict[str, Any] | None = None  # the latest 联合审查/验收 session the lead scheduled
    package: dict[str, Any] | None = None  # the 一件事 package this case is a sub-case of (first event)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    last_event_hash: str = ""
    last_hlc: str = ""
    updated_at: str = ""
    accepted_at: str = ""
    materials: list[Any] = field(default_factory=list)
    location_code: str | None = None
    promised_days: int | None = None
    handling_type: str | None = None
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    # Hashes named as ``prev_hash`` by events here but held by no event here: a withheld or not yet
    # replicated step of the history. The case is shown as incomplete until they arrive.
    missing_predecessors: list[str] = field(default_factory=list)
    # Issue 15: the latest payment order, the sealed result document (never the PDF itself), the post.
    payment: dict[str, Any] | None = None
    sealed_result: dict[str, Any] | None = None
    post: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None
    # Issue 12: the face verification recorded on the case (distance, threshold, model, channel, never a
    # photo) and the library materials it reuses (links, never copies).
    identity_verification: dict[str, Any] | None = None
    material_links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        """Whether the history has a gap (an event names a predecessor this node does not hold)."""
        return bool(self.missing_predecessors)

    @property
    def holder(self) -> str:
        """The node that may append state transitions: the current handling node."""
        return self.handling_node


def _iso_date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else None


def _summary(event: Event) -> tuple[str, str]:
    p = event.payload
    kind = event.type
    if kind is EventType.ACCEPTED:
        return f"受理申请（事项 {p['matter_code']}）", f"application accepted (matter {p['matter_code']})"
    if kind is EventType.REFUSED:
        return f"不予受理：{p['reason']}", f"refused: {p['reason']}"
    if kind is EventType.SETTLED:
        return "即办件，当场办结", "settled on the spot"
    if kind is EventType.ROUTED:
        return f"流转至 {p['handling_node']} 办理", f"routed to {p['handling_node']}"
    if kind is EventType.RECEIVED:
        return f"{event.node} 接收案件", f"received by {event.node}"
    if kind is EventType.SUPPLEMENT_REQUESTED:
        return f"要求补正：{p['reason']}", f"supplement requested: {p['reason']}"
    if kind is EventType.SUPPLEMENT_PROVIDED:
        if p.get("deadline"):
            return f"已补正，办理时限至 {p['deadline']}", f"supplement provided; new deadline {p['deadline']}"
        return "已补正", "supplement provided"
    if kind is EventType.APPROVED:
        return "审查通过，准予办理", "approved"
    if kind is EventType.REJECTED:
        return f"不予办理：{p['reason']}", f"rejected: {p['reason']}"
    if kind is EventType.RESULT_RECORDED:
        return f"办理结果：{p['summary']}", f"result: {p['summary']}"
    if kind is EventType.DELIVERED:
        return f"已送达（{_METHOD_LABELS[p['method']]}）", f"delivered ({p['method']})"
    if kind is EventType.TRANSFERRED:
        target, why = p["new_handling_node"], p["reason"]
        return f"转办至 {target}：{why}", f"transferred to {target}: {why}"
    if kind is EventType.WITHDRAWAL_REQUESTED:
        return "申请撤回", "withdrawal requested"
    if kind is EventType.WITHDRAWN:
        return "已撤回", "withdrawn"
    if kind is EventType.EVALUATED:
        return f"评价：{EVALUATION_LEVELS[p['level']]}", f"evaluated: level {p['level']}"
    if kind is EventType.JOINT_SESSION_SCHEDULED:
        where = "线上" if p["mode"] == "online" else p["place"]
        return f"安排联合审查：{p['date']}，{where}", f"joint session on {p['date']}, {p['place']} ({p['mode']})"
    if kind in (EventType.PAYMENT_REQUESTED, EventType.PAYMENT_UPDATED):
        yuan = f"{p['total_fen'] // 100}.{p['total_fen'] % 100:02d}"
        if kind is EventType.PAYMENT_REQUESTED:
            return f"开具缴款码，应缴 ¥{yuan}", f"payment order issued: CNY {yuan}"
        label_zh, label_en = PAYMENT_STATE_LABELS[p["state"]]
        return f"{label_zh}（¥{yuan}）", f"{label_en} (CNY {yuan})"
    if kind is EventType.RESULT_SEALED:
        return f"结果文书已加盖电子印章（{p['document_id']}）", f"result document sealed ({p['document_id']})"
    if kind is EventType.LICENCE_REVOKED:
        return f"电子证照已注销：{p['reason']}", f"licence revoked: {p['reason']}"
    if kind is EventType.RECEIPT_ISSUED:
        return f"开具电子缴款票据（{p['document_id']}）", f"electronic receipt issued ({p['document_id']})"
    if kind is EventType.POST_ORDERED:
        return f"结果已交寄，运单号 {p['waybill_no']}", f"result posted, waybill {p['waybill_no']}"
    if kind is EventType.POST_TRACKED:
        label_zh, label_en = POST_CODE_LABELS[p["code"]]
        return f"邮件{label_zh}", f"post: {label_en}"
    if kind is EventType.IDENTITY_VERIFIED:
        return _identity_summary(p)
    return f"办理时限{_FLAG_LABELS[p['level']]}", f"deadline {p['level']} flag"


def _identity_summary(p: dict[str, Any]) -> tuple[str, str]:
    parts_zh, parts_en = [], []
    verification = p.get("verification")
    if isinstance(verification, dict):
        distance, threshold = verification.get("distance"), verification.get("threshold")
        if verification.get("match"):
            parts_zh.append(f"人脸核验通过（距离 {distance}，阈值 {threshold}）")
            parts_en.append(f"face verified (distance {distance}, threshold {threshold})")
        else:
            parts_zh.append(f"人脸核验未通过（距离 {distance}，阈值 {threshold}）")
            parts_en.append(f"face not verified (distance {distance}, threshold {threshold})")
    links = p.get("material_links") or []
    if links:
        parts_zh.append(f"复用材料库材料 {len(links)} 件")
        parts_en.append(f"{len(links)} library material(s) reused")
    return "；".join(parts_zh) or "身份核验记录", "; ".join(parts_en) or "identity record"


def _timeline_entry(event: Event, at: str) -> dict[str, Any]:
    summary_zh, summary_en = _summary(event)
    return {
        "type": str(event.type),
        "node": event.node,
        "actor_role": event.actor_role,
        "actor_id": event.actor_id,
        "at": at,
        "hlc": event.hlc,
        "summary_zh": summary_zh,
        "summary_en": summary_en,
    }


def _anomaly(event: Event, problem: str, detail: str) -> dict[str, Any]:
    return {
        "event_id": event.doc_id,
        "hash": event_hash(event),
        "type": str(event.type),
        "node": event.node,
        "hlc": event.hlc,
        "problem": problem,
        "detail": detail,
    }


def _start(event: Event, at: str) -> Case:
    p = copy.deepcopy(event.payload)  # the case must not share mutable parts with the immutable event
    refused = event.type is EventType.REFUSED
    handling = p.get("handling_node") or event.node
    return Case(
        case_no=event.case_no,
        matter_code=p.get("matter_code") or "",
        applicant=p.get("applicant") or {},
        state=CaseState.REFUSED if refused else CaseState.ACCEPTED,
        accepting_node=event.node,
        handling_node=handling,
        handlers_history=[handling],
        deadline=None if refused else _iso_date(p.get("deadline")),
        reason=p.get("reason") if refused else None,
        accepted_at=at,
        materials=p.get("materials") or [],
        location_code=p.get("location_code"),
        promised_days=p.get("promised_days"),
        handling_type=p.get("handling_type"),
        package=p["package"] if isinstance(p.get("package"), dict) else None,
    )


def _writer_ok(writer: _Writer, case: Case, node: str) -> bool:
    if writer is _Writer.HOLDER:
        return node == case.handling_node
    if writer is _Writer.ACCEPTING:
        return node == case.accepting_node
    if writer is _Writer.ACCEPTING_OR_HOLDER:
        return node in (case.accepting_node, case.handling_node)
    return True


def _rejection(case: Case, event: Event) -> tuple[str, str] | None:
    """Why ``event`` cannot apply to ``case`` (problem code, English detail), or None."""
    if event.type in GENESIS_TYPES:
        return "second_first_event", f"a case has only one {event.type} event"
    rule = _RULES[event.type]
    if case.state not in rule.states:
        return "invalid_transition", f"{event.type} is not allowed in state {case.state}"
    if not _writer_ok(rule.writer, case, event.node):
        return "not_writer", (
            f"{event.type} written by {event.node}; allowed writer: {rule.writer.value} "
            f"(accepting {case.accepting_node}, handling {case.handling_node})"
        )
    p = event.payload
    if event.type is EventType.TRANSFERRED and p["new_handling_node"] == case.handling_node:
        return "transfer_to_self", f"transfer to the current handling node {case.handling_node}"
    if event.type is EventType.ROUTED and p["handling_node"] != case.handling_node:
        return "routed_elsewhere", f"routed to {p['handling_node']}, but the handling node is {case.handling_node}"
    return None


def _apply(case: Case, event: Event, at: str) -> None:
    p = copy.deepcopy(event.payload)
    kind = event.type
    if kind is EventType.SETTLED:
        case.state, case.decision, case.reason = CaseState.DELIVERED, "approved", None
        case.result = {
            "summary": p.get("summary") or "即办件当场办结",
            "certificate_id": p.get("certificate_id"),
            "at": at,
            "node": event.node,
        }
        case.delivery = {"method": p.get("method") or "window", "at": at, "node": event.node}
    elif kind is EventType.RECEIVED:
        case.state = CaseState.IN_REVIEW
    elif kind is EventType.SUPPLEMENT_REQUESTED:
        case.state, case.paused, case.reason = CaseState.SUPPLEMENT_REQUESTED, True, p["reason"]
    elif kind is EventType.SUPPLEMENT_PROVIDED:
        case.state, case.paused, case.reason = CaseState.IN_REVIEW, False, None
        case.deadline = _iso_date(p.get("deadline")) or case.deadline
    elif kind is EventType.APPROVED:
        case.state, case.decision, case.paused, case.reason = CaseState.APPROVED, "approved", False, None
    elif kind is EventType.REJECTED:
        case.state, case.decision, case.paused, case.reason = CaseState.REJECTED, "rejected", False, p["reason"]
    elif kind is EventType.RESULT_RECORDED:
        case.result = {**p, "certificate_id": p.get("certificate_id"), "at": at, "node": event.node}
    elif kind is EventType.DELIVERED:
        case.state = CaseState.DELIVERED
        case.delivery = {**p, "at": at, "node": event.node}
    elif kind is EventType.TRANSFERRED:
        case.state, case.paused = CaseState.ACCEPTED, False
        case.handling_node = p["new_handling_node"]
        if case.handlers_history[-1] != case.handling_node:
            case.handlers_history.append(case.handling_node)
    elif kind is EventType.WITHDRAWAL_REQUESTED:
        case.withdrawal_requested = True
    elif kind is EventType.WITHDRAWN:
        case.state, case.paused, case.withdrawal_requested = CaseState.WITHDRAWN, False, False
        case.reason = p.get("reason") or case.reason
    elif kind is EventType.EVALUATED:
        level = p["level"]
        case.evaluation = {
            **p,
            "label_zh": EVALUATION_LEVELS[level],
            "bad": level in BAD_EVALUATION_LEVELS,
            "at": at,
            "node": event.node,
        }
    elif kind is EventType.DEADLINE_FLAGGED:
        case.flags = {**p, "at": at, "node": event.node}
    elif kind is EventType.JOINT_SESSION_SCHEDULED:
        case.joint_session = {**p, "at": at, "node": event.node}
    elif kind in (EventType.PAYMENT_REQUESTED, EventType.PAYMENT_UPDATED):
        same = case.payment is not None and case.payment.get("order_id") == p["order_id"]
        if kind is EventType.PAYMENT_REQUESTED or not same:
            case.payment = {**p, "at": at, "node": event.node}
        else:
            assert case.payment is not None
            case.payment = {**case.payment, **p, "at": at}
    elif kind is EventType.RESULT_SEALED:
        case.sealed_result = {
            "document_id": p["document_id"],
            "issuer": p["issuer"],
            "kind": p.get("kind"),
            "licence_id": ((p.get("licence") or {}).get("record") or {}).get("identifier"),
            "at": at,
            "node": event.node,
        }
    elif kind is EventType.LICENCE_REVOKED:
        if case.sealed_result is not None and case.sealed_result.get("licence_id") == p["identifier"]:
            case.sealed_result = {**case.sealed_result, "revoked": {"reason": p["reason"], "at": at}}
    elif kind is EventType.RECEIPT_ISSUED:
        case.receipt = {"document_id": p["document_id"], "issuer": p["issuer"], "at": at, "node": event.node}
    elif kind is EventType.POST_ORDERED:
        case.post = {"waybill_no": p["waybill_no"], "code": "created", "seq": 0, "at": at, "node": event.node}
    elif kind is EventType.POST_TRACKED:
        post = case.post or {"waybill_no": p["waybill_no"], "seq": 0}
        # Callbacks are retried and may arrive late: only a newer step of the same waybill moves the status.
        if post.get("waybill_no") == p["waybill_no"] and p["seq"] > int(post.get("seq") or 0):
            case.post = {**post, "code": p["code"], "seq": p["seq"], "at": at}
    elif kind is EventType.IDENTITY_VERIFIED:
        if isinstance(p.get("verification"), dict):
            case.identity_verification = {**p["verification"], "at": at, "node": event.node}
        case.material_links.extend(link for link in p.get("material_links") or [] if isinstance(link, dict))
    # ROUTED changes nothing but the timeline.


def fold(events: Iterable[Event]) -> Case:
    """The case that ``events`` (one case's events, any order, duplicates allowed) describe.

    Deterministic: sorts by ``(hlc, event hash)`` and applies each event in turn; an event that cannot
    apply in the state reached is recorded in ``anomalies`` and skipped. Raises ``DomainError``
    ``case_not_found`` (NOT_FOUND) for no events, ``case_incomplete`` (NOT_FOUND) when the first event
    (accepted/refused) has not arrived yet, and ``mixed_cases`` (INVALID) for events of several cases.
    """
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event_hash(event), event)
    if not unique:
        raise DomainError("case_not_found", "没有该案件的任何记录", "no events for this case", ErrorKind.NOT_FOUND)
    case_numbers = sorted({e.case_no for e in unique.values()})
    if len(case_numbers) > 1:
        raise DomainError(
            "mixed_cases",
            f"不能把多个案件的事件合并：{', '.join(case_numbers)}",
            f"cannot fold events of several cases together: {', '.join(case_numbers)}",
        )
    ordered = sorted(unique.items(), key=lambda item: (item[1].hlc, item[0]))
    start = next((i for i, (_, e) in enumerate(ordered) if e.type in GENESIS_TYPES), None)
    if start is None:
        raise DomainError(
            "case_incomplete",
            f"案件 {case_numbers[0]} 的受理记录尚未同步到本节点",
            f"the first event (accepted/refused) of case {case_numbers[0]} has not arrived yet",
            ErrorKind.NOT_FOUND,
        )
    _, first = ordered[start]
    at = first.timestamp.iso
    case = _start(first, at)
    case.timeline.append(_timeline_entry(first, at))
    case.updated_at = at
    for _, early in ordered[:start]:
        case.anomalies.append(_anomaly(early, "before_first_event", f"stamped before the first event {first.hlc}"))
    for _, event in ordered[start + 1 :]:
        rejection = _rejection(case, event)
        if rejection is not None:
            case.anomalies.append(_anomaly(event, *rejection))
            continue
        at = event.timestamp.iso
        _apply(case, event, at)
        case.timeline.append(_timeline_entry(event, at))
        case.updated_at = at
    case.last_event_hash, last = ordered[-1]
    case.last_hlc = last.hlc
    case.missing_predecessors = sorted(
        {e.prev_hash for e in unique.values() if e.prev_hash is not None and e.prev_hash not in unique}
    )
    return case


# --- commands -----------------------------------------------------------------------------------------


def event_type_for(case: Case, action: str, at_node: str) -> EventType:
    """The event a (permitted) ``action`` appends: ``withdraw`` is a request unless made at the holder."""
    if action == "withdraw":
        return EventType.WITHDRAWN if at_node == case.handling_node else EventType.WITHDRAWAL_REQUESTED
    try:
        return _ACTION_EVENTS[action]
    except KeyError:
        raise _unknown_action(action) from None


def _unknown_action(action: str) -> DomainError:
    return DomainError(
        "unknown_action",
        f"未知的操作 {action!r}",
        f"unknown action {action!r}; expected one of {', '.join(sorted(ACTIONS))}",
    )


def check_command(
    case: Case,
    action: str,
    role: str,
    actor_department: str | None,
    matter_department: str | None,
    at_node: str,
) -> None:
    """Raise ``DomainError`` unless ``role`` (of ``actor_department``) may do ``action`` on ``case`` at ``at_node``.

    Checked in this order: the action exists (INVALID ``unknown_action``); the role may do it
    (FORBIDDEN ``role_not_allowed``); an approver belongs to the matter's department (FORBIDDEN
    ``wrong_department``); this node may write it (FORBIDDEN ``not_holder``: the single-writer rule);
    the case's state allows it (CONFLICT ``invalid_transition``).
    """
    if action not in _ACTIONS:
        raise _unknown_action(action)
    action_zh, roles = _ACTIONS[action]
    if role not in roles:
        role_zh = _ROLE_LABELS.get(role, role)
        raise DomainError(
            "role_not_allowed",
            f"「{role_zh}」角色不能{action_zh}",
            f"role {role!r} may not {action.replace('_', ' ')}; allowed: {', '.join(sorted(roles))}",
            ErrorKind.FORBIDDEN,
        )
    if role == APPROVER and (not actor_department or actor_department != matter_department):
        raise DomainError(
            "wrong_department",
            f"该事项由「{matter_department or '未知部门'}」办理，"
            f"您所在部门「{actor_department or '未设置'}」无权{action_zh}",
            f"the matter belongs to department {matter_department!r}; an approver of {actor_department!r} "
            f"may not {action.replace('_', ' ')} it",
            ErrorKind.FORBIDDEN,
        )
    if action == "schedule_joint_session" and not (case.package or {}).get("joint"):
        raise DomainError(
            "not_joint",
            "只有联审联验一件事的办件可以安排联合审查",
            "only a sub-case of a joint-review package has a joint session",
            ErrorKind.CONFLICT,
        )
    kind = event_type_for(case, action, at_node)
    rule = _RULES[kind]
    if not _writer_ok(rule.writer, case, at_node):
        if rule.writer is _Writer.HOLDER:
            where_zh, where_en = f"当前办理节点 {case.handling_node}", f"the handling node {case.handling_node}"
        else:
            where_zh = f"受理节点 {case.accepting_node} 或当前办理节点 {case.handling_node}"
            where_en = f"the accepting node {case.accepting_node} or the handling node {case.handling_node}"
        raise DomainError(
            "not_holder",
            f"案件 {case.case_no} 只能在{where_zh}{action_zh}，本节点 {at_node} 不能",
            f"only {where_en} may {action.replace('_', ' ')} case {case.case_no}, not this node {at_node} "
            "(single-writer rule)",
            ErrorKind.FORBIDDEN,
        )
    if case.state not in rule.states:
        raise DomainError(
            "invalid_transition",
            f"案件 {case.case_no} 当前状态为「{case.state.label_zh}」，不能{action_zh}",
            f"case {case.case_no} is {case.state.label_en}; cannot {action.replace('_', ' ')} it now",
            ErrorKind.CONFLICT,
        )


def check_recorded(case: Case, kind: EventType, at_node: str) -> None:
    """Raise ``DomainError`` unless ``at_node`` may record a system event of ``kind`` on ``case`` now.

    For the events no person's action makes (payment, sealed result, post): the same table as
    :func:`check_command` — which state it may follow and which node may write it.
    """
    rule = _RULES[kind]
    if not _writer_ok(rule.writer, case, at_node):
        raise DomainError(
            "not_holder",
            f"本节点 {at_node} 不能为案件 {case.case_no} 记录此事项",
            f"this node {at_node} may not record {kind} on case {case.case_no}",
            ErrorKind.FORBIDDEN,
        )
    if case.state not in rule.states:
        raise DomainError(
            "invalid_transition",
            f"案件 {case.case_no} 当前状态为「{case.state.label_zh}」，不能记录此事项",
            f"case {case.case_no} is {case.state.label_en}; cannot record {kind} now",
            ErrorKind.CONFLICT,
        )


def allowed_actions(
    case: Case,
    role: str,
    department_of_matter: str | None,
    actor_department: str | None,
    at_node: str,
) -> set[str]:
    """The actions :func:`check_command` would let ``role`` do on ``case`` at ``at_node`` right now."""
    allowed = set()
    for action in ACTIONS:
        try:
            check_command(case, action, role, actor_department, department_of_matter, at_node)
        except DomainError:
            continue
        allowed.add(action)
    return allowed


# --- scope --------------------------------------------------------------------------------------------


def scope(case: Case, tree: DivisionTree) -> frozenset[str]:
    """The nodes that must hold the case's documents.

    The accepting node, every handling node the case ever had, every node on the tree path between the
    accepting node and each of them, and the city root — closed upwards: documents travel only along
    tree edges, so every ancestor of those nodes relays and holds them on their way to the city. (The
    extra nodes are the ancestors above a lowest common ancestor; "scope touches a subtree" is the same
    with or without them.) Never another village's node.
    """
    members: set[str] = {tree.root}
    try:
        for handler in (case.accepting_node, *case.handlers_history):
            members.update(tree.path_between(case.accepting_node, handler))
            members.update(tree.path_to_root(handler))
    except UnknownDivisionError as exc:
        raise DomainError(
            "unknown_node",
            f"案件 {case.case_no} 涉及未知的节点 {exc.code}",
            f"case {case.case_no} names node {exc.code}, which is not in the division tree",
        ) from None
    return frozenset(members)
