"""Acceptance with a face verification and reused library materials, on a real node (pouchdb-server, SQLite).

The verification and the material links land on the case as one signed ``identity_verified`` event; every
refusal (a used, foreign or failed verification, an expired or someone else's material, a name that is not
the register's) writes nothing; the applicant reads back every use of their data.
"""

from __future__ import annotations

import io
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from node.adapters.demo_people import load_demo_people
from node.bootstrap import NodeContext
from node.domain.events import EventType
from node.service_layer.registers import fill_register
from tests.conftest import Services, client_for, make_node, token_for
from tiers.demo import ZIYANG_VILLAGE

FACES = Path(__file__).parent / "data" / "faces"
MATTER = "430900-JF-0004"  # 高龄津贴申领: M001 身份证, M002 户口簿 (shared library), M051 银行账户, M003 申请表


def demo(name: str):
    return next(p.record for p in load_demo_people() if p.record.name == name)


ZHOU, TAN = demo("周建国"), demo("谭浩宇")


@pytest.fixture(scope="module")
def node(services: Services, city_ca: Path, tmp_path_factory: pytest.TempPathFactory) -> NodeContext:
    context = make_node(services, city_ca, tmp_path_factory.mktemp("lib"), ZIYANG_VILLAGE)
    assert context.registers and context.library
    fill_register(
        context.config.code, context.tree, context.registers, context.library, context.cases.pii, people_per_village=5
    )
    return context


@pytest.fixture(scope="module")
def client(node: NodeContext) -> FlaskClient:
    return client_for(node)


def headers(client: FlaskClient, node: NodeContext, role: str = "acceptor") -> dict[str, str]:
    return token_for(client, node, role)


