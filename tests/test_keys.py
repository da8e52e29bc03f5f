"""The city CA, node identities, event signatures and certificate documents (node/adapters/pki/)."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from node.adapters.pki import (
    CertificateAuthority,
    NodeIdentity,
    cert_sha256,
    certificate_doc,
    verify_certificate,
    verify_department_certificate,
    verify_signature,
)
from node.adapters.pki.common import CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE
from node.domain.errors import DomainError, ErrorKind
from tiers.demo import CITY, ZIYANG

COUNTY = ZIYANG
VILLAGE = "430902001201"
DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _public_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "ca", CITY, "益阳市")


@pytest.fixture
def county(tmp_path: Path, ca: CertificateAuthority) -> NodeIdentity:
    return NodeIdentity.ensure(tmp_path / "county", COUNTY, "资阳区", "county", ca)


@pytest.fixture
def village(tmp_path: Path, ca: CertificateAuthority) -> NodeIdentity:
    return NodeIdentity.ensure(tmp_path / "village", VILLAGE, "某某村", "village", ca)


def _rejected(excinfo: pytest.ExceptionInfo[DomainError], code: str) -> DomainError:
    err = excinfo.value
    assert err.code == code
    assert err.kind is ErrorKind.UNAUTHENTICATED
    assert err.message_zh and err.message_en
    return err


# -- the certificate authority ---------------------------------------------------------------


def test_ca_create_load_round_trip(tmp_path: Path, ca: CertificateAuthority) -> None:
    directory = tmp_path / "ca"
    assert _mode(directory / "ca.key") == 0o600
    assert (directory / "ca.pem").read_bytes() == ca.certificate_pem

    loaded = CertificateAuthority.load(directory)
    assert loaded.cert_sha256 == ca.cert_sha256
    assert loaded.city_code == CITY
    assert loaded.city_name == "益阳市"

    cert = x509.load_pem_x509_certificate(ca.certificate_pem)
    assert cert.subject.rfc4514_string() == f"O=益阳市,CN=Tongban City CA {CITY}"
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3654)

    # a loaded CA issues certificates that verify under the original CA certificate
    pem = loaded.issue_node_certificate(COUNTY, "资阳区", "county", _public_pem())
    assert verify_certificate(pem, ca.certificate_pem) == COUNTY


def test_ca_create_refuses_to_overwrite_and_ensure_is_idempotent(tmp_path: Path, ca: CertificateAuthority) -> None:
    with pytest.raises(DomainError) as excinfo:
        CertificateAuthority.create(tmp_path / "ca", CITY, "益阳市")
    assert excinfo.value.code == "ca_exists"
    assert CertificateAuthority.ensure(tmp_path / "ca", CITY, "益阳市").cert_sha256 == ca.cert_sha256

    fresh = CertificateAuthority.ensure(tmp_path / "other", CITY, "益阳市")
    assert CertificateAuthority.ensure(tmp_path / "other", CITY, "益阳市").cert_sha256 == fresh.cert_sha256
    assert fresh.cert_sha256 != ca.cert_sha256
    with pytest.raises(DomainError) as excinfo:
        CertificateAuthority.ensure(tmp_path / "other", "431000000000", "别的市")
    assert excinfo.value.code == "ca_mismatch"


def test_ca_load_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DomainError) as excinfo:
        CertificateAuthority.load(tmp_path / "nothing")
    assert excinfo.value.code == "ca_missing"
    assert excinfo.value.kind is ErrorKind.NOT_FOUND


# -- node certificates -----------------------------------------------------------------------


def test_node_identity_files_and_certificate(tmp_path: Path, ca: CertificateAuthority, county: NodeIdentity) -> None:
    assert _mode(tmp_path / "county" / "node.key") == 0o600
    assert county.node_code == COUNTY
    assert county.node_name == "资阳区"
    assert county.tier == "county"
    assert county.ca_pem == ca.certificate_pem
    assert county.cert_sha256 == cert_sha256(county.certificate_pem)
    assert (tmp_path / "county" / NODE_CERT_FILE).read_bytes() == county.certificate_pem
    assert verify_certificate(county.certificate_pem, county.ca_pem) == COUNTY

    cert = x509.load_pem_x509_certificate(county.certificate_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:tongban:node:{COUNTY}"]
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert any(str(ip) == "127.0.0.1" for ip in san.get_values_for_type(x509.IPAddress))
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    loaded = NodeIdentity.load(tmp_path / "county")
    assert loaded.cert_sha256 == county.cert_sha256
    assert loaded.sign(DIGEST)["signer"] == COUNTY


def test_ensure_is_idempotent(tmp_path: Path, ca: CertificateAuthority, county: NodeIdentity) -> None:
    key_before = (tmp_path / "county" / "node.key").read_bytes()
    again = NodeIdentity.ensure(tmp_path / "county", COUNTY, "资阳区", "county", ca)
    assert again.cert_sha256 == county.cert_sha256
    without_ca = NodeIdentity.ensure(tmp_path / "county", COUNTY, "资阳区", "county", None)
    assert without_ca.cert_sha256 == county.cert_sha256
    assert (tmp_path / "county" / "node.key").read_bytes() == key_before


def test_ensure_reissues_under_a_new_ca_keeping_the_key(tmp_path: Path, county: NodeIdentity) -> None:
    new_ca = CertificateAuthority.create(tmp_path / "new-ca", CITY, "益阳市")
    renewed = NodeIdentity.ensure(tmp_path / "county", COUNTY, "资阳区", "county", new_ca)
    assert renewed.cert_sha256 != county.cert_sha256
    assert renewed.certificate.public_key() == county.certificate.public_key()
    assert verify_certificate(renewed.certificate_pem, new_ca.certificate_pem) == COUNTY


def test_ensure_refuses_another_nodes_directory(tmp_path: Path, ca: CertificateAuthority, county: NodeIdentity) -> None:
    with pytest.raises(DomainError) as excinfo:
        NodeIdentity.ensure(tmp_path / "county", VILLAGE, "某某村", "village", ca)
    assert excinfo.value.code == "node_identity_mismatch"


def test_ensure_without_ca_writes_public_key_for_out_of_band_issuance(tmp_path: Path, ca: CertificateAuthority) -> None:
    directory = tmp_path / "remote"
    with pytest.raises(DomainError) as excinfo:
        NodeIdentity.ensure(directory, VILLAGE, "某某村", "village")
    assert excinfo.value.code == "node_certificate_missing"
    assert _mode(directory / "node.key") == 0o600

    # the city certifies the public key; the operator installs the two certificates
    pem = ca.issue_node_certificate(VILLAGE, "某某村", "village", (directory / "node.pub.pem").read_bytes())
    (directory / "node.pem").write_bytes(pem)
    (directory / "ca.pem").write_bytes(ca.certificate_pem)
    identity = NodeIdentity.ensure(directory, VILLAGE, "某某村", "village")
    assert identity.cert_sha256 == cert_sha256(pem)


def test_certificate_from_another_ca_is_rejected(tmp_path: Path, ca: CertificateAuthority) -> None:
    # another city altogether: wrong issuer
    other_city = CertificateAuthority.create(tmp_path / "other-city", "431000000000", "别的市")
    foreign = NodeIdentity.ensure(tmp_path / "foreign", COUNTY, "资阳区", "county", other_city)
    with pytest.raises(DomainError) as excinfo:
        verify_certificate(foreign.certificate_pem, ca.certificate_pem)
    assert "issuer" in _rejected(excinfo, "certificate_invalid").message_en

    # an impostor CA with the very same name: the issuer name matches, the signature does not
    impostor = CertificateAuthority.create(tmp_path / "impostor", CITY, "益阳市")
    forged = NodeIdentity.ensure(tmp_path / "forged", COUNTY, "资阳区", "county", impostor)
    with pytest.raises(DomainError) as excinfo:
        verify_certificate(forged.certificate_pem, ca.certificate_pem)
    assert "signature" in _rejected(excinfo, "certificate_invalid").message_en


def test_expired_and_not_yet_valid_certificates_are_rejected(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create(tmp_path / "old-ca", CITY, "益阳市", not_before=now - timedelta(days=365))
    backdated = now - timedelta(days=30)
    expired = ca.issue_node_certificate(COUNTY, "资阳区", "county", _public_pem(), days=1, not_before=backdated)
    with pytest.raises(DomainError) as excinfo:
        verify_certificate(expired, ca.certificate_pem)
    err = _rejected(excinfo, "certificate_invalid")
    assert "expired" in err.message_en
    assert "过期" in err.message_zh
    # it was valid back then (verifying an old event at its own time)
    assert verify_certificate(expired, ca.certificate_pem, at=backdated + timedelta(hours=1)) == COUNTY

    fresh = ca.issue_node_certificate(COUNTY, "资阳区", "county", _public_pem())
    with pytest.raises(DomainError) as excinfo:
        verify_certificate(fresh, ca.certificate_pem, at=now - timedelta(days=1))
    err = _rejected(excinfo, "certificate_invalid")
    assert "not yet valid" in err.message_en
    assert "CA" not in err.message_en

    # an expired CA certificate invalidates everything it issued
    with pytest.raises(DomainError) as excinfo:
        verify_certificate(fresh, ca.certificate_pem, at=now + timedelta(days=3700))
    assert "CA certificate has expired" in _rejected(excinfo, "certificate_invalid").message_en


def test_non_node_certificates_are_rejected(ca: CertificateAuthority) -> None:
    dept = ca.issue_department_certificate(COUNTY, "gaj", _public_pem())
    assert verify_department_certificate(dept, ca.certificate_pem) == (COUNTY, "gaj")
    san = x509.load_pem_x509_certificate(dept).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:tongban:dept:{COUNTY}:gaj"]
    for pem in (dept, ca.certificate_pem, b"not a certificate"):
        with pytest.raises(DomainError) as excinfo:
            verify_certificate(pem, ca.certificate_pem)
        _rejected(excinfo, "certificate_invalid")


def test_issue_rejects_bad_input(ca: CertificateAuthority) -> None:
    for args in (
        ("not-a-code", "x", "county", _public_pem()),
        (COUNTY, "资阳区", "province", _public_pem()),
        (COUNTY, "资阳区", "county", b"garbage"),
    ):
        with pytest.raises(DomainError) as excinfo:
            ca.issue_node_certificate(*args)
        assert excinfo.value.kind is ErrorKind.INVALID


# -- signatures ------------------------------------------------------------------------------


def test_sign_verify_round_trip(county: NodeIdentity) -> None:
    signature = county.sign(DIGEST)
    assert signature["alg"] == "ES256"
    assert signature["signer"] == COUNTY
    assert signature["cert_sha256"] == county.cert_sha256
    base64.b64decode(signature["value"], validate=True)
    json.dumps(signature)
    verify_signature(signature, DIGEST, county.certificate_pem, county.ca_pem)


def test_flipped_digest_is_rejected(county: NodeIdentity) -> None:
    signature = county.sign(DIGEST)
    flipped = ("0" if DIGEST[0] != "0" else "1") + DIGEST[1:]
    with pytest.raises(DomainError) as excinfo:
        verify_signature(signature, flipped, county.certificate_pem, county.ca_pem)
    _rejected(excinfo, "signature_invalid")


def test_signature_by_another_node_under_this_signer_is_rejected(county: NodeIdentity, village: NodeIdentity) -> None:
    forged = village.sign(DIGEST)
    forged["signer"] = COUNTY
    # presented with the real signer's certificate: fingerprint mismatch
    with pytest.raises(DomainError) as excinfo:
        verify_signature(forged, DIGEST, county.certificate_pem, county.ca_pem)
    _rejected(excinfo, "signature_invalid")
    # presented with the village's own certificate: signer ≠ certificate holder
    with pytest.raises(DomainError) as excinfo:
        verify_signature(forged, DIGEST, village.certificate_pem, village.ca_pem)
    _rejected(excinfo, "signature_invalid")
    # claiming the county's fingerprint too: the value does not verify with the county's key
    forged["cert_sha256"] = county.cert_sha256
    with pytest.raises(DomainError) as excinfo:
        verify_signature(forged, DIGEST, county.certificate_pem, county.ca_pem)
    _rejected(excinfo, "signature_invalid")


def test_tampered_signature_value_is_rejected(county: NodeIdentity) -> None:
    signature = county.sign(DIGEST)
    raw = bytearray(base64.b64decode(signature["value"]))
    raw[-1] ^= 0x01
    for value in (base64.b64encode(bytes(raw)).decode("ascii"), "!!not base64!!", ""):
        with pytest.raises(DomainError) as excinfo:
            verify_signature({**signature, "value": value}, DIGEST, county.certificate_pem, county.ca_pem)
        _rejected(excinfo, "signature_invalid")
    for broken in ({**signature, "alg": "RS256"}, {"alg": "ES256"}, "not a dict"):
        with pytest.raises(DomainError) as excinfo:
            verify_signature(broken, DIGEST, county.certificate_pem, county.ca_pem)  # type: ignore[arg-type]
        _rejected(excinfo, "signature_invalid")


def test_signature_with_untrusted_certificate_is_rejected(tmp_path: Path, ca: CertificateAuthority) -> None:
    impostor = CertificateAuthority.create(tmp_path / "impostor", CITY, "益阳市")
    forged = NodeIdentity.ensure(tmp_path / "forged", COUNTY, "资阳区", "county", impostor)
    signature = forged.sign(DIGEST)
    verify_signature(signature, DIGEST, forged.certificate_pem, impostor.certificate_pem)
    with pytest.raises(DomainError) as excinfo:
        verify_signature(signature, DIGEST, forged.certificate_pem, ca.certificate_pem)
    _rejected(excinfo, "signature_invalid")


# -- certificates as documents ---------------------------------------------------------------


def test_certificate_documents_carry_what_a_verifier_needs(
    ca: CertificateAuthority, county: NodeIdentity, village: NodeIdentity
) -> None:
    doc = json.loads(json.dumps(certificate_doc(county.certificate_pem.decode("ascii"))))
    assert doc == {
        "_id": f"cert:{COUNTY}:{county.cert_sha256}",
        "doc_type": "certificate",
        "node": COUNTY,
        "pem": county.certificate_pem.decode("ascii"),
    }
    dept = certificate_doc(ca.issue_department_certificate(COUNTY, "gaj", _public_pem()))
    assert dept["node"] == COUNTY and dept["department"] == "gaj" and dept["_id"].startswith(f"cert:{COUNTY}:")
    signature = village.sign(DIGEST)
    found = certificate_doc(village.certificate_pem)
    assert found["_id"] == f"cert:{signature['signer']}:{signature['cert_sha256']}"
    verify_signature(signature, DIGEST, found["pem"], ca.certificate_pem)
    with pytest.raises(DomainError) as excinfo:
        certificate_doc(ca.certificate_pem)  # the CA is not a node: nothing to publish
    _rejected(excinfo, "certificate_invalid")


# -- loopback mutual TLS ---------------------------------------------------------------------


def test_node_certificates_work_for_loopback_mutual_tls(county: NodeIdentity, village: NodeIdentity) -> None:
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(county.directory / NODE_CERT_FILE, county.directory / NODE_KEY_FILE)
    server_ctx.load_verify_locations(county.directory / CA_CERT_FILE)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname on
    client_ctx.load_cert_chain(village.directory / NODE_CERT_FILE, village.directory / NODE_KEY_FILE)
    client_ctx.load_verify_locations(village.directory / CA_CERT_FILE)

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    seen: dict[str, str] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            seen["client"] = verify_certificate(ssl.DER_cert_to_PEM_cert(der).encode(), county.ca_pem)
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(2) == b"ok"
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            seen["server"] = verify_certificate(ssl.DER_cert_to_PEM_cert(der).encode(), village.ca_pem)
        thread.join(10)
    finally:
        listener.close()
    assert seen == {"client": VILLAGE, "server": COUNTY}
