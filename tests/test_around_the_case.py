"""Around the case through HTTP on real nodes: 智能问答, appointments and numbers, 好差评 and rectification."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import pytest

from node.bootstrap import NodeContext
from node.domain.identifiers import make_id_number
from node.service_layer.appointments import visit_code
from tests.conftest import Services, client_for, make_node, token_for
from tests.test_api_cases import accept_body
from tiers.demo import CITY, HESHAN, HESHAN_VILLAGE

# A Wednesday; the next day is a working day too (both checked against the official calendar).
MORNING = datetime(2026, 12, 2, 8, 0)
NEXT_DAY_10 = "2026-12-03T10:00"
ALICE = make_id_number("430903", date(1980, 1, 2), 11)
BOB = make_id_number("430903", date(1990, 5, 6), 21)
CAROL = make_id_number("430903", date(1975, 9, 9), 31)


def at(context: NodeContext, moment: datetime) -> None:
    assert context.around is not None
    context.around.appointments.clock = lambda: moment
    context.around.ratings.clock = lambda: moment


@pytest.fixture
def village(services: Services, city_ca: Path, tmp_path: Path) -> NodeContext:
    context = make_node(services, city_ca, tmp_path / "village", HESHAN_VILLAGE)
    at(context, MORNING)
    return context


# --- 智能问答 -------------------------------------------------------------------------------------------------


def test_everyday_questions_find_the_matter_and_its_guide(county_node: NodeContext) -> None:
    client = client_for(county_node)
    reply = client.get("/api/v1/assistant", query_string={"q": "孩子刚出生怎么上户口"})
    assert reply.status_code == 200
    answers = reply.get_json()["answers"]
    assert 1 <= len(answers) <= 3
    assert "出生" in answers[0]["name"] and answers[0]["guide_url"]
    assert "需带" in answers[0]["summary_zh"]


@pytest.mark.parametrize("question", ["", "  ", "问" * 10_000])
def test_empty_or_huge_questions_get_a_bilingual_answer(county_node: NodeContext, question: str) -> None:
    reply = client_for(county_node).get("/api/v1/assistant", query_string={"q": question})
    assert reply.status_code in (413, 422)
    body = reply.get_json()
    assert body["message_zh"] and body["message_en"]


def test_a_question_nobody_matches_goes_to_a_person_and_the_answer_comes_back(county_node: NodeContext) -> None:
    client = client_for(county_node)
    reply = client.get("/api/v1/assistant", query_string={"q": "火星上的天气怎么样"}).get_json()
    assert reply["needs_person"] and reply["answers"] == []

    asked = client.post("/api/v1/assistant/questions", json={"question": "火星上的天气怎么样"})
    assert asked.status_code == 201
    question_id, code = asked.get_json()["question_id"], asked.get_json()["code"]
    staff = token_for(client, county_node, "acceptor")
    waiting = client.get("/api/v1/assistant/questions", headers=staff).get_json()["questions"]
    assert [q["question"] for q in waiting] == ["火星上的天气怎么样"]

    answered = client.post(
        f"/api/v1/assistant/questions/{question_id}/answer",
        json={"answer": "本平台只办理政务服务事项。"},
        headers=staff,
    )
    assert answered.status_code == 200
    mine = client.get(f"/api/v1/assistant/questions/{question_id}", query_string={"code": code}).get_json()
    assert mine["answered"] and mine["answer"] == "本平台只办理政务服务事项。"
    wrong = client.get(f"/api/v1/assistant/questions/{question_id}", query_string={"code": "guess"})
    assert wrong.status_code == 404
    again = client.post(f"/api/v1/assistant/questions/{question_id}/answer", json={"answer": "x"}, headers=staff)
    assert again.status_code == 409
    # The question may name a person: it is not kept in plaintext.
    raw = (county_node.config.data_dir / "questions.sqlite3").read_bytes()
    assert "火星".encode() not in raw


# --- appointments ------------------------------------------------------------------------------------------------


def test_slots_bookings_and_the_bad_ones(village: NodeContext) -> None:
    client = client_for(village)
    slots = client.get("/api/v1/appointments/slots", query_string={"node": HESHAN_VILLAGE, "date": "2026-12-03"})
    assert slots.status_code == 200
    by_start = {s["start"]: s for s in slots.get_json()["slots"]}
    assert by_start[NEXT_DAY_10]["free"] == 2
    assert "2026-12-03T12:00" not in by_start  # lunch break

    booked = client.post(
        "/api/v1/appointments",
        json={"node": HESHAN_VILLAGE, "matter_code": "430900-JF-0001", "start": NEXT_DAY_10, "id_number": ALICE},
    )
    assert booked.status_code == 201, booked.get_json()
    appointment = booked.get_json()
    assert appointment["status"] == "booked" and "id_number" not in appointment

    twice = client.post(
        "/api/v1/appointments", json={"matter_code": "430900-JF-0001", "start": NEXT_DAY_10, "id_number": ALICE}
    )
    assert twice.status_code == 409 and twice.get_json()["error"] == "appointment_duplicate"
    # The village keeps one place of each slot; the other is the city's (lent): Bob finds it full here.
    full = client.post(
        "/api/v1/appointments", json={"matter_code": "430900-JF-0001", "start": NEXT_DAY_10, "id_number": BOB}
    )
    assert full.status_code == 409 and full.get_json()["error"] == "slot_full"
    left = client.get("/api/v1/appointments/slots", query_string={"date": "2026-12-03"}).get_json()["slots"]
    assert {s["start"]: s["free"] for s in left}[NEXT_DAY_10] == 1

    for start, error in (
        ("2026-12-01T10:00", "appointment_in_past"),
        ("2027-02-01T10:00", "appointment_beyond_horizon"),
        ("2026-12-03T10:10", "appointment_not_a_slot"),
        ("tomorrow", "appointment_start_format"),
    ):
        refused = client.post(
            "/api/v1/appointments", json={"matter_code": "430900-JF-0001", "start": start, "id_number": CAROL}
        )
        assert refused.status_code == 422 and refused.get_json()["error"] == error, start
        assert refused.get_json()["message_en"]
    bad_id = client.post(
        "/api/v1/appointments", json={"matter_code": "430900-JF-0001", "start": NEXT_DAY_10, "id_number": "123"}
    )
    assert bad_id.status_code == 400

    cancel = f"/api/v1/appointments/{appointment['appointment_id']}/cancel"
    not_hers = client.post(cancel, json={"id_number": BOB})
    assert not_hers.status_code == 403 and not_hers.get_json()["error"] == "appointment_not_yours"
    mine = client.post(cancel, json={"id_number": ALICE})
    assert mine.status_code == 200 and mine.get_json()["status"] == "cancelled"
    # The ID number is never stored: only its keyed hash is.
    assert ALICE.encode() not in (village.config.data_dir / "appointments.sqlite3").read_bytes()


def test_a_node_books_only_for_its_own_subtree(village: NodeContext) -> None:
    client = client_for(village)
    elsewhere = client.get("/api/v1/appointments/slots", query_string={"node": "430900000000", "date": "2026-12-03"})
    assert elsewhere.status_code == 403 and elsewhere.get_json()["error"] == "node_out_of_reach"
    unknown = client.get("/api/v1/appointments/slots", query_string={"node": "999", "date": "2026-12-03"})
    assert unknown.status_code == 404


# --- numbers, calls and the rating of a visit -------------------------------------------------------------------


def test_appointment_holder_goes_first_and_a_poor_visit_rating_opens_a_ticket(village: NodeContext) -> None:
    client = client_for(village)
    booked = client.post(
        "/api/v1/appointments", json={"matter_code": "430900-JF-0001", "start": NEXT_DAY_10, "id_number": ALICE}
    ).get_json()
    at(village, datetime(2026, 12, 3, 9, 40))
    walk_in = client.post("/api/v1/queue/tickets", json={})
    assert walk_in.status_code == 201 and walk_in.get_json()["number"] == "A001"
    holder = client.post("/api/v1/queue/tickets", json={"appointment_id": booked["appointment_id"], "id_number": ALICE})
    assert holder.status_code == 201 and holder.get_json()["appointment"] is True
    not_hers = client.post("/api/v1/queue/tickets", json={"appointment_id": booked["appointment_id"], "id_number": BOB})
    assert not_hers.status_code in (403, 409)

    screen = client.get("/api/v1/queue").get_json()
    assert screen["groups"]["general"]["waiting"] == 2 and "tickets" not in screen

    at(village, datetime(2026, 12, 3, 9, 55))
    staff = token_for(client, village, "acceptor")
    assert client.post("/api/v1/queue/call", json={"window": "1"}).status_code == 401
    called = client.post("/api/v1/queue/call", json={"group": "general", "window": "1"}, headers=staff).get_json()
    assert called["ticket"]["number"] == "A002"  # the appointment, due at 10:00, before the walk-in

    ticket_id = called["ticket"]["ticket_id"]
    code = holder.get_json()["visit_code"]
    assert code == visit_code(ticket_id)
    assert client.post("/api/v1/ratings/visits", json={"code": code, "level": 0}).status_code == 422
    assert client.post("/api/v1/ratings/visits", json={"code": code, "level": 6}).status_code == 422
    rated = client.post("/api/v1/ratings/visits", json={"code": code, "level": 2, "comment": "等太久"})
    assert rated.status_code == 201 and rated.get_json()["label_zh"] == "不满意"
    assert client.post("/api/v1/ratings/visits", json={"code": code, "level": 5}).status_code == 409
    unserved = client.post("/api/v1/ratings/visits", json={"code": walk_in.get_json()["visit_code"], "level": 5})
    assert unserved.status_code == 409

    supervisor = token_for(client, village, "supervisor")
    tickets = client.get("/api/v1/rectifications", headers=supervisor).get_json()["tickets"]
    assert len(tickets) == 1 and tickets[0]["state"] == "open" and tickets[0]["rating"]["comment"] == "等太久"
    assert tickets[0]["deadline"] > "2026-12-03"
    rectify = f"/api/v1/rectifications/{tickets[0]['ticket_id']}"
    too_early = client.post(f"{rectify}/outcome", json={"outcome": "已改进"}, headers=supervisor)
    assert too_early.status_code == 409 and too_early.get_json()["error"] == "rectification_contact_first"
    assert client.post(f"{rectify}/contact", json={"note": "电话回访，已致歉"}, headers=supervisor).status_code == 200
    done = client.post(f"{rectify}/outcome", json={"outcome": "增开一个窗口"}, headers=supervisor)
    assert done.status_code == 200 and done.get_json()["state"] == "rectified"
    figures = client.get("/api/v1/ratings/figures", query_string={"by": "node"}, headers=supervisor).get_json()
    assert figures["figures"][HESHAN_VILLAGE]["poor"] == 1


def test_a_poor_case_evaluation_opens_a_ticket_at_the_handling_node(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    actions = f"/api/v1/cases/{case_no}/actions"
    assert client.post(actions, json={"action": "approve"}, headers=approver).status_code == 200
    # Case events count 1 = 非常满意 … 5 = 非常不满意.
    assert client.post(actions, json={"action": "evaluate", "level": 5}, headers=acceptor).status_code == 200

    supervisor = token_for(client, county_node, "supervisor")
    tickets = client.get("/api/v1/rectifications", headers=supervisor).get_json()["tickets"]
    assert [t["rating"]["service_id"] for t in tickets] == [case_no]
    assert tickets[0]["rating"]["label_zh"] == "非常不满意"
    # Seeing the case again (another projection) opens no second ticket.
    county_node.projector.project_events(county_node.cases._events(case_no))
    assert len(client.get("/api/v1/rectifications", headers=supervisor).get_json()["tickets"]) == 1
    appeal = client.post(
        f"/api/v1/rectifications/{tickets[0]['ticket_id']}/appeal", json={"reason": "申请人误选"}, headers=approver
    )
    assert appeal.status_code == 200
    upheld = client.post(
        f"/api/v1/rectifications/{tickets[0]['ticket_id']}/decision",
        json={"upheld": True, "decision": "核实为误操作"},
        headers=supervisor,
    )
    assert upheld.status_code == 200 and upheld.get_json()["state"] == "voided"
    figures = client.get("/api/v1/ratings/figures", headers=supervisor).get_json()["figures"]
    assert county_node.config.code not in figures  # the voided rating leaves the figures


# --- pages ----------------------------------------------------------------------------------------------------


def test_public_pages_and_the_staff_queue_page(village: NodeContext) -> None:
    client = client_for(village)
    kiosk = client.get("/kiosk")
    assert kiosk.status_code == 200 and kiosk.headers["Cache-Control"] == "no-store"
    assert "取号" in kiosk.get_data(as_text=True)
    assert client.get("/assistant").status_code == 200
    assert client.get("/queue").status_code == 302  # staff only


def test_a_booking_nobody_came_for_becomes_a_no_show(village: NodeContext) -> None:
    from node.entrypoints import tasks

    client = client_for(village)
    booked = client.post(
        "/api/v1/appointments", json={"matter_code": "430900-JF-0001", "start": NEXT_DAY_10, "id_number": ALICE}
    ).get_json()
    at(village, datetime(2026, 12, 3, 10, 10))  # within the 15 minutes of grace: still expected
    tasks._context = village
    try:
        assert tasks.appointments() == {"no_shows": 0, "decided": 0}
        at(village, datetime(2026, 12, 3, 10, 20))
        assert tasks.appointments() == {"no_shows": 1, "decided": 0}
    finally:
        tasks._context = None
    assert village.around is not None
    assert village.around.appointments.store.get(booked["appointment_id"]).status == "no_show"
    late = client.post("/api/v1/queue/tickets", json={"appointment_id": booked["appointment_id"], "id_number": ALICE})
    assert late.status_code == 409  # take an ordinary number instead


def test_the_city_dashboard_shows_rating_figures_of_every_node(
    services: Services, city_ca: Path, tmp_path: Path
) -> None:

    city = make_node(services, city_ca, tmp_path / "city", CITY)
    assert city.around is not None and city.around.ratings.collects_all
    county = make_node(services, city_ca, tmp_path / "county", HESHAN)
    client = client_for(county)
    acceptor = token_for(client, county, "acceptor")
    approver = token_for(client, county, "approver.civil_affairs")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    actions = f"/api/v1/cases/{case_no}/actions"
    assert client.post(actions, json={"action": "approve"}, headers=approver).status_code == 200
    assert client.post(actions, json={"action": "evaluate", "level": 4}, headers=acceptor).status_code == 200
    # The city holds every case: its projection of the county's case keeps the rating, opens no ticket.
    city.projector.project_events(county.cases._events(case_no))
    figures = city.around.ratings.figures("node")
    assert figures[HESHAN]["count"] == 1 and figures[HESHAN]["poor"] == 1
    assert city.around.ratings.tickets() == []
    city_client = client_for(city)
    city.state.add_account("ops", "test-password-1", "ops")
    page = city_client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    city_client.post("/login", data={"username": "ops", "password": "test-password-1", "csrf_token": csrf})
    dashboard = city_client.get("/ops")
    assert dashboard.status_code == 200
    html = dashboard.get_data(as_text=True)
    assert 'id="rating-figures"' in html and "赫山区" in html.split('id="rating-figures"')[1]