def verify(client: FlaskClient, node: NodeContext, id_number: str, photo: str) -> dict:
    response = client.post(
        "/api/v1/identity/verify",
        data={"id_number": id_number, "photo": (io.BytesIO((FACES / photo).read_bytes()), photo)},
        headers=headers(client, node),
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def library_id(node: NodeContext, person, code: str) -> str:
    assert node.library is not None
    key = node.cases.pii.lookup_key(person.id_number)
    records = node.library.of_owner(key)
    return next(r.material_id for r in records if r.material_code == code and r.is_valid_on(date.today()))


def accept(client: FlaskClient, node: NodeContext, person, ticket: str | None, reused: list[str], **extra):
    body = {
        "matter_code": MATTER,
        "applicant": {"kind": "person", "name": person.name, "id_number": person.id_number},
        "residence_code": person.residence_code,
        "materials": ["M051", "M003"],
        "verification_id": ticket,
        "library_materials": reused,
        **extra,
    }
    return client.post("/api/v1/identity/cases", json=body, headers=headers(client, node))


def case_count(node: NodeContext) -> int:
    return node.readmodel.count()


def test_verified_acceptance_records_the_verification_and_links_on_the_case(node: NodeContext, client: FlaskClient):
    verified = verify(client, node, ZHOU.id_number, "obama-480p.jpg")
    assert verified["match"] and verified["person"]["name"] == ZHOU.name
    # 数据调取: the register data and the matter's materials on file, after the match.
    pulled = client.post(
        "/api/v1/identity/person",
        json={"id_number": ZHOU.id_number, "verification_id": verified["verification_id"], "matter_code": MATTER},
        headers=headers(client, node),
    ).get_json()
    on_file = {m["material_code"]: m for m in pulled["materials"]}
    assert on_file["M001"]["on_file"] and on_file["M002"]["on_file"] and not on_file["M051"]["on_file"]
    reused = [on_file["M001"]["material_id"], on_file["M002"]["material_id"]]

    response = accept(client, node, ZHOU, verified["verification_id"], reused)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["outcome"] == "accepted" and body["handling_node"] != ZIYANG_VILLAGE  # routed up the tree
    record = body["identity_verification"]
    assert record["match"] is True and record["channel"] == "window"
    assert record["distance"] == verified["distance"] and record["threshold"] == verified["threshold"]
    assert record["model"] == verified["model"]
    assert {link["material_id"] for link in body["material_links"]} == set(reused)
    assert any("人脸核验通过" in entry["summary_zh"] for entry in body["timeline"])

    # One signed event, naming the first event's hash; the stored history verifies; no photo inside.
    events = node.cases.verifier.verified_case(body["case_no"]).events
    recorded = [e for e in events if e.type is EventType.IDENTITY_VERIFIED]
    assert len(recorded) == 1 and recorded[0].signature is not None
    first = next(e for e in events if e.type is EventType.ACCEPTED)
    assert recorded[0].payload["application_hash"] == first.hash
    assert set(recorded[0].payload["verification"]) >= {"match", "distance", "threshold", "model", "channel"}
    assert "photo" not in str(recorded[0].payload)

    # Any staff member of a node holding the case reads what was recorded (no personal data in it).
    recorded_view = client.get(f"/api/v1/identity/cases/{body['case_no']}", headers=headers(client, node, "ops"))
    assert recorded_view.status_code == 200
    assert recorded_view.get_json()["identity_verification"]["distance"] == verified["distance"]
    assert len(recorded_view.get_json()["material_links"]) == 2

    # The same verification cannot accept a second case.
    again = accept(client, node, ZHOU, verified["verification_id"], [])
    assert again.status_code == 409 and again.get_json()["error"] == "verification_used"


def test_refusals_write_nothing(node: NodeContext, client: FlaskClient) -> None:
    ticket = verify(client, node, ZHOU.id_number, "test_obama1.jpg")["verification_id"]
    before = case_count(node)
    cases = [
        (accept(client, node, TAN, ticket, []), 409, "verification_other_person"),
        (accept(client, node, ZHOU, "no-such-ticket", []), 409, "verification_expired"),
        (accept(client, node, ZHOU, None, [library_id(node, ZHOU, "M001")]), 409, "verification_required"),
        (accept(client, node, ZHOU, ticket, [library_id(node, TAN, "M001")]), 403, "material_not_owned"),
        (accept(client, node, ZHOU, ticket, ["lib:nowhere:1"]), 404, "material_not_found"),
    ]
    wrong_name = dict(ZHOU.to_dict(), name="周建军")
    cases.append(
        (
            client.post(
                "/api/v1/identity/cases",
                json={
                    "matter_code": MATTER,
                    "applicant": {"kind": "person", "name": wrong_name["name"], "id_number": ZHOU.id_number},
                    "residence_code": ZHOU.residence_code,
                    "materials": ["M001", "M002", "M051", "M003"],
                    "verification_id": ticket,
                },
                headers=headers(client, node),
            ),
            422,
            "applicant_name_mismatch",
        )
    )
    for response, status, code in cases:
        body = response.get_json()
        assert (response.status_code, body["error"]) == (status, code), body
        assert body["message_zh"] and body["message_en"]
    assert case_count(node) == before
    # None of these used up the verification: it still accepts the applicant's case.
    both = [library_id(node, ZHOU, "M001"), library_id(node, ZHOU, "M002")]
    assert accept(client, node, ZHOU, ticket, both).status_code == 201


def test_a_failed_verification_cannot_accept(node: NodeContext, client: FlaskClient) -> None:
    failed = verify(client, node, ZHOU.id_number, "biden_biden2.jpg")
    assert failed["match"] is False
    response = accept(client, node, ZHOU, failed["verification_id"], [])
    assert response.status_code == 409 and response.get_json()["error"] == "verification_failed"


def test_an_expired_material_is_refused_and_an_incomplete_acceptance_keeps_the_ticket(
    node: NodeContext, client: FlaskClient
) -> None:
    assert node.library is not None
    key = node.cases.pii.lookup_key(ZHOU.id_number)
    expired = node.library.add(
        material_id=node.library.new_id(node.config.code),
        owner_key=key,
        material_code="M051",
        grade="checked",
        issuer="test-window",
        issued_on=date.today() - timedelta(days=400),
        valid_until=date.today() - timedelta(days=1),
        content=b"bank account, old",
    )
    ticket = verify(client, node, ZHOU.id_number, "obama3.jpg")["verification_id"]
    before = case_count(node)
    response = accept(client, node, ZHOU, ticket, [expired.material_id])
    assert response.status_code == 409 and response.get_json()["error"] == "material_expired"
    # Without the application form (M003) the answer is the one-time notice; nothing written, ticket kept.
    incomplete = accept(client, node, ZHOU, ticket, [], materials=["M001", "M002"])
    assert incomplete.status_code == 200 and incomplete.get_json()["outcome"] == "incomplete"
    assert case_count(node) == before
    both = [library_id(node, ZHOU, "M001"), library_id(node, ZHOU, "M002")]
    assert accept(client, node, ZHOU, ticket, both).status_code == 201


def test_the_window_stores_a_checked_material_once_and_the_applicant_sees_every_use(
    node: NodeContext, client: FlaskClient
) -> None:
    stored = client.post(
        "/api/v1/identity/materials",
        data={
            "id_number": TAN.id_number,
            "material_code": "M051",
            "grade": "checked",
            "valid_until": (date.today() + timedelta(days=365)).isoformat(),
            "file": (io.BytesIO(b"%PDF-1.4 bank account"), "bank.pdf", "application/pdf"),
        },
        headers=headers(client, node),
        content_type="multipart/form-data",
    )
    assert stored.status_code == 201, stored.get_json()
    record = stored.get_json()
    assert record["grade"] == "checked" and len(record["sha256"]) == 64 and "owner_key" not in record
    assert node.library is not None and node.library.content(record["material_id"]) == b"%PDF-1.4 bank account"
    for grade, code, error in (("issued", "M051", "invalid_grade"), ("checked", "M999", "unknown_material")):
        refused = client.post(
            "/api/v1/identity/materials",
            data={"id_number": TAN.id_number, "material_code": code, "grade": grade, "file": (io.BytesIO(b"x"), "x")},
            headers=headers(client, node),
            content_type="multipart/form-data",
        )
        assert refused.status_code == 422 and refused.get_json()["error"] == error

    verified = verify(client, node, TAN.id_number, "kit_harington_john2.jpeg")
    assert verified["match"], verified
    reused = [record["material_id"], library_id(node, TAN, "M001"), library_id(node, TAN, "M002")]
    accepted = accept(client, node, TAN, verified["verification_id"], reused, materials=["M003"])
    assert accepted.status_code == 201, accepted.get_json()
    case_no = accepted.get_json()["case_no"]

    uses = client.post("/api/v1/identity/public/uses", json={"case_no": case_no, "id_number": TAN.id_number})
    assert uses.status_code == 200
    seen = uses.get_json()["uses"]
    reused_here = {u["material_code"] for u in seen if u["kind"] == "material" and u["case_no"] == case_no}
    assert reused_here == {"M001", "M002", "M051"}
    assert all(u["node"] == ZIYANG_VILLAGE and u["node_name"] and u["role"] == "acceptor" for u in seen)
    assert {"verification", "register"} <= {u["kind"] for u in seen}
    # Somebody else's ID number with this case number learns nothing.
    other = client.post("/api/v1/identity/public/uses", json={"case_no": case_no, "id_number": ZHOU.id_number})
    assert other.status_code == 404 and other.get_json()["error"] == "case_not_found"
