"""Sealed results wired into the node: approval seals the result, staff and the applicant download it,
``tongban verify`` and the public ``/verify`` page tell valid from tampered, forged or foreign."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from node.adapters.pki import CertificateAuthority
from node.adapters.result_pdf import ResultContent, seal_result, split_sealed, verify_result
from node.adapters.seal import DepartmentSeal, verify_signed_record
from node.adapters.seal_keys import TrustBundle
from node.bootstrap import NodeContext
from node.domain.catalogue import load_seed_catalogue
from node.domain.identifiers import make_credit_code, make_id_number
from node.domain.licence import Licence, LicenceStatus, parse_identifier, status_of
from node.domain.seal import SealRejected, parse_signature
from node.entrypoints.web.commands import accept_case_from_json, act_on_case_from_json
from node.runtime.services import PROJECT_ROOT
from node.service_layer.commands import Actor, PublishMatter
from tests.conftest import TEST_PASSWORD, Services, client_for, make_node, token_for
from tests.test_api_cases import accept_body
from tests.test_sync_link import ACCEPTOR, APPROVER, CITY, COUNTY_B, VILLAGE_B1, nodes, sync_all
from tiers.demo import HESHAN, HESHAN_VILLAGE

__all__ = ["nodes"]  # the fixture, imported for pytest

DIBAO = "430900-JF-0001"  # 最低生活保障审核确认: civil affairs, county, by residence, no fee
DIBAO_MATERIALS = ["M001", "M002", "M013", "M003"]
RESIDENT = make_id_number("430903", date(1985, 3, 15), 124)
APPLICANT_NAME = "李秀英"
ID_CARD = "430900-QR-0003"  # 居民身份证换领: the fee falls due at acceptance
FOOD_LICENCE = "430900-XK-0004"  # 食品经营许可: market regulation, county, by registered place


def approved_case(client: FlaskClient, node: NodeContext) -> str:
    acceptor = token_for(client, node, "acceptor")
    approver = token_for(client, node, "approver.civil_affairs")
    body = {
        "matter_code": DIBAO,
        "applicant": {"kind": "person", "id_number": RESIDENT, "name": APPLICANT_NAME},
        "materials": DIBAO_MATERIALS,
        "residence_code": HESHAN_VILLAGE,
    }
    created = client.post("/api/v1/cases", json=body, headers=acceptor)
    assert created.status_code == 201, created.get_json()
    case_no = created.get_json()["case_no"]
    approved = client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "approve"}, headers=approver)
    assert approved.status_code == 200, approved.get_json()
    return case_no


def sign_in(client: FlaskClient, node: NodeContext, username: str) -> None:
    token_for(client, node, username)  # creates the account
    client.get("/login")
    with client.session_transaction() as session:
        csrf = session.get("csrf")
    response = client.post("/login", data={"username": username, "password": TEST_PASSWORD, "csrf_token": csrf})
    assert response.status_code in (302, 303), response.get_data(as_text=True)[:500]


def csrf_of(client: FlaskClient, page: str) -> str:
    html = client.get(page).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def verify_command(pdf: Path, trust: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "node.entrypoints.cli", "verify", str(pdf), "--trust", str(trust)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def qr_payload_of(pdf: bytes) -> str:
    _signed, der = split_sealed(pdf)
    info = parse_signature(der).property_info
    return info.split(";qr=", 1)[1]


@pytest.fixture
def county(county_node: NodeContext) -> tuple[NodeContext, FlaskClient, str]:
    client = client_for(county_node)
    return county_node, client, approved_case(client, county_node)


def test_approval_seals_the_result_and_staff_download_a_valid_pdf(
    county: tuple[NodeContext, FlaskClient, str], city_ca: Path, tmp_path: Path
) -> None:
    node, client, case_no = county
    staff = token_for(client, node, "acceptor")
    response = client.get(f"/api/v1/cases/{case_no}/result.pdf", headers=staff)
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    pdf = response.data
    assert pdf.startswith(b"%PDF-") and b"/TongbanSeal" in pdf

    # The timeline says so, and the event carries the PDF only encrypted (it names the applicant).
    shown = client.get(f"/api/v1/cases/{case_no}", headers=staff).get_json()
    assert [e["type"] for e in shown["timeline"]][-2:] == ["approved", "result_sealed"]
    docs = node.store.all_docs(f"event:{case_no}:", f"event:{case_no}:\ufff0")
    raw = repr(docs)
    assert APPLICANT_NAME not in raw and RESIDENT not in raw

    good = tmp_path / "result.pdf"
    good.write_bytes(pdf)
    valid = verify_command(good, city_ca)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.splitlines()[0].startswith(f"valid {HESHAN}/civil_affairs")

    damaged = bytearray(pdf)
    damaged[len(pdf) // 3] ^= 0x01
    bad = tmp_path / "tampered.pdf"
    bad.write_bytes(bytes(damaged))
    tampered = verify_command(bad, city_ca)
    assert tampered.returncode == 1 and tampered.stdout.splitlines()[0] == "tampered"

    # No token, or a case this node does not hold: refused with a reason.
    assert client.get(f"/api/v1/cases/{case_no}/result.pdf").status_code == 401
    missing = client.get(f"/api/v1/cases/{HESHAN}-20200101-999/result.pdf", headers=staff)
    assert missing.status_code == 404 and missing.get_json()["message_en"]


def test_case_page_offers_the_download_to_staff(county: tuple[NodeContext, FlaskClient, str]) -> None:
    node, client, case_no = county
    sign_in(client, node, "acceptor")
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert "下载盖章结果文书" in page and f"{case_no}.R1" in page
    download = client.get(f"/cases/{case_no}/result.pdf")
    assert download.status_code == 200 and download.data.startswith(b"%PDF-")


def test_the_applicant_downloads_with_case_number_and_id_number(county: tuple[NodeContext, FlaskClient, str]) -> None:
    _node, client, case_no = county
    csrf = csrf_of(client, "/hall/fees")
    mine = client.post(
        "/hall/fees", data={"case_no": case_no, "id_number": RESIDENT, "action": "download", "csrf_token": csrf}
    )
    assert mine.status_code == 200 and mine.data.startswith(b"%PDF-")
    other = make_id_number("430903", date(1990, 1, 1), 77)
    refused = client.post(
        "/hall/fees", data={"case_no": case_no, "id_number": other, "action": "download", "csrf_token": csrf}
    )
    assert refused.status_code == 404
    assert "未找到与该身份证件号码匹配的案件" in refused.get_data(as_text=True)
    assert not refused.data.startswith(b"%PDF-")


def test_verify_page_tells_valid_tampered_forged_and_foreign(
    county: tuple[NodeContext, FlaskClient, str], tmp_path: Path
) -> None:
    node, client, case_no = county
    pdf = client.get(f"/api/v1/cases/{case_no}/result.pdf", headers=token_for(client, node, "acceptor")).data

    def upload(data: bytes) -> tuple[int, str]:
        csrf = csrf_of(client, "/verify")
        response = client.post(
            "/verify",
            data={"csrf_token": csrf, "file": (io.BytesIO(data), "result.pdf")},
            content_type="multipart/form-data",
        )
        return response.status_code, response.get_data(as_text=True)

    status, page = upload(pdf)
    assert status == 200 and 'data-status="valid"' in page and f"{HESHAN}/civil_affairs" in page
    damaged = bytearray(pdf)
    damaged[-200] ^= 0x20
    status, page = upload(bytes(damaged))
    assert status == 422 and 'data-status="tampered"' in page and "已被篡改" in page

    # A seal certified by another CA: unknown issuer, whatever it claims.
    other_ca = CertificateAuthority.ensure(tmp_path / "other-ca", "430900000000", "伪造的CA")
    forged_seal = DepartmentSeal.ensure(tmp_path / "seals", HESHAN, "civil_affairs", "益阳市赫山区民政局", other_ca)
    content = ResultContent(
        document_id="FAKE-1",
        kind="certificate",
        matter_code=DIBAO,
        matter_name="最低生活保障审核确认",
        case_no="FAKE",
        holder_name="某人",
        holder_key="k" * 64,
        issuer_name="益阳市赫山区民政局",
        issued_on=date.today(),
    )
    status, page = upload(seal_result(forged_seal, content))
    assert status == 422 and 'data-status="unknown_issuer"' in page

    # The QR link of the genuine document verifies; one with another hash is forged.
    payload = qr_payload_of(pdf)
    query = payload.split("?", 1)[1]
    shown = client.get("/verify?" + query).get_data(as_text=True)
    assert 'data-status="valid"' in shown
    forged_query = re.sub(r"h=[^&]+", "h=" + "A" * 43, query)
    forged = client.get("/verify?" + forged_query).get_data(as_text=True)
    assert 'data-status="tampered"' in forged


def test_a_rejected_case_gets_a_sealed_decision_not_to_grant(county_node: NodeContext) -> None:
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.civil_affairs")
    body = {
        "matter_code": DIBAO,
        "applicant": {"kind": "person", "id_number": RESIDENT, "name": APPLICANT_NAME},
        "materials": DIBAO_MATERIALS,
        "residence_code": HESHAN_VILLAGE,
    }
    case_no = client.post("/api/v1/cases", json=body, headers=acceptor).get_json()["case_no"]
    client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "reject", "reason": "收入超标"}, headers=approver)
    response = client.get(f"/api/v1/cases/{case_no}/result.pdf", headers=acceptor)
    assert response.status_code == 200
    verdict = verify_result(response.data, TrustBundle.build(county_node.identity.ca_pem))
    assert verdict.valid and verdict.issuer == f"{HESHAN}/civil_affairs"
    _signed, der = split_sealed(response.data)
    content = parse_signature(der).extensions
    record = json.loads(next(iter(content.values())))
    assert record["kind"] == "rejection" and record["items"] == {"不予办理理由": "收入超标"}
    # Not approved: nothing to pay after approval, no result to seal twice.
    timeline = client.get(f"/api/v1/cases/{case_no}", headers=acceptor).get_json()["timeline"]
    assert [e["type"] for e in timeline][-2:] == ["rejected", "result_sealed"]


def test_the_village_hands_over_the_result_sealed_at_the_county(nodes: dict[str, NodeContext]) -> None:
    """Accepted at the village, approved and sealed at 赫山区: after replication the village serves the
    applicant the county's sealed PDF (it travelled encrypted in the case's events) and it verifies."""
    village = nodes[VILLAGE_B1]
    case_no = village.bus.handle(accept_case_from_json(ACCEPTOR, accept_body(residence_code=VILLAGE_B1))).case_no
    assert case_no
    sync_all(nodes)
    county = nodes[COUNTY_B]
    county.bus.handle(act_on_case_from_json(APPROVER, case_no, {"action": "approve"}))
    sync_all(nodes)

    client = client_for(village)
    csrf = csrf_of(client, "/hall/fees")
    form = {"case_no": case_no, "id_number": RESIDENT, "action": "download", "csrf_token": csrf}
    response = client.post("/hall/fees", data=form)
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    verdict = verify_result(response.data, TrustBundle.build(village.identity.ca_pem))
    assert verdict.valid and verdict.issuer == f"{COUNTY_B}/civil_affairs"
    # The city, which relays the case, holds the same encrypted copy; no node holds it in plaintext.
    assert APPLICANT_NAME not in repr(nodes[CITY].store.all_docs(f"event:{case_no}:", f"event:{case_no}:\ufff0"))


def test_a_licence_matter_produces_a_signed_electronic_licence(county_node: NodeContext) -> None:
    """食品经营许可: the sealed PDF is a licence with a GB/T 36904 identifier and a validity, and the case
    carries the licence record signed by the issuing department (holder by key, no personal data)."""
    client = client_for(county_node)
    acceptor = token_for(client, county_node, "acceptor")
    approver = token_for(client, county_node, "approver.market_regulation")
    credit = make_credit_code("91430903MA4L00002")
    matter = load_seed_catalogue().get(FOOD_LICENCE)
    body = {
        "matter_code": FOOD_LICENCE,
        "applicant": {"kind": "enterprise", "credit_code": credit, "name": "益阳某某餐饮有限公司"},
        "materials": [m.code for m in matter.materials if m.required],
        "registered_code": HESHAN_VILLAGE,
    }
    created = client.post("/api/v1/cases", json=body, headers=acceptor)
    assert created.status_code == 201, created.get_json()
    case_no = created.get_json()["case_no"]
    approved = client.post(f"/api/v1/cases/{case_no}/actions", json={"action": "approve"}, headers=approver)
    assert approved.status_code == 200, approved.get_json()
    pdf = client.get(f"/api/v1/cases/{case_no}/result.pdf", headers=acceptor).data
    trust = TrustBundle.build(county_node.identity.ca_pem)
    verdict = verify_result(pdf, trust)
    assert verdict.valid and verdict.issuer == f"{HESHAN}/market_regulation"

    sealed = next(
        e for e in county_node.cases.verifier.verified_case(case_no).events if e.type.value == "result_sealed"
    )
    assert sealed.payload["kind"] == "licence"
    record = verify_signed_record(sealed.payload["licence"], trust)
    licence = Licence.from_record(record)
    assert str(parse_identifier(licence.identifier)) == licence.identifier
    assert licence.holder_kind == "enterprise" and credit not in repr(sealed.payload["licence"])
    assert licence.valid_until is not None and licence.valid_until > licence.valid_from
    assert licence.document_id == f"{case_no}.R1"
    # Changing the record breaks its signature.
    forged = {**sealed.payload["licence"], "record": {**record, "valid_until": "2099-12-31"}}
    with pytest.raises(SealRejected):
        verify_signed_record(forged, trust)

    sign_in(client, county_node, "acceptor")
    page = client.get(f"/cases/{case_no}").get_data(as_text=True)
    assert f'id="licence-id">{licence.identifier}<' in page

    # Revoking it is an event, signed by the issuing department; /verify then says revoked.
    approver_page = client_for(county_node)
    sign_in(approver_page, county_node, "approver.market_regulation")
    other = client_for(county_node)
    sign_in(other, county_node, "approver.civil_affairs")
    csrf = csrf_of(other, f"/cases/{case_no}")
    refused = other.post(f"/cases/{case_no}/licence/revoke", data={"csrf_token": csrf, "reason": "违法经营"})
    assert refused.status_code == 303
    assert "只有颁发部门可以注销该证照" in other.get(f"/cases/{case_no}").get_data(as_text=True)
    csrf = csrf_of(approver_page, f"/cases/{case_no}")
    done = approver_page.post(f"/cases/{case_no}/licence/revoke", data={"csrf_token": csrf, "reason": "违法经营"})
    assert done.status_code == 303
    assert 'id="licence-revoked"' in approver_page.get(f"/cases/{case_no}").get_data(as_text=True)
    events = county_node.cases.verifier.verified_case(case_no).events
    revoked = next(e for e in events if e.type.value == "licence_revoked")
    revocation = verify_signed_record(revoked.payload["signed"], trust)
    assert status_of(licence, [revocation], date.today()) is LicenceStatus.REVOKED
    csrf = csrf_of(client, "/verify")
    shown = client.post(
        "/verify",
        data={"csrf_token": csrf, "file": (io.BytesIO(pdf), "licence.pdf")},
        content_type="multipart/form-data",
    )
    assert shown.status_code == 422 and 'data-status="revoked"' in shown.get_data(as_text=True)


def test_editing_a_matter_keeps_when_its_fee_falls_due(services: Services, city_ca: Path, tmp_path: Path) -> None:
    """The catalogue's edit form does not show ``fee_due`` yet: saving a matter must not reset it."""
    city = make_node(services, city_ca, tmp_path / "city", CITY)
    catalogue = city.catalogue
    matter = catalogue.get(ID_CARD).to_dict()
    assert matter.pop("fee_due") == "on_acceptance"
    edited = {**matter, "name": "居民身份证换领（到期换领）"}
    admin = Actor("admin", "admin", None)
    city.bus.handle(PublishMatter(admin, edited, based_on=catalogue.version, is_new=False))
    after = city.catalogue.get(ID_CARD)
    assert after.name == "居民身份证换领（到期换领）" and after.fee_due == "on_acceptance"
