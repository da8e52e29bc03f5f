"""The read model: follows the changes feed, rebuilds to the same rows, quarantines bad events."""

from __future__ import annotations

from datetime import date, timedelta

from node.bootstrap import NodeContext
from node.domain.events import Event, EventType
from node.domain.hlc import HybridLogicalClock
from node.domain.messages import CaseWritten
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.service_layer.cases import Actor
from node.service_layer.commands import SweepDeadlines
from tests.test_api_cases import accept_body
from tiers.demo import HESHAN, HESHAN_VILLAGE, ZIYANG

ACCEPTOR = Actor("acceptor", "acceptor", None)
APPROVER = Actor("approver.civil_affairs", "approver", "civil_affairs")


def accept(node: NodeContext, **extra: object) -> str:
    outcome = node.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(**extra)))
    assert outcome.case_no
    return outcome.case_no


def test_rebuild_equals_the_incremental_model(county_node: NodeContext) -> None:
    numbers = [accept(county_node) for _ in range(6)]
    county_node.bus.handle(act_on_case_from_json(APPROVER, numbers[0], {"action": "approve"}))
    county_node.bus.handle(act_on_case_from_json(APPROVER, numbers[1], {"action": "reject", "reason": "不符合条件"}))
    county_node.bus.handle(
        act_on_case_from_json(APPROVER, numbers[2], {"action": "request_supplement", "reason": "缺少签字"})
    )
    county_node.projector.catch_up()
    incremental = county_node.readmodel.snapshot()
    assert len([r for r in incremental if "case_no" in r and "matter_code" in r]) == 6
    rebuilt_count = county_node.projector.rebuild()
    assert rebuilt_count == 6
    assert county_node.readmodel.snapshot() == incremental
    states = {r["case_no"]: r["state"] for r in incremental if "state" in r}
    assert states[numbers[0]] == "approved" and states[numbers[1]] == "rejected"
    assert states[numbers[2]] == "supplement_requested" and states[numbers[3]] == "in_review"


def test_catch_up_projects_documents_written_by_others(county_node: NodeContext, village_node: NodeContext) -> None:
    case_no = accept(village_node, residence_code=HESHAN_VILLAGE)
    docs = village_node.cases.events.case_docs(case_no)
    # As replication would: the county receives the village's signed documents and its certificate.
    county_node.store.bulk_docs([{k: v for k, v in d.items() if k != "_rev"} for d in docs])
    county_node.projector.catch_up()
    assert county_node.readmodel.pending() == [case_no]  # signer's certificate not here yet: wait, not condemn
    assert county_node.readmodel.inbox(HESHAN, "approver", "civil_affairs") == []
    cert = village_node.store.get(f"cert:{HESHAN_VILLAGE}:{village_node.identity.cert_sha256}")
    county_node.store.bulk_docs([{k: v for k, v in cert.items() if k != "_rev"}])
    county_node.projector.catch_up()
    assert county_node.readmodel.pending() == []
    rows = county_node.readmodel.inbox(HESHAN, "approver", "civil_affairs")
    assert [r.case_no for r in rows] == [case_no]
    assert rows[0].accepting_node == HESHAN_VILLAGE and rows[0].applicant_name == "李秀英"


def test_tampered_event_is_quarantined_not_applied(county_node: NodeContext, village_node: NodeContext) -> None:
    case_no = accept(village_node, residence_code=HESHAN_VILLAGE)
    docs = [{k: v for k, v in d.items() if k != "_rev"} for d in village_node.cases.events.case_docs(case_no)]
    cert = village_node.store.get(f"cert:{HESHAN_VILLAGE}:{village_node.identity.cert_sha256}")
    county_node.store.bulk_docs([{k: v for k, v in cert.items() if k != "_rev"}])
    accepted = next(d for d in docs if d["type"] == "accepted")
    accepted["payload"]["handling_node"] = ZIYANG  # redirect the case: the signature no longer holds
    county_node.store.bulk_docs(docs)
    # And an unsigned approval forged in the county's name.
    clock = HybridLogicalClock(HESHAN)
    forged = Event(
        case_no=case_no,
        type=EventType.APPROVED,
        actor_id="x",
        actor_role="approver",
        node=HESHAN,
        hlc=clock.tick().to_str(),
        prev_hash=None,
        payload={},
    )
    county_node.store.bulk_docs([forged.to_doc()])
    county_node.projector.catch_up()
    quarantined = {row["doc_id"]: row["reason"] for row in county_node.readmodel.quarantined()}
    assert accepted["_id"] in quarantined and "signature" in quarantined[accepted["_id"]]
    assert forged.doc_id in quarantined and "unsigned" in quarantined[forged.doc_id]
    # The tampered accepted event was not applied: the county holds no usable case.
    assert county_node.readmodel.search(text=case_no) == []


