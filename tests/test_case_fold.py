"""The case fold, the command rules (roles, departments, single writer, states) and case scope."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.domain.case import (
    ACTIONS,
    Case,
    CaseState,
    allowed_actions,
    check_command,
    event_type_for,
    fold,
    scope,
)
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import Event, EventType, event_hash, verify_chain
from node.domain.hlc import HybridLogicalClock, Timestamp
from tiers import Tier, yiyang
from tiers.demo import CITY, HESHAN, ZIYANG

NANXIAN = "430921000000"  # 南县
TOWNSHIP = "430902005000"  # 大码头街道
VILLAGE = "430902005001"
NEIGHBOUR_VILLAGE = "430902005002"
HESHAN_TOWNSHIP = "430903001000"  # 赫山街道
DEPT = "市场监督管理局"
OTHER_DEPT = "公安局"
START_MS = 1_732_700_000_000  # 2024-11-27T09:33:20Z
HOUR = 3_600_000

APPLICANT = {"kind": "person", "id_masked": "430902********1234", "name": "张三", "id_hmac": "ab" * 32}


class History:
    """Writes a case's events the way nodes would: each writer observes the case's latest event first."""

    def __init__(self, case_no: str = "430902005001-20241127-1", skews: dict[str, int] | None = None) -> None:
        self.case_no = case_no
        self.now = START_MS
        self.skews = skews or {}
        self.clocks: dict[str, HybridLogicalClock] = {}
        self.events: list[Event] = []

    def clock(self, node: str) -> HybridLogicalClock:
        if node not in self.clocks:
            self.clocks[node] = HybridLogicalClock(node, lambda: max(0, self.now + self.skews.get(node, 0)))
        return self.clocks[node]

    def case(self) -> Case:
        return fold(self.events)

    def add(
        self,
        kind: EventType | str,
        node: str,
        *,
        role: str = "approver",
        after: Event | None = None,
        advance_ms: int = HOUR,
        **payload: Any,
    ) -> Event:
        """Append an event; ``after`` makes the writer know only the case up to that event."""
        self.now += advance_ms
        clock = self.clock(node)
        if after is not None:
            clock.observe(after.hlc)
            prev: str | None = event_hash(after)
        elif self.events:
            case = self.case()
            clock.observe(case.last_hlc)
            prev = case.last_event_hash
        else:
            prev = None
        event = Event(
            case_no=self.case_no,
            type=EventType(kind),
            actor_id=f"{role}-of-{node}",
            actor_role=role,
            node=node,
            hlc=clock.tick().to_str(),
            prev_hash=prev,
            payload=payload,
        )
        self.events.append(event)
        return event

    def accept(self, accepting: str = VILLAGE, handling: str = HESHAN, **extra: Any) -> Event:
        payload = {
            "matter_code": "MATTER-001",
            "applicant": APPLICANT,
            "materials": [{"code": "M1", "name": "居民身份证"}],
            "location_code": accepting,
            "accepting_node": accepting,
            "handling_node": handling,
            "deadline": "2024-12-11",
            "promised_days": 10,
            "handling_type": "promised",
            **extra,
        }
        return self.add(EventType.ACCEPTED, accepting, role="acceptor", **payload)

    def command(
        self, action: str, node: str, *, role: str = "approver", department: str = DEPT, **payload: Any
    ) -> Event:
        """Check the command against the current case, then append the event it implies."""
        case = self.case()
        check_command(case, action, role, department, DEPT, node)
        return self.add(event_type_for(case, action, node), node, role=role, **payload)


def lifecycle(skews: dict[str, int] | None = None) -> History:
    h = History(skews=skews)
    h.accept()
    h.add(EventType.ROUTED, VILLAGE, role="acceptor", advance_ms=1_000, handling_node=HESHAN)
    h.command("receive", HESHAN)
    h.command("request_supplement", HESHAN, reason="缺少房产证明复印件")
    h.command("supplement", VILLAGE, role="acceptor", deadline="2024-12-16")
    h.command("approve", HESHAN)
    h.command("record_result", HESHAN, summary="准予登记", certificate_id="CERT-0001")
    h.command("deliver", VILLAGE, role="acceptor", method="window")
    return h


# --- the fold -----------------------------------------------------------------------------------------


def test_full_lifecycle_folds_to_delivered() -> None:
    h = lifecycle()
    case = h.case()
    assert case.state is CaseState.DELIVERED
    assert case.state.label_zh == "已办结送达"
    assert case.decision == "approved"
    assert case.deadline == date(2024, 12, 16)
    assert case.paused is False
    assert case.reason is None
    assert case.matter_code == "MATTER-001"
    assert case.applicant == APPLICANT
    assert case.accepting_node == VILLAGE
    assert case.handling_node == case.holder == HESHAN
    assert case.handlers_history == [HESHAN]
    assert case.result is not None and case.result["certificate_id"] == "CERT-0001"
    assert case.result["summary"] == "准予登记"
    assert case.delivery is not None and case.delivery["method"] == "window" and case.delivery["node"] == VILLAGE
    assert case.anomalies == []
    assert case.promised_days == 10 and case.handling_type == "promised" and case.location_code == VILLAGE
    assert [entry["type"] for entry in case.timeline] == [
        "accepted",
        "routed",
        "received",
        "supplement_requested",
        "supplement_provided",
        "approved",
        "result_recorded",
        "delivered",
    ]
    assert [entry["node"] for entry in case.timeline] == [
        VILLAGE,
        VILLAGE,
        HESHAN,
        HESHAN,
        VILLAGE,
        HESHAN,
        HESHAN,
        VILLAGE,
    ]
    assert case.timeline[0]["at"] == "2024-11-27T10:33:20.000Z" == case.accepted_at
    assert case.timeline[0]["actor_role"] == "acceptor"
    assert case.timeline[3]["summary_zh"] == "要求补正：缺少房产证明复印件"
    assert case.timeline[4]["summary_zh"] == "已补正，办理时限至 2024-12-16"
    assert case.timeline[-1]["summary_zh"] == "已送达（窗口领取）"
    assert all(entry["summary_zh"] and entry["summary_en"] for entry in case.timeline)
    assert case.updated_at == case.timeline[-1]["at"]
    assert case.last_event_hash == event_hash(h.events[-1])
    assert case.last_hlc == h.events[-1].hlc
    assert verify_chain(h.events).ok


def test_supplement_pauses_and_resumes_the_clock() -> None:
    h = History()
    h.accept()
    h.command("receive", HESHAN)
    h.command("request_supplement", HESHAN, reason="缺少材料")
    paused = h.case()
    assert paused.state is CaseState.SUPPLEMENT_REQUESTED and paused.paused and paused.reason == "缺少材料"
    assert paused.deadline == date(2024, 12, 11)
    h.command("supplement", HESHAN, role="approver")  # no new deadline given: keep the old one
    resumed = h.case()
    assert resumed.state is CaseState.IN_REVIEW and not resumed.paused and resumed.reason is None
    assert resumed.deadline == date(2024, 12, 11)


def test_a_slow_handler_clock_still_sorts_after_what_it_observed() -> None:
    h = lifecycle(skews={HESHAN: -6 * HOUR})  # the county's wall clock is six hours slow
    case = h.case()
    assert case.state is CaseState.DELIVERED and case.anomalies == []
    assert [e["hlc"] for e in case.timeline] == sorted(e["hlc"] for e in case.timeline)


def test_settled_on_the_spot() -> None:
    h = History()
    h.accept(handling=VILLAGE, handling_type="instant")
    h.add(EventType.SETTLED, VILLAGE, role="acceptor", summary="当场出具证明")
    case = h.case()
    assert case.state is CaseState.DELIVERED and case.decision == "approved"
    assert case.delivery is not None and case.delivery["method"] == "window"
    assert case.result is not None and case.result["summary"] == "当场出具证明"
    assert case.anomalies == []


def test_refused_case() -> None:
    h = History()
    h.add(EventType.REFUSED, VILLAGE, role="acceptor", reason="不属于本事项受理范围", matter_code="MATTER-001")
    case = h.case()
    assert case.state is CaseState.REFUSED and case.state.terminal
    assert case.reason == "不属于本事项受理范围"
    assert case.handling_node == VILLAGE and case.handlers_history == [VILLAGE]
    assert allowed_actions(case, "acceptor", DEPT, None, VILLAGE) == {"evaluate"}
    with pytest.raises(DomainError) as caught:
        check_command(case, "withdraw", "acceptor", None, DEPT, VILLAGE)
    assert caught.value.kind is ErrorKind.CONFLICT


def test_invalid_events_are_ignored_and_recorded_as_anomalies() -> None:
    h = History()
    h.accept()
    h.command("receive", HESHAN)
    h.command("reject", HESHAN, reason="不符合条件")
    approval = h.add(EventType.APPROVED, HESHAN)  # approved after rejected
    foreign = h.add(EventType.RESULT_RECORDED, VILLAGE, summary="伪造")  # not the holder
    second = h.accept()  # a second first event
    case = h.case()
    assert case.state is CaseState.REJECTED and case.decision == "rejected" and case.reason == "不符合条件"
    assert case.result is None
    assert [(a["hash"], a["problem"]) for a in case.anomalies] == [
        (event_hash(approval), "invalid_transition"),
        (event_hash(foreign), "not_writer"),
        (event_hash(second), "second_first_event"),
    ]
    assert [entry["type"] for entry in case.timeline] == ["accepted", "received", "rejected"]
    assert case.last_event_hash == event_hash(second)  # the newest known event, applied or not


def test_a_late_request_chained_to_an_older_event_still_applies() -> None:
    h = History()
    accepted = h.accept()
    h.command("receive", HESHAN)
    h.add(EventType.WITHDRAWAL_REQUESTED, VILLAGE, role="citizen", after=accepted, reason="不再需要")
    case = h.case()
    assert case.withdrawal_requested and case.state is CaseState.IN_REVIEW and case.anomalies == []
    assert verify_chain(h.events).ok
    h.command("withdraw", HESHAN)
    done = h.case()
    assert done.state is CaseState.WITHDRAWN and not done.withdrawal_requested


def test_evaluation_and_deadline_flags() -> None:
    h = History()
    h.accept()
    h.add(EventType.DEADLINE_FLAGGED, HESHAN, role="system", level="warning")
    h.add(EventType.DEADLINE_FLAGGED, HESHAN, role="system", level="yellow")
    h.command("evaluate", VILLAGE, role="citizen", level=4, comment="等太久")
    case = h.case()
    assert case.flags is not None and case.flags["level"] == "yellow"
    assert case.evaluation is not None and case.evaluation["bad"] is True and case.evaluation["label_zh"] == "不满意"
    assert case.timeline[1]["summary_zh"] == "办理时限预警"


def test_fold_errors() -> None:
    with pytest.raises(DomainError) as caught:
        fold([])
    assert caught.value.code == "case_not_found" and caught.value.kind is ErrorKind.NOT_FOUND
    h = lifecycle()
    with pytest.raises(DomainError) as caught:
        fold(h.events[1:])
    assert caught.value.code == "case_incomplete" and caught.value.kind is ErrorKind.NOT_FOUND
    other = History(case_no="430902005001-20241127-2")
    other.accept()
    with pytest.raises(DomainError) as caught:
        fold([*h.events, *other.events])
    assert caught.value.code == "mixed_cases"


def test_transfer_changes_the_holder() -> None:
    h = History()
    h.accept()
    h.command("receive", HESHAN)
    h.command("transfer", HESHAN, new_handling_node=HESHAN_TOWNSHIP, reason="属街道权限")
    case = h.case()
    assert case.state is CaseState.ACCEPTED
    assert case.handling_node == HESHAN_TOWNSHIP
    assert case.handlers_history == [HESHAN, HESHAN_TOWNSHIP]
    with pytest.raises(DomainError) as caught:
        check_command(case, "approve", "approver", DEPT, DEPT, HESHAN)
    assert caught.value.kind is ErrorKind.FORBIDDEN and caught.value.code == "not_holder"
    stale = h.add(EventType.RECEIVED, HESHAN)  # the old holder may no longer write
    assert h.case().anomalies[-1]["hash"] == event_hash(stale)
    h.command("receive", HESHAN_TOWNSHIP)
    h.command("approve", HESHAN_TOWNSHIP)
    assert h.case().state is CaseState.APPROVED


# --- permutation invariance ---------------------------------------------------------------------------

PROGRESS = {"receive", "request_supplement", "supplement", "approve", "reject", "record_result", "deliver"}
OPEN_STATES = {CaseState.ACCEPTED, CaseState.IN_REVIEW, CaseState.SUPPLEMENT_REQUESTED}
HANDLER_POOL = [HESHAN, HESHAN_TOWNSHIP, NANXIAN, TOWNSHIP]
EXTRA_NODES = [CITY, NEIGHBOUR_VILLAGE]


def _payload_for(action: str, data: st.DataObject, case: Case) -> dict[str, Any]:
    if action in ("reject", "request_supplement", "withdraw"):
        return {"reason": data.draw(st.sampled_from(["材料不全", "不符合条件", "申请人要求"]))}
    if action == "supplement":
        return {"deadline": data.draw(st.dates(date(2024, 12, 1), date(2025, 3, 1))).isoformat()}
    if action == "record_result":
        return {"summary": "准予", "certificate_id": data.draw(st.none() | st.just("CERT-1"))}
    if action == "deliver":
        return {"method": data.draw(st.sampled_from(["window", "post", "electronic"]))}
    if action == "transfer":
        targets = [n for n in HANDLER_POOL if n != case.handling_node]
        return {"new_handling_node": data.draw(st.sampled_from(targets)), "reason": "管辖调整"}
    if action == "evaluate":
        return {"level": data.draw(st.integers(1, 5))}
    return {}


_JUNK_PAYLOADS: dict[EventType, dict[str, Any]] = {
    EventType.ACCEPTED: {},  # filled in per node
    EventType.REFUSED: {"reason": "重复申请"},
    EventType.SETTLED: {},
    EventType.ROUTED: {"handling_node": HESHAN},
    EventType.RECEIVED: {},
    EventType.SUPPLEMENT_REQUESTED: {"reason": "再补"},
    EventType.SUPPLEMENT_PROVIDED: {"deadline": "2025-01-02"},
    EventType.APPROVED: {},
    EventType.REJECTED: {"reason": "不予"},
    EventType.RESULT_RECORDED: {"summary": "结果"},
    EventType.DELIVERED: {"method": "post"},
    EventType.TRANSFERRED: {"new_handling_node": NANXIAN, "reason": "转"},
    EventType.WITHDRAWAL_REQUESTED: {},
    EventType.WITHDRAWN: {},
    EventType.EVALUATED: {"level": 2},
    EventType.DEADLINE_FLAGGED: {"level": "red"},
    EventType.JOINT_SESSION_SCHEDULED: {"date": "2025-01-03", "mode": "online", "place": "线上", "departments": []},
    EventType.PAYMENT_REQUESTED: {"order_id": "po_1", "state": "created", "total_fen": 2000},
    EventType.PAYMENT_UPDATED: {"order_id": "po_1", "state": "succeeded", "total_fen": 2000},
    EventType.RESULT_SEALED: {"document_id": "C.R1", "issuer": "430903000000/civil_affairs", "sealed_pdf": "x"},
    EventType.POST_ORDERED: {"waybill_no": "SX1234567890"},
    EventType.POST_TRACKED: {"waybill_no": "SX1234567890", "seq": 2, "code": "picked_up"},
    EventType.LICENCE_REVOKED: {"identifier": "1.2.156.3005.2.X", "reason": "违法经营", "signed": {}},
    EventType.RECEIPT_ISSUED: {"document_id": "C.P1", "issuer": "430903000000/civil_affairs", "sealed_pdf": "x"},
    EventType.IDENTITY_VERIFIED: {
        "application_hash": "a" * 64,
        "verification": {"match": True, "distance": 0.3, "threshold": 0.55, "model": "m", "channel": "window"},
        "material_links": [],
    },
}


def generate_history(data: st.DataObject, *, junk: bool) -> History:
    """A history built from permitted commands, optionally salted with stale or invalid events."""
    nodes = [VILLAGE, *HANDLER_POOL, *EXTRA_NODES]
    skews = {n: data.draw(st.integers(-2 * HOUR, 2 * HOUR), label=f"skew {n}") for n in nodes}
    h = History(skews=skews)
    h.accept(handling=data.draw(st.sampled_from(HANDLER_POOL), label="first handler"))
    if data.draw(st.booleans(), label="routed"):
        h.add(EventType.ROUTED, VILLAGE, role="acceptor", handling_node=h.case().handling_node)
    for _ in range(data.draw(st.integers(0, 14), label="steps")):
        advance = data.draw(st.integers(0, 3 * 24 * HOUR), label="advance")
        if junk and data.draw(st.integers(0, 3), label="junk?") == 0:
            kind = data.draw(st.sampled_from(sorted(EventType)), label="junk type")
            node = data.draw(st.sampled_from(nodes), label="junk node")
            payload = dict(_JUNK_PAYLOADS[kind])
            if kind is EventType.ACCEPTED:
                payload = {"matter_code": "M", "applicant": {}, "accepting_node": node, "handling_node": HESHAN}
            after = data.draw(st.sampled_from(h.events), label="known up to")
            h.add(kind, node, role="approver", after=after, advance_ms=advance, **payload)
            continue
        case = h.case()
        options = sorted(
            (action, node, role)
            for node in {case.accepting_node, case.handling_node, *EXTRA_NODES}
            for role in ("acceptor", "approver", "supervisor", "citizen")
            for action in allowed_actions(case, role, DEPT, DEPT, node)
        )
        if not options:
            break
        progress = [option for option in options if option[0] in PROGRESS]
        if progress and data.draw(st.integers(0, 3), label="progress?") > 0:
            options = progress
        action, node, role = data.draw(st.sampled_from(options), label="command")
        if data.draw(st.integers(0, 5), label="flag?") == 0 and case.state in OPEN_STATES:
            h.add(EventType.DEADLINE_FLAGGED, case.handling_node, role="system", advance_ms=advance, level="warning")
            continue
        h.now += advance
        h.command(action, node, role=role, **_payload_for(action, data, case))
    return h


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_commands_the_rules_permit_fold_without_anomalies(data: st.DataObject) -> None:
    h = generate_history(data, junk=False)
    case = h.case()
    assert case.anomalies == []
    assert len(case.timeline) == len(h.events)
    assert verify_chain(h.events).ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fold_is_the_same_for_every_arrival_order(data: st.DataObject) -> None:
    h = generate_history(data, junk=data.draw(st.booleans(), label="junk"))
    expected = fold(h.events)
    for _ in range(3):
        shuffled = data.draw(st.permutations(h.events), label="arrival order")
        assert fold(shuffled) == expected
    duplicated = data.draw(st.permutations(h.events + h.events[: len(h.events) // 2]), label="with duplicates")
    assert fold(duplicated) == expected
    assert fold(Event.from_doc(e.to_doc()) for e in reversed(h.events)) == expected


# --- commands -----------------------------------------------------------------------------------------


def accepted_case() -> Case:
    h = History()
    h.accept()
    return h.case()


def reviewed_case() -> Case:
    h = History()
    h.accept()
    h.command("receive", HESHAN)
    return h.case()


def rejected_case() -> Case:
    h = History()
    h.accept()
    h.command("receive", HESHAN)
    h.command("reject", HESHAN, reason="不符合条件")
    return h.case()


def _error(case: Case, action: str, role: str, actor_dept: str | None, at_node: str) -> DomainError:
    with pytest.raises(DomainError) as caught:
        check_command(case, action, role, actor_dept, DEPT, at_node)
    error = caught.value
    assert error.message_zh and error.message_en and error.to_dict()["error"] == error.code
    return error


def test_approving_a_rejected_case_is_a_conflict() -> None:
    error = _error(rejected_case(), "approve", "approver", DEPT, HESHAN)
    assert error.kind is ErrorKind.CONFLICT and error.code == "invalid_transition"
    assert "不予办理" in error.message_zh


@pytest.mark.parametrize(
    ("action", "state_builder"),
    [
        ("approve", accepted_case),
        ("receive", reviewed_case),
        ("request_supplement", rejected_case),
        ("supplement", reviewed_case),
        ("record_result", reviewed_case),
        ("deliver", reviewed_case),
        ("transfer", rejected_case),
    ],
)
def test_actions_not_allowed_in_the_state_are_conflicts(action: str, state_builder: Any) -> None:
    error = _error(state_builder(), action, "approver", DEPT, HESHAN)
    assert error.kind is ErrorKind.CONFLICT and error.code == "invalid_transition"


def test_wrong_department_is_forbidden() -> None:
    error = _error(reviewed_case(), "approve", "approver", OTHER_DEPT, HESHAN)
    assert error.kind is ErrorKind.FORBIDDEN and error.code == "wrong_department"
    assert _error(reviewed_case(), "approve", "approver", None, HESHAN).code == "wrong_department"


def test_wrong_role_is_forbidden() -> None:
    for role in ("acceptor", "supervisor", "ops", "admin", "citizen", "nobody"):
        error = _error(reviewed_case(), "approve", role, DEPT, HESHAN)
        assert error.kind is ErrorKind.FORBIDDEN and error.code == "role_not_allowed"


def test_only_the_holder_may_decide() -> None:
    for node in (VILLAGE, TOWNSHIP, CITY, ZIYANG):
        error = _error(reviewed_case(), "approve", "approver", DEPT, node)
        assert error.kind is ErrorKind.FORBIDDEN and error.code == "not_holder"
        assert HESHAN in error.message_zh


def test_supplement_and_delivery_at_the_accepting_node_or_the_holder() -> None:
    h = History()
    h.accept()
    h.command("receive", HESHAN)
    h.command("request_supplement", HESHAN, reason="缺件")
    case = h.case()
    check_command(case, "supplement", "acceptor", None, DEPT, VILLAGE)
    check_command(case, "supplement", "approver", DEPT, DEPT, HESHAN)
    assert _error(case, "supplement", "acceptor", None, NEIGHBOUR_VILLAGE).code == "not_holder"
    h.command("supplement", VILLAGE, role="acceptor", deadline="2024-12-20")
    h.command("approve", HESHAN)
    decided = h.case()
    check_command(decided, "deliver", "acceptor", None, DEPT, VILLAGE)
    check_command(decided, "deliver", "approver", DEPT, DEPT, HESHAN)
    assert _error(decided, "deliver", "acceptor", None, TOWNSHIP).kind is ErrorKind.FORBIDDEN


def test_unknown_action_is_invalid() -> None:
    error = _error(reviewed_case(), "teleport", "approver", DEPT, HESHAN)
    assert error.kind is ErrorKind.INVALID and error.code == "unknown_action"


def test_withdraw_is_a_request_away_from_the_holder() -> None:
    case = reviewed_case()
    assert event_type_for(case, "withdraw", VILLAGE) is EventType.WITHDRAWAL_REQUESTED
    assert event_type_for(case, "withdraw", HESHAN) is EventType.WITHDRAWN
    assert event_type_for(case, "approve", HESHAN) is EventType.APPROVED
    check_command(case, "withdraw", "citizen", None, DEPT, VILLAGE)
    check_command(case, "withdraw", "approver", DEPT, DEPT, HESHAN)
    assert _error(lifecycle().case(), "withdraw", "acceptor", None, VILLAGE).kind is ErrorKind.CONFLICT


def test_allowed_actions() -> None:
    case = reviewed_case()
    assert allowed_actions(case, "approver", DEPT, DEPT, HESHAN) == {
        "approve",
        "reject",
        "request_supplement",
        "transfer",
        "withdraw",
    }
    assert allowed_actions(case, "approver", DEPT, OTHER_DEPT, HESHAN) == set()
    assert allowed_actions(case, "acceptor", DEPT, None, VILLAGE) == {"withdraw", "evaluate"}
    assert allowed_actions(case, "supervisor", DEPT, None, HESHAN) == {"transfer"}
    assert allowed_actions(case, "ops", DEPT, None, HESHAN) == set()
    accepted = accepted_case()
    assert allowed_actions(accepted, "approver", DEPT, DEPT, HESHAN) == {"receive", "transfer", "withdraw"}
    assert allowed_actions(accepted, "approver", DEPT, DEPT, HESHAN) <= ACTIONS


# --- scope --------------------------------------------------------------------------------------------


def test_scope_of_a_cross_county_case() -> None:
    tree = yiyang()
    h = History()
    h.accept(accepting=VILLAGE, handling=HESHAN)
    members = scope(h.case(), tree)
    assert members == {VILLAGE, TOWNSHIP, ZIYANG, HESHAN, CITY}
    assert set(tree.path_between(VILLAGE, HESHAN)) | {tree.root} <= members
    assert [code for code in members if tree.tier(code) is Tier.VILLAGE] == [VILLAGE]
    assert NEIGHBOUR_VILLAGE not in members


def test_scope_of_a_local_case_includes_the_relays_to_the_city() -> None:
    tree = yiyang()
    h = History()
    h.accept(accepting=VILLAGE, handling=TOWNSHIP)
    members = scope(h.case(), tree)
    assert set(tree.path_between(VILLAGE, TOWNSHIP)) | {CITY} <= members
    assert members == {VILLAGE, TOWNSHIP, ZIYANG, CITY}  # the county relays township ↔ city


def test_transfer_adds_the_new_handlers_path() -> None:
    tree = yiyang()
    h = History()
    h.accept(accepting=VILLAGE, handling=HESHAN)
    h.command("receive", HESHAN)
    before = scope(h.case(), tree)
    nanxian_township = next(code for code in tree.children(NANXIAN))
    h.command("transfer", HESHAN, new_handling_node=nanxian_township, reason="属南县管辖")
    after = scope(h.case(), tree)
    assert before < after
    assert after - before == {NANXIAN, nanxian_township}
    assert HESHAN in after  # earlier handlers keep their copy
    assert [code for code in after if tree.tier(code) is Tier.VILLAGE] == [VILLAGE]


def test_scope_with_an_unknown_node() -> None:
    h = History()
    h.accept(accepting=VILLAGE, handling="4309ZZ000000")
    with pytest.raises(DomainError) as caught:
        scope(h.case(), yiyang())
    assert caught.value.code == "unknown_node"


def test_timestamps_in_the_timeline_are_iso() -> None:
    case = lifecycle().case()
    for entry in case.timeline:
        assert entry["at"] == Timestamp.parse(entry["hlc"]).iso


def test_the_case_shares_nothing_mutable_with_its_events() -> None:
    h = lifecycle()
    case = h.case()
    case.applicant["name"] = "改名"
    case.materials.append({"code": "X"})
    assert case.result is not None
    case.result["summary"] = "改"
    assert h.case() == fold(h.events) != case
    assert h.events[0].payload["applicant"]["name"] == "张三"
