"""The case lifecycle through the REST API of one node, against a real document store."""

from __future__ import annotations

from datetime import date

from node.bootstrap import NodeContext
from node.domain.identifiers import make_credit_code, make_id_number
from tests.conftest import client_for, token_for
from tiers.demo import HESHAN, HESHAN_TOWN, HESHAN_VILLAGE, ZIYANG, ZIYANG_VILLAGE

# 最低生活保障审核确认: civil affairs, county authority, by registered residence, 20 promised days.
DIBAO = "430900-JF-0001"
DIBAO_MATERIALS = ["M001", "M002", "M013", "M003"]
RESIDENT = make_id_number("430903", date(1985, 3, 15), 124)


def accept_body(**extra: object) -> dict:
    body = {
        "matter_code": DIBAO,
        "applicant": {"kind": "person", "id_number": RESIDENT, "name": "李秀英"},
        "materials": DIBAO_MATERIALS,
        "residence_code": HESHAN_VILLAGE,
    }
    body.update(extra)
    return body


def test_full_lifecycle_at_the_county(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")

    created = client.post("/api/v1/cases", json=accept_body(), headers=acceptor)
    assert created.status_code == 201, created.get_json()
    case = created.get_json()
    assert case["case_no"].startswith(f"{HESHAN}-")
    assert case["handling_node"] == HESHAN and case["state"] == "in_review"
    assert case["deadline"] is not None

    inbox = client.get("/api/v1/inbox", headers=approver).get_json()["cases"]
    assert [row["case_no"] for row in inbox] == [case["case_no"]]

    supplement = client.post(
        f"/api/v1/cases/{case['case_no']}/actions",
        json={"action": "request_supplement", "reason": "收入证明不清晰"},
        headers=approver,
    )
    assert supplement.status_code == 200 and supplement.get_json()["state"] == "supplement_requested"
    provided = client.post(f"/api/v1/cases/{case['case_no']}/actions", json={"action": "supplement"}, headers=acceptor)
    assert provided.status_code == 200 and provided.get_json()["state"] == "in_review"
    approved = client.post(f"/api/v1/cases/{case['case_no']}/actions", json={"action": "approve"}, headers=approver)
    assert approved.get_json()["state"] == "approved"
    delivered = client.post(
        f"/api/v1/cases/{case['case_no']}/actions", json={"action": "deliver", "method": "post"}, headers=acceptor
    )
    assert delivered.get_json()["state"] == "delivered"

    shown = client.get(f"/api/v1/cases/{case['case_no']}", headers=acceptor).get_json()
    assert [e["type"] for e in shown["timeline"]] == [
        "accepted",
        "received",
        "supplement_requested",
        "supplement_provided",
        "approved",
        "result_sealed",  # issue 15: approval seals the result document
        "delivered",
    ]
    assert all(e["node"] == HESHAN and e["actor"] and e["at"] for e in shown["timeline"])
    # The approver's inbox is empty again.
    assert client.get("/api/v1/inbox", headers=approver).get_json()["cases"] == []


def test_incomplete_application_lists_everything_missing_and_writes_nothing(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    response = client.post("/api/v1/cases", json=accept_body(materials=["M001"]), headers=acceptor)
    assert response.status_code == 200
    body = response.get_json()
    assert body["outcome"] == "incomplete" and "case_no" not in body
    assert sorted(m["code"] for m in body["missing"]) == ["M002", "M003", "M013"]
    assert body["notice"]["title_zh"] == "材料补正一次性告知书"
    assert county_node.store.changes(since=0)["results"] == [
        r for r in county_node.store.changes(since=0)["results"] if not r["id"].startswith("event:")
    ]


def test_cross_county_case_is_routed_to_the_residence_county(village_node: NodeContext) -> None:
    client = client_for(village_node)
    acceptor = token_for(client, village_node, "acceptor")
    body = accept_body(residence_code=ZIYANG_VILLAGE)  # a resident of 资阳区, accepted in 赫山区
    created = client.post("/api/v1/cases", json=body, headers=acceptor).get_json()
    assert created["handling_node"] == ZIYANG
    assert created["accepting_node"] == HESHAN_VILLAGE
    assert [e["type"] for e in created["timeline"]] == ["accepted", "routed"]


def test_enterprise_applicant_and_credit_code_check(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    credit = make_credit_code("91430903MA4L00001")
    body = {
        "matter_code": "430900-XK-0002",
        "applicant": {"kind": "enterprise", "credit_code": credit, "name": "益阳某某有限公司"},
        "materials": ["M019", "M017", "M018", "M004"],
        "registered_code": HESHAN_TOWN,
    }
    assert client.post("/api/v1/cases", json=body, headers=acceptor).status_code == 201
    body["applicant"]["credit_code"] = credit[:-1] + ("0" if credit[-1] != "0" else "1")
    bad = client.post("/api/v1/cases", json=body, headers=acceptor)
    assert bad.status_code == 400 and bad.get_json()["error"] == "credit_code_checksum"


def test_bad_input_gets_bilingual_4xx_and_no_write(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")
    bad_id = accept_body(applicant={"kind": "person", "id_number": RESIDENT[:-1] + "0", "name": "李"})
    cases = [
        (client.post("/api/v1/cases", json=bad_id, headers=acceptor), 400, "id_number_checksum"),
        (client.post("/api/v1/cases", json=accept_body(matter_code="nope"), headers=acceptor), 404, "unknown_matter"),
        (client.post("/api/v1/cases", json={"applicant": {}}, headers=acceptor), 400, "missing_field"),
        (client.post("/api/v1/cases", data="not json", headers=acceptor), 400, "invalid_json"),
        (client.post("/api/v1/cases", json=accept_body(), headers=approver), 403, "role_not_allowed"),
        (client.post("/api/v1/cases", json=accept_body()), 401, "unauthenticated"),
        (client.post("/api/v1/cases", data="x" * (2 * 1024 * 1024), headers=acceptor), 413, "body_too_large"),
        (
            client.post("/api/v1/cases", json=accept_body(residence_code=None), headers=acceptor),
            400,
            "location_required",
        ),
    ]
    for response, status, code in cases:
        body = response.get_json()
        assert response.status_code == status, (code, body)
        assert body["error"] == code and body["message_zh"] and body["message_en"]
    assert not [r for r in county_node.store.changes(since=0)["results"] if r["id"].startswith("event:")]


def test_wrong_department_and_replayed_action_are_refused(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")
    other = token_for(client, county_node, "approver.public_security")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    wrong = client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "approve"}, headers=other)
    assert wrong.status_code == 403 and wrong.get_json()["error"] == "wrong_department"
    assert (
        client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "approve"}, headers=approver).status_code == 200
    )
    replay = client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "approve"}, headers=approver)
    assert replay.status_code == 409 and replay.get_json()["error"] == "invalid_transition"
    reject_without_reason = client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "reject"}, headers=approver)
    assert reject_without_reason.status_code == 409
    timeline = client.get(f"/api/v1/cases/{case_no}", headers=approver).get_json()["timeline"]
    assert [e["type"] for e in timeline] == ["accepted", "received", "approved", "result_sealed"]


def test_citizen_progress_needs_the_matching_id_number(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    ok = client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": RESIDENT})
    assert ok.status_code == 200
    view = ok.get_json()
    assert view["state"] == "in_review" and view["timeline"]
    assert "acceptor" not in str(view) and "李秀英" not in str(view)  # no staff identity, no personal data
    other = make_id_number("430903", date(1990, 1, 1), 11)
    wrong = client.post("/api/v1/public/progress", json={"case_no": case_no, "id_number": other})
    assert wrong.status_code == 404 and wrong.get_json()["error"] == "case_not_found"


def test_openapi_lists_the_endpoints(county_node: NodeContext) -> None:
    spec = client_for(county_node).get("/api/v1/openapi.json").get_json()
    assert {"/api/v1/cases", "/api/v1/cases/{case_no}", "/api/v1/cases/{case_no}/actions", "/api/v1/inbox"} <= set(
        spec["paths"]
    )