def test_deadline_sweep_raises_each_level_once(county_node: NodeContext) -> None:
    case_no = accept(county_node)
    case = county_node.cases.load(case_no)
    assert case.deadline is not None
    held = [r.case_no for r in county_node.readmodel.open_cases_held_by(HESHAN)]
    assert held == [case_no]
    assert county_node.bus.handle(SweepDeadlines(tuple(held), case.deadline - timedelta(days=60))) == 0
    assert county_node.bus.handle(SweepDeadlines(tuple(held), case.deadline)) == 1
    assert county_node.bus.handle(SweepDeadlines(tuple(held), case.deadline)) == 0  # idempotent
    assert county_node.bus.handle(SweepDeadlines(tuple(held), case.deadline + timedelta(days=14))) == 1
    flagged = county_node.cases.load(case_no)
    assert flagged.flags and flagged.flags["level"] == "red"
    assert [e["type"] for e in flagged.timeline].count("deadline_flagged") == 2
    row = county_node.readmodel.search(text=case_no)[0]
    assert row.flag == "red"


def test_supplement_pause_extends_the_deadline(county_node: NodeContext) -> None:
    today = date(2024, 9, 23)
    county_node.cases.today = lambda: today
    case_no = accept(county_node)
    before = county_node.cases.load(case_no).deadline
    county_node.bus.handle(
        act_on_case_from_json(APPROVER, case_no, {"action": "request_supplement", "reason": "缺少签字"})
    )
    county_node.cases.today = lambda: date(2024, 10, 10)
    after = county_node.bus.handle(act_on_case_from_json(ACCEPTOR, case_no, {"action": "supplement"})).deadline
    assert before is not None and after is not None and after > before


def test_a_read_model_of_an_older_shape_is_rebuilt(county_node: NodeContext) -> None:
    from sqlalchemy import update

    from node.adapters.readmodel import ReadModel, schema

    accept(county_node)
    assert county_node.readmodel.count() == 1
    with county_node.readmodel.engine.begin() as conn:
        conn.execute(update(schema).values(version=1))
    path = county_node.config.data_dir / "readmodel.sqlite3"
    reopened = ReadModel(path)
    assert reopened.count() == 0 and reopened.checkpoint("changes") == 0
    county_node.projector.readmodel = reopened
    assert county_node.projector.catch_up() == 1
    assert reopened.count() == 1


def test_own_writes_about_to_be_projected_are_not_read_back(county_node: NodeContext) -> None:
    """The agent leaves the web process a moment to project what it wrote, but never loses a case."""
    import threading

    handlers = county_node.bus.message_handlers[CaseWritten]
    project_now = list(handlers)
    assert project_now

    def project_late(message: CaseWritten) -> None:
        for handler in project_now:
            handler(message)

    # The web process projects a little after the store write, as under load. The grace is widened
    # for the test: on a loaded machine the late projection itself can take longer than 50 ms.
    county_node.projector.OWN_WRITE_GRACE_S = 1.0
    handlers[:] = [lambda message: threading.Timer(0.01, project_late, args=(message,)).start()]
    late = accept(county_node)
    assert county_node.projector.catch_up() == 0  # projected by the writer within the grace: not read back
    assert county_node.readmodel.count() == 1
    # The web process died between the store write and its projection: the agent projects the case.
    handlers.clear()
    lost = accept(county_node)
    assert county_node.projector.catch_up() == 1
    states = {r["case_no"]: r["state"] for r in county_node.readmodel.snapshot() if "state" in r}
    assert states == {late: "in_review", lost: "in_review"}


def test_figures_and_metrics_read_the_cases_through_the_read_models_methods(county_node: NodeContext) -> None:
    approved, rejected, waiting = (accept(county_node) for _ in range(3))
    county_node.bus.handle(act_on_case_from_json(APPROVER, approved, {"action": "approve"}))
    county_node.bus.handle(act_on_case_from_json(APPROVER, rejected, {"action": "reject", "reason": "不符合条件"}))
    readmodel = county_node.readmodel
    held = readmodel.held_counts()
    assert (held.by_state, held.by_flag, held.quarantined) == ({"approved": 1, "rejected": 1, "in_review": 1}, {}, 0)
    decided = readmodel.decided_event_counts()
    assert decided == {no: len(county_node.cases.load(no).timeline) for no in (approved, rejected)}
    facts = {fact.case_no: fact for fact in readmodel.case_facts()}
    assert set(facts) == {approved, rejected, waiting}
    fact = facts[waiting]
    assert (fact.accepting_node, fact.handling_node, fact.state) == (HESHAN, HESHAN, "in_review")
    assert not fact.transferred
    assert fact.matter_name == "最低生活保障审核确认"
    assert fact.event_count == len(county_node.cases.load(waiting).timeline)
