"""A node's identity: its private key, its certificate and the city CA certificate, and event signing."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.adapters.pki.ca import CertificateAuthority
from node.adapters.pki.common import (
    CA_CERT_FILE,
    ECDSA_SHA256,
    HEX,
    NODE_CERT_FILE,
    NODE_KEY_FILE,
    NODE_PUBLIC_KEY_FILE,
    NODE_VALIDITY_DAYS,
    RENEW_BEFORE,
    SIGNATURE_ALG,
    cert_pem,
    check_name,
    check_node_code,
    check_tier,
    common_name,
    fingerprint,
    generate_key,
    invalid_input,
    load_private_key,
    locked,
    name_attribute,
    private_pem,
    public_pem,
    read_cert,
    same_key,
    utc_now,
    write_private,
    write_public,
)
from node.adapters.pki.verification import verify_certificate
from node.domain.errors import DomainError, ErrorKind


class NodeIdentity:
    """A node's private key, its certificate and the city CA certificate (its trust anchor)."""

    def __init__(
        self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate, ca: x509.Certificate
    ) -> None:
        if not same_key(key.public_key(), certificate.public_key()):
            raise invalid_input(
                "key_mismatch", "节点私钥与证书不匹配", "the node key does not match the node certificate"
            )
        self._directory = Path(directory)
        self._key = key
        self._cert = certificate
        self._ca = ca

    @classmethod
    def load(cls, directory: Path) -> NodeIdentity:
        directory = Path(directory)
        paths = [directory / NODE_KEY_FILE, directory / NODE_CERT_FILE, directory / CA_CERT_FILE]
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise DomainError(
                "node_identity_missing",
                f"目录 {directory} 中缺少节点身份文件：{', '.join(missing)}",
                f"the node identity in {directory} is missing {', '.join(missing)}",
                ErrorKind.NOT_FOUND,
            )
        return cls(directory, load_private_key(paths[0]), read_cert(paths[1]), read_cert(paths[2]))

    @classmethod
    def ensure(
        cls,
        directory: Path,
        node_code: str,
        node_name: str,
        tier: str,
        ca: CertificateAuthority | None = None,
        *,
        days: int = NODE_VALIDITY_DAYS,
    ) -> NodeIdentity:
        """Load the identity in ``directory``, creating the key and (with ``ca``) the certificate.

        Idempotent: an existing key is never replaced. With ``ca``, the certificate is (re)issued
        only when it is missing, not valid under ``ca``, within :data:`RENEW_BEFORE` of expiry, or
        names another node name or tier. Without ``ca`` and without a certificate, the public key is
        written to ``node.pub.pem`` for out-of-band issuance and ``node_certificate_missing`` raised.
        """
        directory = Path(directory)
        node_code = check_node_code(node_code)
        node_name = check_name(node_name, "节点名称", "node name")
        tier = check_tier(tier)
        with locked(directory):
            key_path, cert_path, ca_path = (
                directory / NODE_KEY_FILE,
                directory / NODE_CERT_FILE,
                directory / CA_CERT_FILE,
            )
            if key_path.exists():
                key = load_private_key(key_path)
            else:
                key = generate_key()
                write_private(key_path, private_pem(key))
            current: NodeIdentity | None = None
            if cert_path.exists() and ca_path.exists():
                cert = read_cert(cert_path)
                if common_name(cert) != node_code:
                    raise DomainError(
                        "node_identity_mismatch",
                        f"目录 {directory} 中的身份属于节点 {common_name(cert)}，不是 {node_code}",
                        f"the identity in {directory} belongs to node {common_name(cert)!r}, not {node_code!r}",
                        ErrorKind.CONFLICT,
                    )
                if same_key(key.public_key(), cert.public_key()):
                    current = cls(directory, key, cert, read_cert(ca_path))
            if ca is None:
                if current is not None:
                    return current
                write_public(directory / NODE_PUBLIC_KEY_FILE, public_pem(key.public_key()))
                raise DomainError(
                    "node_certificate_missing",
                    f"节点 {node_code} 尚无证书：请由城市 CA 为 {directory / NODE_PUBLIC_KEY_FILE} 签发证书，"
                    f"并放置 {NODE_CERT_FILE} 和 {CA_CERT_FILE}",
                    f"node {node_code} has no certificate yet: have the city CA certify "
                    f"{directory / NODE_PUBLIC_KEY_FILE} and install {NODE_CERT_FILE} and {CA_CERT_FILE}",
                    ErrorKind.NOT_FOUND,
                )
            if current is not None and not current._needs_reissue(ca, node_name, tier):
                return current
            cert_pem = ca.issue_node_certificate(node_code, node_name, tier, public_pem(key.public_key()), days)
            write_public(cert_path, cert_pem)
            write_public(ca_path, ca.certificate_pem)
            return cls(directory, key, x509.load_pem_x509_certificate(cert_pem), ca.certificate)

    def _needs_reissue(self, ca: CertificateAuthority, node_name: str, tier: str) -> bool:
        if self._ca != ca.certificate or self.node_name != node_name or self.tier != tier:
            return True
        try:
            verify_certificate(self.certificate_pem, ca.certificate_pem)
        except DomainError:
            return True
        lifetime = self._cert.not_valid_after_utc - self._cert.not_valid_before_utc
        return self._cert.not_valid_after_utc - utc_now() < min(RENEW_BEFORE, lifetime / 4)

    # -- properties -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def node_code(self) -> str:
        return common_name(self._cert) or ""

    @property
    def node_name(self) -> str:
        return name_attribute(self._cert.subject, NameOID.ORGANIZATION_NAME) or ""

    @property
    def tier(self) -> str:
        return name_attribute(self._cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) or ""

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def certificate_pem(self) -> bytes:
        return cert_pem(self._cert)

    @property
    def ca_pem(self) -> bytes:
        return cert_pem(self._ca)

    @property
    def cert_sha256(self) -> str:
        return fingerprint(self._cert)

    # -- signing --------------------------------------------------------------------------

    def sign(self, digest_hex: str) -> dict[str, str]:
        """ES256 signature over the UTF-8 bytes of ``digest_hex`` (verify with :func:`verify_signature`)."""
        if not isinstance(digest_hex, str) or not HEX.match(digest_hex):
            raise invalid_input(
                "digest_invalid", "被签名的摘要必须是十六进制字符串", "the digest to sign must be a hex string"
            )
        value = self._key.sign(digest_hex.encode("utf-8"), ECDSA_SHA256)
        return {
            "alg": SIGNATURE_ALG,
            "signer": self.node_code,
            "cert_sha256": self.cert_sha256,
            "value": base64.b64encode(value).decode("ascii"),
        }
