"""The seals' one door to the key infrastructure: certificates from the city CA, its revocation list, trust bundles.

Every import of :mod:`node.adapters.pki` made by the seal, result and licence modules is here, so a
change of that module touches one file. This module also owns what ``keys`` does not have yet:

- :func:`issue_crl`: an X.509 CRL signed by the city CA (revoked department seal certificates).
  ``CertificateAuthority`` does not expose its key, so the CRL is signed with the key read from the
  CA's own directory (``ca.key``); at merge this can become a method of the CA.
- :class:`TrustBundle`: what an offline verifier trusts — the city CA certificate, optionally its
  CRL (checked against the CA before use) and a set of revoked document ids (from verified licence
  revocation records). A certificate carried inside a document is never trusted by itself.

A bundle on disk is a directory holding ``ca.pem`` and optionally ``crl.pem`` (a node's identity
directory already holds ``ca.pem``), or one PEM file with the CA certificate and optionally the CRL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node.adapters.pki import CertificateAuthority, cert_sha256, verify_department_certificate
from node.adapters.pki.common import CA_CERT_FILE, CA_KEY_FILE, DEPT_URN_PREFIX
from node.domain.errors import DomainError, ErrorKind

__all__ = [
    "CRL_FILE",
    "DEPT_URN_PREFIX",
    "CertificateAuthority",
    "TrustBundle",
    "cert_sha256",
    "issue_crl",
    "verify_department_certificate",
]

CRL_FILE = "crl.pem"
CRL_VALIDITY = timedelta(days=7)
MAX_BUNDLE_BYTES = 1 << 20


def _bundle_error(zh: str, en: str) -> DomainError:
    return DomainError("trust_bundle_invalid", f"信任包无效：{zh}", f"trust bundle invalid: {en}", ErrorKind.INVALID)


def issue_crl(
    ca: CertificateAuthority,
    revoked: Iterable[tuple[int, datetime]] = (),
    *,
    now: datetime | None = None,
    validity: timedelta = CRL_VALIDITY,
) -> bytes:
    """A CRL (PEM) signed by the city CA listing ``revoked`` (certificate serial, revocation time)."""
    key = serialization.load_pem_private_key((ca.directory / CA_KEY_FILE).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _bundle_error("CA 私钥不是椭圆曲线密钥", "the CA key is not an EC key")
    at = now or datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(at)
        .next_update(at + validity)
    )
    for serial, when in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TrustBundle:
    """The trust anchor of offline verification: the city CA certificate, its CRL, revoked documents."""

    ca_pem: bytes
    crl: x509.CertificateRevocationList | None = None
    revoked_documents: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def build(cls, ca_pem: bytes, crl_pem: bytes | None = None, revoked_documents: Iterable[str] = ()) -> TrustBundle:
        """Check the CA certificate is a CA and the CRL is signed by it, then bundle them."""
        try:
            ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError as exc:
            raise _bundle_error("CA 证书不是 PEM 证书", "the CA certificate is not a PEM certificate") from exc
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise _bundle_error("所给证书不是证书颁发机构", "the given certificate is not a certificate authority")
        crl = None
        if crl_pem:
            try:
                crl = x509.load_pem_x509_crl(crl_pem)
            except ValueError as exc:
                raise _bundle_error("吊销列表不是 PEM CRL", "the revocation list is not a PEM CRL") from exc
            public_key = ca.public_key()
            if crl.issuer != ca.subject or not (
                isinstance(public_key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(public_key)
            ):
                raise _bundle_error("吊销列表不是由该 CA 签发", "the revocation list is not signed by this CA")
        return cls(ca_pem=ca_pem, crl=crl, revoked_documents=frozenset(revoked_documents))

    @classmethod
    def from_ca(cls, ca: CertificateAuthority, crl_pem: bytes | None = None) -> TrustBundle:
        return cls.build(ca.certificate_pem, crl_pem)

    @classmethod
    def load(cls, path: Path) -> TrustBundle:
        """A bundle from a directory (``ca.pem``, optional ``crl.pem``) or from one PEM file with both."""
        path = Path(path)
        if path.is_dir():
            ca_path, crl_path = path / CA_CERT_FILE, path / CRL_FILE
            if not ca_path.is_file():
                raise _bundle_error(f"{path} 中没有 {CA_CERT_FILE}", f"{path} holds no {CA_CERT_FILE}")
            crl = crl_path.read_bytes()[:MAX_BUNDLE_BYTES] if crl_path.is_file() else None
            return cls.build(ca_path.read_bytes()[:MAX_BUNDLE_BYTES], crl)
        if not path.is_file():
            raise _bundle_error(f"找不到 {path}", f"{path} does not exist")
        text = path.read_bytes()[:MAX_BUNDLE_BYTES]
        return cls.build(_pem_block(text, b"CERTIFICATE") or b"", _pem_block(text, b"X509 CRL"))

    def is_revoked(self, serial: int) -> bool:
        return self.crl is not None and self.crl.get_revoked_certificate_by_serial_number(serial) is not None


def _pem_block(text: bytes, label: bytes) -> bytes | None:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    return text[start : stop + len(end)] + b"\n"
