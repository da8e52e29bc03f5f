"""Department seals (node/adapters/seal.py) and the GB/T 38540 structures (node/domain/seal.py)."""

from __future__ import annotations

import hashlib
import io
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import Image

from node.adapters.seal import (
    DepartmentSeal,
    check_signature,
    ensure_node_seals,
    sign_record,
    verify_signed_record,
)
from node.adapters.seal_keys import CertificateAuthority, TrustBundle, issue_crl
from node.domain import seal as ses
from node.domain.catalogue import load_seed_catalogue
from node.domain.errors import DomainError
from node.domain.seal import SealRejected, VerdictStatus

NODE = "430903000000"
DEPT = "market"
NAME = "益阳市赫山区市场监督管理局"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "430900000000", "益阳市")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("other-ca"), "430100000000", "长沙市")


@pytest.fixture(scope="module")
def seals_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seals")


@pytest.fixture(scope="module")
def seal(seals_dir: Path, ca: CertificateAuthority) -> DepartmentSeal:
    return DepartmentSeal.ensure(seals_dir, NODE, DEPT, NAME, ca)


def test_seal_files_key_private_and_structure_names_the_department(
    seal: DepartmentSeal, seals_dir: Path, ca: CertificateAuthority
) -> None:
    directory = seals_dir / DEPT
    assert stat.S_IMODE((directory / "seal.key").stat().st_mode) == 0o600
    key_pem = (directory / "seal.key").read_bytes()
    assert b"PRIVATE KEY" in key_pem
    # the key appears in no public file and not in the seal structure
    key_body = b"".join(key_pem.splitlines()[1:-1])
    for public in ("seal.der", "seal.pem", "seal.png"):
        assert key_body not in (directory / public).read_bytes()
    assert "PRIVATE" not in repr(seal)

    parsed = ses.SESeal.load(seal.seal_der)
    info = parsed["eSealInfo"]
    assert info["header"]["id"].native == "ES" and info["header"]["version"].native == 4
    assert info["esID"].native == f"TB{NODE}-{DEPT}"
    assert info["property"]["name"].native == NAME
    cert = asn1_x509.Certificate.load(info["property"]["certList"][0].native)
    assert cert.subject.native["common_name"] == DEPT
    assert cert.issuer == asn1_x509.Certificate.load(ca.certificate.public_bytes(Encoding.DER)).subject
    assert parsed["signAlgID"].dotted == ses.ALG_ECDSA_SHA256
    image = Image.open(io.BytesIO(info["picture"]["data"].native))
    assert image.format == "PNG" and image.size == (320, 320)
    red = sum(1 for px in image.get_flattened_data() if px[3] > 0 and px[0] > 180 and px[1] < 80)
    assert red > 5000  # a ring, a star and the name: plenty of red


def test_ensure_is_idempotent_and_load_finds_the_same_seal(seal: DepartmentSeal, seals_dir: Path, ca) -> None:
    again = DepartmentSeal.ensure(seals_dir, NODE, DEPT, NAME, ca)
    assert again.seal_der == seal.seal_der
    loaded = DepartmentSeal.load(seals_dir, DEPT)
    assert loaded.certificate == seal.certificate and loaded.issuer == f"{NODE}/{DEPT}"
    with pytest.raises(DomainError) as err:
        DepartmentSeal.load(seals_dir, "nobody")
    assert err.value.code == "seal_missing"


def test_signature_verifies_and_is_canonical_der(seal: DepartmentSeal, ca: CertificateAuthority) -> None:
    digest = hashlib.sha256(b"the document").digest()
    der = seal.sign(digest, "doc=R-1")
    checked = check_signature(der, digest, TrustBundle.from_ca(ca))
    assert checked.issuer == f"{NODE}/{DEPT}" and checked.seal_name == NAME and checked.property_info == "doc=R-1"
    assert ses.encode(ses.SESSignature.load(der)) == der
    parsed = ses.parse_signature(der)
    assert parsed.algorithm == ses.ALG_ECDSA_SHA256 and parsed.data_hash == digest


