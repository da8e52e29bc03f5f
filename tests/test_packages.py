"""一件事一次办 through the REST API of a real node: parallel sub-cases, one merged supplement, one delivery,
a refusal that stops the rest, and a joint inspection's consolidated decision."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask.testing import FlaskClient

from node.bootstrap import NodeContext
from node.domain.catalogue import load_seed_catalogue
from node.domain.identifiers import make_credit_code, make_id_number
from node.domain.packages import packages_from
from tests.conftest import client_for, token_for
from tiers.demo import HESHAN, HESHAN_VILLAGE

TRANSFER = "430900-YJS-0001"  # 不动产转移登记一件事
INSPECTION = "430900-YJS-0005"  # 建设工程竣工联合验收
SELLER = make_id_number("430903", date(1970, 4, 8), 15)
TRANSFER_MATERIALS = ["M001", "M003", "M005", "M020"]


def accept_transfer(client: FlaskClient, acceptor: dict[str, str], materials: list[str] = TRANSFER_MATERIALS) -> Any:
    return client.post(
        f"/api/v1/packages/{TRANSFER}/cases",
        json={
            "applicant": {"kind": "person", "name": "周建国", "id_number": SELLER},
            "materials": materials,
            "property_code": HESHAN_VILLAGE,
        },
        headers=acceptor,
    )


def test_the_catalogue_merges_materials_and_fees() -> None:
    catalogue = load_seed_catalogue()
    packages = packages_from(catalogue.to_dict(), catalogue)
    transfer = packages[TRANSFER]
    codes = [m.code for m in transfer.materials(catalogue)]
    assert len(codes) == len(set(codes))  # 交一套材料: each material once
    assert "M021" not in codes  # the deed-tax receipt comes from the package's own tax sub-case
    assert transfer.fee(catalogue) == 80
    assert {transfer.share_days(catalogue, m) for m in transfer.matters} <= set(range(transfer.promised_days + 1))
    assert {"不动产转移登记一件事", "新生儿出生一件事", "开办餐饮店一件事"} <= {p.name for p in packages.values()}
    assert any(p.joint == "review" for p in packages.values()) and any(
        p.joint == "inspection" for p in packages.values()
    )


def test_one_window_three_departments_one_supplement_one_delivery(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    estate = token_for(client, county_node, "approver.real_estate")
    housing = token_for(client, county_node, "approver.housing")
    tax = token_for(client, county_node, "approver.taxation")

    missing = accept_transfer(client, acceptor, ["M001"])
    assert missing.status_code == 422
    names = [m["name"] for m in missing.get_json()["notice"]["missing"]]
    assert "不动产权证书" in names and "不动产买卖合同" in names and len(names) == len(set(names))

    created = accept_transfer(client, acceptor)
    assert created.status_code == 201, created.get_json()
    package = created.get_json()
    package_no = package["package_no"]
    subs = {s["department"]: s for s in package["sub_cases"]}
    assert set(subs) == {"real_estate", "housing", "taxation"}
    assert all(s["handling_node"] == HESHAN and s["state"] == "in_review" for s in subs.values())
    assert all(s["deadline"] for s in subs.values())

    def act(token: dict[str, str], case_no: str, body: dict[str, Any]) -> Any:
        return client.post(f"/api/v1/cases/{case_no}/actions", json=body, headers=token)

    assert (
        act(
            estate, subs["real_estate"]["case_no"], {"action": "request_supplement", "reason": "缺共有人同意书"}
        ).status_code
        == 200
    )
    assert act(tax, subs["taxation"]["case_no"], {"action": "approve"}).status_code == 200
    assert (
        act(housing, subs["housing"]["case_no"], {"action": "request_supplement", "reason": "合同页码不全"}).status_code
        == 200
    )

    view = client.get(f"/api/v1/package-cases/{package_no}", headers=acceptor).get_json()
    assert view["state"] == "supplement_requested" and view["notice_ready"]
    reasons = {r["department"]: r["reason"] for r in view["supplement_requests"]}
    assert reasons == {"real_estate": "缺共有人同意书", "housing": "合同页码不全"}  # one notice, both departments

    only_one = client.post(
        f"/api/v1/package-cases/{package_no}/supplement",
        json={"answers": {subs["real_estate"]["case_no"]: {"note": "已补交共有人同意书"}}},
        headers=acceptor,
    )
    assert only_one.status_code == 422 and only_one.get_json()["error"] == "supplement_incomplete"
    assert "housing" in only_one.get_json()["message_en"]
    still = client.get(f"/api/v1/package-cases/{package_no}", headers=acceptor).get_json()
    assert {s["state"] for s in still["sub_cases"] if s["department"] != "taxation"} == {"supplement_requested"}

    answered = client.post(
        f"/api/v1/package-cases/{package_no}/supplement",
        json={
            "answers": {
                subs["real_estate"]["case_no"]: {"note": "已补交共有人同意书", "materials": ["M014"]},
                subs["housing"]["case_no"]: {"materials": ["M020"]},
            }
        },
        headers=acceptor,
    )
    assert answered.status_code == 200, answered.get_json()
    assert answered.get_json()["state"] == "in_progress"

    early = client.post(f"/api/v1/package-cases/{package_no}/deliver", json={"method": "post"}, headers=acceptor)
    assert early.status_code == 409 and early.get_json()["error"] == "package_not_decided"
    assert act(estate, subs["real_estate"]["case_no"], {"action": "approve"}).status_code == 200
    assert act(housing, subs["housing"]["case_no"], {"action": "approve"}).status_code == 200
    decided = client.get(f"/api/v1/package-cases/{package_no}", headers=acceptor).get_json()
    assert decided["state"] == "decided"

    delivered = client.post(f"/api/v1/package-cases/{package_no}/deliver", json={"method": "post"}, headers=acceptor)
    assert delivered.status_code == 200 and delivered.get_json()["state"] == "delivered"
    assert all(s["state"] == "delivered" for s in delivered.get_json()["sub_cases"])
    timeline_cases = {e["case_no"] for e in delivered.get_json()["timeline"]}
    assert timeline_cases == {s["case_no"] for s in subs.values()}



def test_a_refusal_stops_the_other_departments_where_the_package_says_so(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    tax = token_for(client, county_node, "approver.taxation")
    package = accept_transfer(client, acceptor).get_json()
    subs = {s["department"]: s for s in package["sub_cases"]}

    rejected = client.post(
        f"/api/v1/cases/{subs['taxation']['case_no']}/actions",
        json={"action": "reject", "reason": "计税价格明显偏低"},
        headers=tax,
    )
    assert rejected.status_code == 200
    view = client.get(f"/api/v1/package-cases/{package['package_no']}", headers=acceptor).get_json()
    assert view["state"] == "stopped" and view["refused"] == [subs["taxation"]["case_no"]]
    refusal = next(s for s in view["sub_cases"] if s["department"] == "taxation")
    assert refusal["reason"] == "计税价格明显偏低"
    # The others were stopped at once: the holder (here the same node) withdrew them.
    others = [s["state"] for s in view["sub_cases"] if s["department"] != "taxation"]
    assert others == ["withdrawn", "withdrawn"]


def test_a_joint_inspection_ends_in_one_consolidated_decision(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approvers = {
        d: token_for(client, county_node, f"approver.{d}") for d in ("housing", "natural_resources", "civil_defense")
    }
    created = client.post(
        f"/api/v1/packages/{INSPECTION}/cases",
        json={
            "applicant": {
                "kind": "enterprise",
                "name": "益阳市某置业有限公司",
                "credit_code": make_credit_code("91430903MA4L0A0B1"),
            },
            "materials": ["M003", "M004", "M060", "M061", "M062"],
            "property_code": HESHAN_VILLAGE,
        },
        headers=acceptor,
    )
    assert created.status_code == 201, created.get_json()
    package_no = created.get_json()["package_no"]
    subs = {s["department"]: s for s in created.get_json()["sub_cases"]}

    lead = approvers["housing"]
    session = f"/api/v1/package-cases/{package_no}/session"
    by_other = client.post(
        session,
        json={"date": "2099-01-05", "mode": "onsite", "place": "赫山区政务中心3楼"},
        headers=approvers["civil_defense"],
    )
    assert by_other.status_code == 403
    outsider = client.post(
        session,
        json={"date": "2099-01-05", "mode": "onsite", "place": "赫山区政务中心3楼", "departments": ["ecology"]},
        headers=lead,
    )
    assert outsider.status_code == 422 and outsider.get_json()["error"] == "department_not_in_package"
    past = client.post(session, json={"date": "2000-01-05", "mode": "onsite", "place": "三楼"}, headers=lead)
    assert past.status_code == 422 and past.get_json()["error"] == "session_in_past"
    scheduled = client.post(
        session, json={"date": "2099-01-05", "mode": "onsite", "place": "赫山区政务中心3楼"}, headers=lead
    )
    assert scheduled.status_code == 200, scheduled.get_json()
    assert scheduled.get_json()["joint_session"]["departments"] == ["civil_defense", "housing", "natural_resources"]
    consolidate = f"/api/v1/package-cases/{package_no}/consolidate"
    premature = client.post(consolidate, json={"decision": "联合验收合格"}, headers=lead)
    assert premature.status_code == 409 and premature.get_json()["error"] == "opinions_pending"

    opinions = {
        "natural_resources": {"action": "approve"},
        "civil_defense": {"action": "approve", "reason": "30日内补齐标识"},
    }
    for department, body in opinions.items():
        answer = client.post(
            f"/api/v1/cases/{subs[department]['case_no']}/actions", json=body, headers=approvers[department]
        )
        assert answer.status_code == 200, answer.get_json()
    # A department not invited has no sub-case it may act on.
    uninvited = token_for(client, county_node, "approver.ecology")
    foreign = client.post(
        f"/api/v1/cases/{subs['housing']['case_no']}/actions", json={"action": "approve"}, headers=uninvited
    )
    assert foreign.status_code == 403
    assert (
        client.post(
            f"/api/v1/cases/{subs['housing']['case_no']}/actions", json={"action": "approve"}, headers=lead
        ).status_code
        == 200
    )

    not_lead = client.post(consolidate, json={"decision": "合格"}, headers=approvers["civil_defense"])
    assert not_lead.status_code == 403
    done = client.post(consolidate, json={"decision": "联合验收合格"}, headers=lead)
    assert done.status_code == 200, done.get_json()
    again = client.post(consolidate, json={"decision": "改为不合格"}, headers=lead)
    assert again.status_code == 409 and again.get_json()["error"] == "already_consolidated"
    lead_case = client.get(f"/api/v1/cases/{subs['housing']['case_no']}", headers=lead).get_json()
    assert "联合验收合格" in lead_case["result"]["summary"] and "人民防空办公室：同意" in lead_case["result"]["summary"]
    # An opinion after the consolidated decision: the department's sub-case is decided, nothing changes.
    late = client.post(
        f"/api/v1/cases/{subs['civil_defense']['case_no']}/actions",
        json={"action": "reject", "reason": "改变意见"},
        headers=approvers["civil_defense"],
    )
    assert late.status_code == 409


def test_a_package_the_node_cannot_route_is_refused_whole(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    before = county_node.readmodel.count()
    answer = client.post(
        f"/api/v1/packages/{TRANSFER}/cases",
        json={"applicant": {"kind": "person", "name": "周建国", "id_number": SELLER}, "materials": TRANSFER_MATERIALS},
        headers=acceptor,
    )
    assert answer.status_code in (400, 422) and answer.get_json()["message_zh"]
    assert county_node.readmodel.count() == before  # no sub-case of the refused package was written
    unknown = client.post("/api/v1/packages/NOPE/cases", json={"applicant": {}}, headers=acceptor)
    assert unknown.status_code in (400, 404, 422)
