"""The acceptance window with face verification (server-rendered, real node): photo → the form fills in from
the register, the library's materials are reused, the case records the verification; the wrong person is
refused; the citizen query lists every use of the applicant's data.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from node.adapters.demo_people import load_demo_people
from node.bootstrap import NodeContext
from node.service_layer.registers import ensure_demo_people
from tests.conftest import Services, make_node
from tests.test_pages import CASE_URL, client_for, csrf_from, sign_in
from tiers.demo import ZIYANG_VILLAGE

FACES = Path(__file__).parent / "data" / "faces"
MATTER = "430900-JF-0004"  # 高龄津贴申领
ZHOU = next(p.record for p in load_demo_people() if p.record.name == "周建国")


@pytest.fixture
def window(services: Services, city_ca: Path, tmp_path: Path) -> tuple[NodeContext, FlaskClient]:
    node = make_node(services, city_ca, tmp_path / "village", ZIYANG_VILLAGE)
    assert node.registers and node.library
    ensure_demo_people(node.config.code, node.tree, node.registers, node.library, node.cases.pii)
    client = client_for(node)
    sign_in(client, node, "acceptor")
    return node, client


def identify(client: FlaskClient, token: str, photo: str) -> tuple[int, str]:
    response = client.post(
        "/accept/identify",
        data={
            "csrf_token": token,
            "matter_code": MATTER,
            "id_number": ZHOU.id_number,
            "photo": (io.BytesIO((FACES / photo).read_bytes()), photo),
        },
        content_type="multipart/form-data",
    )
    return response.status_code, response.get_data(as_text=True)


def value_of(page: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert match, f"no {name} in the page"
    return match.group(1)


def test_a_verified_applicant_fills_the_form_and_reuses_library_materials(
    window: tuple[NodeContext, FlaskClient],
) -> None:
    node, client = window
    token = csrf_from(client, f"/accept?matter={MATTER}")
    status, page = identify(client, token, "test_obama1.jpg")
    assert status == 200, page
    assert "人脸核验通过" in page and ZHOU.name in page
    assert value_of(page, "applicant_name") == ZHOU.name
    assert value_of(page, "residence_code") == ZHOU.residence_code
    ticket = value_of(page, "verification_ticket")
    reused = re.findall(r'name="library_material" value="([^"]+)" checked', page)
    assert len(reused) == 2  # 居民身份证 and 居民户口簿 from the library

    response = client.post(
        "/accept",
        data={
            "csrf_token": token,
            "matter_code": MATTER,
            "applicant_kind": "person",
            "applicant_id": ZHOU.id_number,
            "applicant_name": ZHOU.name,
            "residence_code": ZHOU.residence_code,
            "materials": ["M001", "M002", "M051", "M003"],
            "verification_ticket": ticket,
            "library_material": reused,
        },
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    match = CASE_URL.search(response.headers["Location"])
    assert match
    case = node.cases.load(match.group(1))
    assert case.identity_verification and case.identity_verification["match"] is True
    assert {link["material_id"] for link in case.material_links} == set(reused)
    shown = client.get(f"/cases/{case.case_no}").get_data(as_text=True)
    assert "人脸核验通过" in shown and "复用材料库材料 2 件" in shown

    # The citizen query shows who used the applicant's data, where and for which case.
    citizen = client_for(node)
    query_token = csrf_from(citizen, "/query")
    proof = {"case_no": case.case_no, "id_number": ZHOU.id_number, "csrf_token": query_token}
    found = citizen.post("/query", data=proof)
    text = found.get_data(as_text=True)
    assert found.status_code == 200 and 'id="data-uses"' in text
    assert text.count('class="use-material"') == 2 and "人脸核验" in text and case.case_no in text
    assert "迎风桥第1村" in text


def test_the_wrong_persons_photo_is_refused_and_nothing_is_filled(window: tuple[NodeContext, FlaskClient]) -> None:
    _node, client = window
    token = csrf_from(client, f"/accept?matter={MATTER}")
    status, page = identify(client, token, "biden_biden2.jpg")
    assert status == 409
    assert "人脸核验未通过" in page and ZHOU.name not in page
    assert 'name="verification_ticket"' not in page
    status, page = identify(client, token, "two_people.jpg")
    assert status == 400 and "2 张人脸" in page