def test_other_hash_other_ca_and_bit_flips_are_refused(
    seal: DepartmentSeal, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> None:
    digest = hashlib.sha256(b"the document").digest()
    der = seal.sign(digest, "doc=R-1")
    trust = TrustBundle.from_ca(ca)
    with pytest.raises(SealRejected) as err:
        check_signature(der, hashlib.sha256(b"another").digest(), trust)
    assert err.value.status is VerdictStatus.TAMPERED
    with pytest.raises(SealRejected) as err:
        check_signature(der, digest, TrustBundle.from_ca(other_ca))
    assert err.value.status is VerdictStatus.UNKNOWN_ISSUER
    statuses = set()
    for position in range(0, len(der), max(1, len(der) // 40)):
        flipped = bytearray(der)
        flipped[position] ^= 0x01
        with pytest.raises(SealRejected) as err:
            check_signature(bytes(flipped), digest, trust)
        statuses.add(err.value.status)
    assert statuses <= {VerdictStatus.TAMPERED, VerdictStatus.UNKNOWN_ISSUER}


def test_revoked_certificate_and_signature_outside_validity(
    seal: DepartmentSeal, ca: CertificateAuthority, tmp_path: Path
) -> None:
    digest = hashlib.sha256(b"x").digest()
    der = seal.sign(digest, "doc=R-2")
    crl = issue_crl(ca, [(seal.certificate.serial_number, datetime.now(UTC))])
    with pytest.raises(SealRejected) as err:
        check_signature(der, digest, TrustBundle.build(ca.certificate_pem, crl))
    assert err.value.status is VerdictStatus.REVOKED
    # a CRL of another serial changes nothing
    other = issue_crl(ca, [(12345, datetime.now(UTC))])
    assert check_signature(der, digest, TrustBundle.build(ca.certificate_pem, other)).issuer == seal.issuer

    old = DepartmentSeal.ensure(
        tmp_path, NODE, "expired-dept", "过期部门", ca, days=10, not_before=datetime.now(UTC) - timedelta(days=30)
    )
    with pytest.raises(DomainError) as refused:
        old.sign(digest, "doc=R-3")
    assert refused.value.code == "seal_expired"
    late = old.sign_unchecked(digest, "doc=R-3", datetime.now(UTC))
    with pytest.raises(SealRejected) as err:
        check_signature(late, digest, TrustBundle.from_ca(ca))
    assert err.value.status is VerdictStatus.EXPIRED


def test_crl_of_another_ca_is_not_accepted(ca: CertificateAuthority, other_ca: CertificateAuthority) -> None:
    with pytest.raises(DomainError) as err:
        TrustBundle.build(ca.certificate_pem, issue_crl(other_ca, []))
    assert err.value.code == "trust_bundle_invalid"


def test_malformed_structures_are_tampered_not_crashes(ca: CertificateAuthority) -> None:
    trust = TrustBundle.from_ca(ca)
    for junk in (b"", b"\x30\x03\x02\x01\x04", b"\x00" * 100, b"\x30\x84\xff\xff\xff\xff", b"A" * 300_000):
        with pytest.raises(SealRejected) as err:
            check_signature(junk, b"\x00" * 32, trust)
        assert err.value.status is VerdictStatus.TAMPERED


def test_signed_records_check_issuer_and_content(
    seal: DepartmentSeal, ca: CertificateAuthority, other_ca: CertificateAuthority, tmp_path: Path
) -> None:
    record = {"record_type": "licence_revoked", "identifier": "X", "issuer_node": NODE, "issuer_department": DEPT}
    signed = sign_record(seal, record)
    assert verify_signed_record(signed, TrustBundle.from_ca(ca)) == record
    changed = {**signed, "record": {**record, "identifier": "Y"}}
    with pytest.raises(SealRejected) as err:
        verify_signed_record(changed, TrustBundle.from_ca(ca))
    assert err.value.status is VerdictStatus.TAMPERED
    with pytest.raises(SealRejected) as err:
        verify_signed_record(signed, TrustBundle.from_ca(other_ca))
    assert err.value.status is VerdictStatus.UNKNOWN_ISSUER
    with pytest.raises(DomainError) as refused:
        sign_record(seal, {**record, "issuer_department": "health"})
    assert refused.value.code == "record_issuer_mismatch"
    # a record naming another department, signed by this one, is refused on verification too
    intruder = DepartmentSeal.ensure(tmp_path, NODE, "health", "卫健局", ca)
    forged = sign_record(intruder, {**record, "issuer_department": "health"})
    forged["record"]["issuer_department"] = DEPT
    with pytest.raises(SealRejected):
        verify_signed_record(forged, TrustBundle.from_ca(ca))


def test_every_department_of_a_node_gets_its_own_seal(ca: CertificateAuthority, tmp_path: Path) -> None:
    departments = [(d.code, d.name_zh) for d in load_seed_catalogue().departments()]
    seals = ensure_node_seals(tmp_path, NODE, "益阳市赫山区", departments, ca)
    assert set(seals) == {code for code, _ in departments} and len(seals) >= 2
    assert seals["public_security"].name == "益阳市赫山区公安局"  # 公安局（户政）: no parenthetical on a seal
    keys = {s.certificate.public_key().public_numbers() for s in seals.values()}
    assert len(keys) == len(seals)
    trust = TrustBundle.from_ca(ca)
    digest = hashlib.sha256(b"r").digest()
    assert (
        check_signature(seals["public_security"].sign(digest, "d"), digest, trust).department_code == "public_security"
    )
