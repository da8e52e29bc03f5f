"""Sealed result PDFs (node/adapters/result_pdf.py) and `tongban verify` (node/entrypoints/verify.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pypdf
import pytest

from node.adapters.pki.common import CA_CERT_FILE
from node.adapters.result_pdf import (
    CONTENT_OID,
    PROPERTY_PREFIX,
    ResultContent,
    attach_seal,
    parse_qr_payload,
    qr_payload,
    render_pdf,
    seal_pdf,
    seal_result,
    verify_qr_payload,
    verify_result,
)
from node.adapters.seal import DepartmentSeal
from node.adapters.seal_keys import CertificateAuthority, TrustBundle, issue_crl
from node.domain.seal import VerdictStatus
from node.entrypoints import verify

NODE = "430903000000"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "430900000000", "益阳市")


@pytest.fixture(scope="module")
def seal(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority) -> DepartmentSeal:
    return DepartmentSeal.ensure(tmp_path_factory.mktemp("seals"), NODE, "market", "益阳市赫山区市场监督管理局", ca)


@pytest.fixture(scope="module")
def trust(ca: CertificateAuthority) -> TrustBundle:
    return TrustBundle.from_ca(ca)


def content(document_id: str = "R-430903-2026-000001", **changes: object) -> ResultContent:
    fields: dict[str, object] = {
        "document_id": document_id,
        "kind": "licence",
        "matter_code": "MKT-001",
        "matter_name": "食品经营许可",
        "case_no": "430903-20261201-0001",
        "holder_name": "张三",
        "holder_key": "person:7f3a9c",
        "issuer_name": "益阳市赫山区市场监督管理局",
        "issued_on": date(2026, 12, 1),
        "valid_until": date.today() + timedelta(days=5 * 365),
        "licence_id": "1.2.156.3005.2.11100000000013338W008.91430903MA4L0000XK.2026120100001.001.K",
        "items": {"经营场所": "益阳市赫山区龙岭大道 1 号", "主体业态": "食品销售经营者"},
    }
    fields.update(changes)
    return ResultContent(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sealed(seal: DepartmentSeal) -> bytes:
    return seal_result(seal, content(), "https://430903.tongban.example")


def test_valid_pdf_opens_in_a_reader_and_verifies(sealed: bytes, trust: TrustBundle) -> None:
    verdict = verify_result(sealed, trust)
    assert verdict.status is VerdictStatus.VALID
    assert verdict.issuer == f"{NODE}/market" and verdict.document_id == "R-430903-2026-000001"
    reader = pypdf.PdfReader(io.BytesIO(sealed))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert "许可证" in text and "食品经营许可" in text and "R-430903-2026-000001" in text


@pytest.mark.parametrize("kind", ["decision", "certificate", "licence"])
def test_every_template_renders_and_verifies(seal: DepartmentSeal, trust: TrustBundle, kind: str) -> None:
    pdf = seal_result(seal, content(f"R-{kind}", kind=kind))
    assert verify_result(pdf, trust).status is VerdictStatus.VALID
    title = {"decision": "准予行政许可决定书", "certificate": "证明", "licence": "许可证"}[kind]
    assert title in pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_one_byte_changed_anywhere_is_tampered(sealed: bytes, trust: TrustBundle) -> None:
    seal_start = sealed.rfind(b"<< /Type /TongbanSeal")
    positions = sorted(
        {0, 9, len(sealed) // 3, len(sealed) // 2, seal_start - 40, seal_start + 200, len(sealed) - 60}
        | set(range(100, len(sealed), len(sealed) // 25))
        | {len(sealed) - 3}
    )
    for position in positions:
        changed = bytearray(sealed)
        changed[position] = (changed[position] + 1) % 256
        verdict = verify_result(bytes(changed), trust)
        assert verdict.status is VerdictStatus.TAMPERED, position
    assert verify_result(sealed + b"\n", trust).status is VerdictStatus.TAMPERED
    assert verify_result(sealed[:-1], trust).status is VerdictStatus.TAMPERED
    unsealed = sealed[: sealed.rfind(b"<< /Type /TongbanSeal")]
    assert verify_result(unsealed, trust).status is VerdictStatus.TAMPERED
    assert verify_result(b"not a pdf", trust).status is VerdictStatus.TAMPERED


def test_random_damage_is_always_tampered_never_a_crash(sealed: bytes, trust: TrustBundle) -> None:
    rng = random.Random(15)
    seal_start = sealed.rfind(b"<< /Type /TongbanSeal")
    for _ in range(400):
        damaged = bytearray(sealed)
        # mostly inside the seal structure and trailer, where parsing is most exposed
        position = rng.randrange(seal_start - 50, len(damaged)) if rng.random() < 0.8 else rng.randrange(len(damaged))
        action = rng.random()
        if action < 0.6:
            damaged[position] = rng.randrange(256)
        elif action < 0.8:
            del damaged[position : position + rng.randrange(1, 40)]
        else:
            damaged[position:position] = rng.randbytes(rng.randrange(1, 20))
        if bytes(damaged) != sealed:
            assert verify_result(bytes(damaged), trust).status is VerdictStatus.TAMPERED


def test_seal_of_another_ca_is_unknown_issuer(
    tmp_path: Path, sealed: bytes, trust: TrustBundle, ca: CertificateAuthority
) -> None:
    other_ca = CertificateAuthority.create(tmp_path / "ca", "430100000000", "长沙市")
    impostor = DepartmentSeal.ensure(tmp_path / "seals", NODE, "market", "益阳市赫山区市场监督管理局", other_ca)
    forged = seal_result(impostor, content())
    verdict = verify_result(forged, trust)
    assert verdict.status is VerdictStatus.UNKNOWN_ISSUER
    # and the genuine file is unknown to a verifier that trusts only the other city
    assert verify_result(sealed, TrustBundle.from_ca(other_ca)).status is VerdictStatus.UNKNOWN_ISSUER


def test_revoked_seal_certificate_or_document(sealed: bytes, seal: DepartmentSeal, ca: CertificateAuthority) -> None:
    crl = issue_crl(ca, [(seal.certificate.serial_number, datetime.now(UTC))])
    verdict = verify_result(sealed, TrustBundle.build(ca.certificate_pem, crl))
    assert verdict.status is VerdictStatus.REVOKED and verdict.issuer == seal.issuer
    revoked_doc = TrustBundle.build(ca.certificate_pem, None, ["R-430903-2026-000001"])
    assert verify_result(sealed, revoked_doc).status is VerdictStatus.REVOKED
    assert verify_result(sealed, TrustBundle.build(ca.certificate_pem, None, ["R-other"])).valid


def test_expired_document_and_seal_expired_at_signing(
    seal: DepartmentSeal, trust: TrustBundle, ca: CertificateAuthority, tmp_path: Path
) -> None:
    lapsed = seal_result(seal, content("R-lapsed", valid_until=date.today() - timedelta(days=1)))
    verdict = verify_result(lapsed, trust)
    assert verdict.status is VerdictStatus.EXPIRED and verdict.issuer == seal.issuer
    assert verify_result(lapsed, trust, at=datetime.now(UTC) - timedelta(days=2)).valid

    old = DepartmentSeal.ensure(
        tmp_path, NODE, "old", "旧印章部门", ca, days=10, not_before=datetime.now(UTC) - timedelta(days=40)
    )
    doc = content("R-old")
    qr = qr_payload(old, doc)
    pdf = render_pdf(doc, old.image_png, qr)
    der = old.sign_unchecked(
        hashlib.sha256(pdf).digest(),
        f"{PROPERTY_PREFIX};doc=R-old;qr={qr}",
        datetime.now(UTC),
        {CONTENT_OID: doc.to_json()},
    )
    assert verify_result(attach_seal(pdf, der), trust).status is VerdictStatus.EXPIRED


def test_forged_qr_is_tampered(
    seal: DepartmentSeal, trust: TrustBundle, ca: CertificateAuthority, tmp_path: Path
) -> None:
    doc = content("R-qr")
    genuine = qr_payload(seal, doc)
    assert verify_qr_payload(genuine, trust, seal.certificate_pem, doc).valid
    assert parse_qr_payload(genuine).document_id == "R-qr"

    query = {k: v[0] for k, v in parse_qs(urlsplit(genuine).query).items()}
    for field, value in (("d", "R-qr-2"), ("h", "A" * 43), ("i", f"{NODE}/health")):
        forged = "https://x/verify?" + urlencode({**query, field: value})
        assert verify_qr_payload(forged, trust, seal.certificate_pem).status is VerdictStatus.TAMPERED, field
    assert verify_qr_payload("https://x/verify?d=1", trust, seal.certificate_pem).status is VerdictStatus.TAMPERED
    # a genuine QR of another document does not vouch for this one
    other = qr_payload(seal, content("R-qr-other"))
    assert verify_qr_payload(other, trust, seal.certificate_pem, doc).status is VerdictStatus.TAMPERED

    # a PDF printed with a QR made by another department (same CA), then sealed: tampered
    intruder = DepartmentSeal.ensure(tmp_path, NODE, "health", "益阳市赫山区卫生健康局", ca)
    forged_qr = qr_payload(intruder, doc)
    pdf = seal_pdf(render_pdf(doc, seal.image_png, forged_qr), seal, doc, forged_qr)
    verdict = verify_result(pdf, trust)
    assert verdict.status is VerdictStatus.TAMPERED and "QR" in verdict.details_en


def test_verify_command_exit_codes_and_words(
    tmp_path: Path, sealed: bytes, ca: CertificateAuthority, seal: DepartmentSeal, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "trust"
    bundle.mkdir()
    (bundle / "ca.pem").write_bytes(ca.certificate_pem)
    good = tmp_path / "good.pdf"
    good.write_bytes(sealed)
    assert verify.main([str(good), "--trust", str(bundle)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("valid ") and f"{NODE}/market" in first
    assert verify.main([str(good), "--trust", str(bundle), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["verdict"] == "valid" and answer["document_id"] == "R-430903-2026-000001"

    bad = tmp_path / "bad.pdf"
    changed = bytearray(sealed)
    changed[len(changed) // 2] ^= 0x20
    bad.write_bytes(bytes(changed))
    assert verify.main([str(bad), "--trust", str(bundle)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == "tampered"

    (bundle / "crl.pem").write_bytes(issue_crl(ca, [(seal.certificate.serial_number, datetime.now(UTC))]))
    assert verify.main([str(good), "--trust", str(bundle)]) == 2
    assert capsys.readouterr().out.startswith("revoked")
    (bundle / "crl.pem").unlink()

    other = CertificateAuthority.create(tmp_path / "other", "430100000000", "长沙市")
    pem = tmp_path / "other.pem"
    pem.write_bytes(other.certificate_pem)
    assert verify.main([str(good), "--trust", str(pem)]) == 4
    assert capsys.readouterr().out.startswith("unknown issuer")

    assert verify.main([str(tmp_path / "missing.pdf"), "--trust", str(bundle)]) == 5
    assert verify.main([str(good), "--trust", str(tmp_path / "nowhere")]) == 5


def test_verify_runs_as_a_process_with_the_bundle_from_the_environment(
    tmp_path: Path, sealed: bytes, ca: CertificateAuthority
) -> None:
    good = tmp_path / "result.pdf"
    good.write_bytes(sealed)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TONGBAN_TRUST": str(ca.directory / CA_CERT_FILE)}
    env.pop("TONGBAN_NODE_CONFIG", None)
    run = subprocess.run(
        [sys.executable, "-m", "node.entrypoints.verify", str(good)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.startswith("valid "), run.stderr
    changed = bytearray(sealed)
    changed[200] ^= 0x01
    good.write_bytes(bytes(changed))
    run = subprocess.run(
        [sys.executable, "-m", "node.entrypoints.verify", str(good)], env=env, capture_output=True, text=True
    )
    assert run.returncode == 1 and run.stdout.splitlines()[0] == "tampered"
