"""The city certificate authority: its key and self-signed certificate, and the certificates it issues."""

from __future__ import annotations

import base64
import ipaddress
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.adapters.pki.common import (
    CA_CERT_FILE,
    CA_CN_PREFIX,
    CA_KEY_FILE,
    CA_VALIDITY,
    CLOCK_SKEW,
    DEPT_CODE,
    DEPT_URN_PREFIX,
    ECDSA_SHA256,
    HEX,
    NODE_URN_PREFIX,
    NODE_VALIDITY_DAYS,
    SIGNATURE_ALG,
    as_utc,
    cert_pem,
    check_name,
    check_node_code,
    check_tier,
    common_name,
    fingerprint,
    generate_key,
    invalid_input,
    is_ca,
    load_private_key,
    load_public_key,
    locked,
    name_attribute,
    private_pem,
    read_cert,
    same_key,
    utc_now,
    write_private,
    write_public,
)
from node.domain.errors import DomainError, ErrorKind


class CertificateAuthority:
    """The city CA: an EC P-256 key and a self-signed certificate, kept in one directory."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        if not same_key(key.public_key(), certificate.public_key()):
            raise invalid_input("key_mismatch", "CA 私钥与证书不匹配", "the CA key does not match the CA certificate")
        self._directory = Path(directory)
        self._key = key
        self._cert = certificate

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: Path, city_code: str, city_name: str, *, not_before: datetime | None = None
    ) -> CertificateAuthority:
        """Make a new CA key and certificate in ``directory``; refuses to overwrite an existing CA."""
        directory = Path(directory)
        with locked(directory):
            return cls._create_unlocked(directory, city_code, city_name, not_before)

    @classmethod
    def _create_unlocked(
        cls, directory: Path, city_code: str, city_name: str, not_before: datetime | None
    ) -> CertificateAuthority:
        city_code = check_node_code(city_code)
        city_name = check_name(city_name, "城市名称", "city name")
        if (directory / CA_KEY_FILE).exists() or (directory / CA_CERT_FILE).exists():
            raise DomainError(
                "ca_exists",
                f"目录 {directory} 中已有证书颁发机构，不会覆盖（覆盖会使所有节点证书失效）",
                f"a certificate authority already exists in {directory}; not overwriting it "
                "(that would invalidate every node certificate): use load() or ensure()",
                ErrorKind.CONFLICT,
            )
        key = generate_key()
        start = as_utc(not_before) if not_before is not None else utc_now() - CLOCK_SKEW
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, f"{CA_CN_PREFIX}{city_code}"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, city_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(directory / CA_KEY_FILE, private_pem(key))
        write_public(directory / CA_CERT_FILE, cert_pem(cert))
        return cls(directory, key, cert)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        directory = Path(directory)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if not key_path.exists() or not cert_path.exists():
            missing = ", ".join(p.name for p in (key_path, cert_path) if not p.exists())
            raise DomainError(
                "ca_missing",
                f"目录 {directory} 中缺少证书颁发机构文件：{missing}",
                f"the certificate authority in {directory} is missing {missing}: run ensure() to create one",
                ErrorKind.NOT_FOUND,
            )
        cert = read_cert(cert_path)
        cn = common_name(cert) or ""
        if not is_ca(cert) or not cn.startswith(CA_CN_PREFIX):
            raise invalid_input(
                "ca_invalid", f"{cert_path} 不是通办城市 CA 证书", f"{cert_path} is not a Tongban city CA"
            )
        return cls(directory, load_private_key(key_path), cert)

    @classmethod
    def ensure(cls, directory: Path, city_code: str, city_name: str) -> CertificateAuthority:
        """Load the CA in ``directory`` if there is one (it must be for ``city_code``), else create it."""
        directory = Path(directory)
        with locked(directory):
            if (directory / CA_KEY_FILE).exists() or (directory / CA_CERT_FILE).exists():
                ca = cls.load(directory)
                if ca.city_code != city_code:
                    raise DomainError(
                        "ca_mismatch",
                        f"目录 {directory} 中的 CA 属于 {ca.city_code}，不是 {city_code}",
                        f"the CA in {directory} belongs to city {ca.city_code}, not {city_code}",
                        ErrorKind.CONFLICT,
                    )
                return ca
            return cls._create_unlocked(directory, city_code, city_name, None)

    # -- properties -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def city_code(self) -> str:
        return (common_name(self._cert) or "")[len(CA_CN_PREFIX) :]

    @property
    def city_name(self) -> str:
        return name_attribute(self._cert.subject, NameOID.ORGANIZATION_NAME) or ""

    @property
    def certificate_pem(self) -> bytes:
        return cert_pem(self._cert)

    @property
    def cert_sha256(self) -> str:
        return fingerprint(self._cert)

    # -- signing --------------------------------------------------------------------------

    def sign(self, digest_hex: str) -> dict[str, str]:
        """ES256 signature by the CA key over a hex digest (the revocation list): ``signer`` is ``ca:<city>``."""
        if not isinstance(digest_hex, str) or not HEX.match(digest_hex):
            raise invalid_input("digest_invalid", "被签名的摘要必须是十六进制字符串", "the digest to sign must be hex")
        value = self._key.sign(digest_hex.encode("utf-8"), ECDSA_SHA256)
        return {
            "alg": SIGNATURE_ALG,
            "signer": f"ca:{self.city_code}",
            "cert_sha256": self.cert_sha256,
            "value": base64.b64encode(value).decode("ascii"),
        }

    # -- issuance -------------------------------------------------------------------------

    def issue_node_certificate(
        self,
        node_code: str,
        node_name: str,
        tier: str,
        public_key_pem: bytes,
        days: int = NODE_VALIDITY_DAYS,
        *,
        not_before: datetime | None = None,
    ) -> bytes:
        """A node certificate (PEM) for ``public_key_pem``; ``not_before`` exists for tests (backdating)."""
        node_code = check_node_code(node_code)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, node_code),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, check_name(node_name, "节点名称", "node name")),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, check_tier(tier)),
            ]
        )
        san = x509.SubjectAlternativeName(
            [
                x509.UniformResourceIdentifier(f"{NODE_URN_PREFIX}{node_code}"),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]
        )
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        return self._issue(subject, public_key_pem, days, not_before, [(san, False), (usage, True), (eku, False)])

    def issue_department_certificate(
        self,
        node_code: str,
        department_code: str,
        public_key_pem: bytes,
        days: int = NODE_VALIDITY_DAYS,
        *,
        not_before: datetime | None = None,
    ) -> bytes:
        """A department's sealing certificate (PEM): signs results, not usable for TLS or as a node."""
        node_code = check_node_code(node_code)
        if not isinstance(department_code, str) or not DEPT_CODE.match(department_code):
            raise invalid_input(
                "department_code_invalid",
                f"部门代码 {department_code!r} 格式不正确（限字母、数字、._-，最长 64 位）",
                f"department code {department_code!r} is malformed (letters, digits, '._-', at most 64)",
            )
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, department_code),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, node_code),
            ]
        )
        san = x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"{DEPT_URN_PREFIX}{node_code}:{department_code}")]
        )
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=True,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        return self._issue(subject, public_key_pem, days, not_before, [(san, False), (usage, True)])

    def _issue(
        self,
        subject: x509.Name,
        public_key_pem: bytes,
        days: int,
        not_before: datetime | None,
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> bytes:
        if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
            raise invalid_input(
                "validity_invalid", "有效期天数必须为正整数", f"days must be a positive integer, not {days!r}"
            )
        public_key = load_public_key(public_key_pem)
        if not_before is None:
            now = utc_now()
            start, end = now - CLOCK_SKEW, now + timedelta(days=days)
        else:
            start = as_utc(not_before)
            end = start + timedelta(days=days)
        end = min(end, self._cert.not_valid_after_utc)  # never outlive the CA
        if end <= start or (not_before is None and end <= utc_now()):
            raise DomainError(
                "ca_expired",
                "城市证书颁发机构已过期，无法签发证书",
                "the city certificate authority has expired and cannot issue certificates",
                ErrorKind.CONFLICT,
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return cert_pem(builder.sign(self._key, hashes.SHA256()))
