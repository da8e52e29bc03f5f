"""Who sees and does what (node/domain/permissions.py), through the API and the pages of a real node."""

from __future__ import annotations

import pytest

from node.bootstrap import NodeContext
from node.domain.errors import DomainError
from node.domain.permissions import CaseNodes, check_evaluation, check_withdrawal, sees_personal_data
from tests.conftest import client_for, token_for
from tests.test_api_cases import accept_body
from tests.test_pages import sign_in

COUNTY = "430903000000"


def test_the_table() -> None:
    here = CaseNodes.of("430903101201", COUNTY, ["430903101201", COUNTY])
    elsewhere = CaseNodes.of("430902000000", "430902000000")
    assert sees_personal_data("acceptor", COUNTY, here) and sees_personal_data("approver", COUNTY, here)
    assert not sees_personal_data("acceptor", COUNTY, elsewhere)
    assert sees_personal_data("supervisor", COUNTY, elsewhere)
    assert not sees_personal_data("ops", COUNTY, here)
    check_withdrawal("citizen", None)
    with pytest.raises(DomainError, match="signed_request_required"):
        check_withdrawal("acceptor", " ")
    with pytest.raises(DomainError, match="withdraw_not_allowed"):
        check_withdrawal("ops", "WD-1")
    check_evaluation("citizen", "online", [])
    check_evaluation("acceptor", "window", [])
    with pytest.raises(DomainError, match="already_evaluated"):
        check_evaluation("acceptor", "window", ["online"])
    with pytest.raises(DomainError, match="already_evaluated"):
        check_evaluation("citizen", "online", ["online"])
    with pytest.raises(DomainError, match="evaluate_not_allowed"):
        check_evaluation("approver", "window", [])


def test_ops_sees_masked_names_and_cannot_search_by_name(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    ops = token_for(client, county_node, "ops")
    supervisor = token_for(client, county_node, "supervisor")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]

    # Before, every role got the decrypted name of every case.
    assert client.get(f"/api/v1/cases/{case_no}", headers=acceptor).get_json()["applicant"]["name"] == "李秀英"
    assert client.get(f"/api/v1/cases/{case_no}", headers=supervisor).get_json()["applicant"]["name"] == "李秀英"
    shown = client.get(f"/api/v1/cases/{case_no}", headers=ops).get_json()
    assert shown["applicant"]["name"] == "李**" and "李秀英" not in str(shown)

    assert [c["case_no"] for c in client.get("/api/v1/cases?q=李秀英", headers=acceptor).get_json()["cases"]] == [
        case_no
    ]
    assert client.get("/api/v1/cases?q=李秀英", headers=ops).get_json()["cases"] == []
    by_number = client.get(f"/api/v1/cases?q={case_no}", headers=ops).get_json()["cases"]
    assert [c["applicant_name"] for c in by_number] == ["李**"]

    browser = client_for(county_node)
    sign_in(browser, county_node, "ops")
    page = browser.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "李**" in page and "李秀英" not in page
    assert f">{case_no}<" not in browser.get("/inbox?q=李秀英").get_data(as_text=True)


def test_staff_withdraw_only_with_the_applicants_signed_request(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    actions = f"/api/v1/cases/{case_no}/actions"

    bare = client.post(actions, json={"action": "withdraw"}, headers=acceptor)
    assert bare.status_code == 400 and bare.get_json()["error"] == "signed_request_required"
    assert client.get(f"/api/v1/cases/{case_no}", headers=acceptor).get_json()["state"] == "in_review"

    done = client.post(actions, json={"action": "withdraw", "signed_request": "CH-2026-0042"}, headers=acceptor)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["state"] == "withdrawn" and "CH-2026-0042" in str(done.get_json()["reason"])


def test_the_window_records_one_evaluation_and_never_replaces_it(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")
    case_no = client.post("/api/v1/cases", json=accept_body(), headers=acceptor).get_json()["case_no"]
    actions = f"/api/v1/cases/{case_no}/actions"
    assert client.post(actions, json={"action": "approve"}, headers=approver).status_code == 200
    assert client.post(actions, json={"action": "deliver", "method": "post"}, headers=acceptor).status_code == 200

    first = client.post(actions, json={"action": "evaluate", "level": 1}, headers=acceptor)
    assert first.status_code == 200, first.get_json()
    # Before, a second evaluation replaced the first (非常不满意 → 非常满意).
    again = client.post(actions, json={"action": "evaluate", "level": 5}, headers=acceptor)
    assert again.status_code == 409 and again.get_json()["error"] == "already_evaluated"
    assert client.get(f"/api/v1/cases/{case_no}", headers=acceptor).get_json()["evaluation"]["level"] == 1
