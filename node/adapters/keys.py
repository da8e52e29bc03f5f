"""Keys and certificates: the city certificate authority, each node's identity, event signatures.

ARCHITECTURE §7: the city runs an X.509 certificate authority that issues every node an EC P-256
key and certificate. Nodes authenticate each other with them (mutual TLS) and sign the events they
create; a document whose signature fails is quarantined, never projected.

Files (keys are unencrypted PKCS#8 PEM, written atomically with mode 0600; protect the directory):

- CA directory:   ``ca.key``, ``ca.pem``
- node directory: ``node.key``, ``node.pem`` (the node certificate), ``ca.pem`` (the city CA, the
  trust anchor); ``node.pub.pem`` is written when a key exists but no CA was at hand to certify it.

Certificates:

- CA: subject ``CN=Tongban City CA <city code>, O=<city name>``, BasicConstraints ca (path length 0),
  KeyUsage keyCertSign + cRLSign, 10 years.
- Node: ``CN=<node code>, O=<node name>, OU=<tier>``; SAN ``URI:urn:tongban:node:<code>``,
  ``DNS:localhost``, ``IP:127.0.0.1``, ``IP:::1`` (usable for loopback mutual TLS); ExtendedKeyUsage
  serverAuth + clientAuth; KeyUsage digitalSignature.
- Department (sealed results): ``CN=<department code>, O=<node code>``; SAN
  ``URI:urn:tongban:dept:<node>:<dept>``; KeyUsage digitalSignature + contentCommitment. A department
  certificate is never accepted where a node certificate is required.

Signatures (ES256) are ECDSA-SHA256 over the UTF-8 bytes of a hex digest (the event hash), as
``{"alg": "ES256", "signer": <node code>, "cert_sha256": <hex>, "value": <base64 DER>}``.
Certificates travel between nodes as ``certificate`` documents (:class:`CertificateDirectory`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.domain.errors import DomainError, ErrorKind

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.pem"
NODE_KEY_FILE = "node.key"
NODE_CERT_FILE = "node.pem"
NODE_PUBLIC_KEY_FILE = "node.pub.pem"
LOCK_FILE = ".keys.lock"

SIGNATURE_ALG = "ES256"
NODE_URN_PREFIX = "urn:tongban:node:"
DEPT_URN_PREFIX = "urn:tongban:dept:"
CA_CN_PREFIX = "Tongban City CA "
CERT_DOC_TYPE = "certificate"

CA_VALIDITY = timedelta(days=3653)  # 10 years, leap days included
NODE_VALIDITY_DAYS = 825
CLOCK_SKEW = timedelta(minutes=5)  # certificates start a little in the past: node clocks drift
RENEW_BEFORE = timedelta(days=30)  # ensure() re-issues a node certificate this close to expiry
TIERS = frozenset({"city", "county", "township", "village"})

_NODE_CODE = re.compile(r"^[0-9A-Z]{12}$")  # same rule as tiers.tree.CODE_PATTERN (alias codes too)
_DEPT_CODE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


# --------------------------------------------------------------------------------------------
# errors


def _cert_error(zh: str, en: str) -> DomainError:
    return DomainError(
        "certificate_invalid", f"证书无效：{zh}", f"certificate invalid: {en}", ErrorKind.UNAUTHENTICATED
    )


def _sig_error(zh: str, en: str) -> DomainError:
    return DomainError("signature_invalid", f"签名无效：{zh}", f"signature invalid: {en}", ErrorKind.UNAUTHENTICATED)


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


# --------------------------------------------------------------------------------------------
# small helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(at: datetime | None) -> datetime:
    """``at`` as an aware UTC datetime; a naive datetime is taken to be UTC already."""
    if at is None:
        return _now()
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else bytes(pem)


def _check_node_code(node_code: str) -> str:
    if not isinstance(node_code, str) or not _NODE_CODE.match(node_code):
        raise _invalid(
            "node_code_invalid",
            f"节点代码 {node_code!r} 格式不正确，应为 12 位区划代码",
            f"node code {node_code!r} is malformed: use a 12-character division code (e.g. 430902000000)",
        )
    return node_code


def _check_tier(tier: str | Enum) -> str:
    value = tier.name.lower() if isinstance(tier, Enum) else str(tier).strip().lower()
    if value not in TIERS:
        raise _invalid(
            "tier_invalid",
            f"层级 {tier!r} 无效，应为 city/county/township/village 之一",
            f"tier {tier!r} is not one of city, county, township, village",
        )
    return value


def _check_name(name: str, what_zh: str, what_en: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise _invalid("name_invalid", f"{what_zh}不能为空", f"{what_en} must not be empty")
    return name.strip()


def _generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _same_key(a: ec.EllipticCurvePublicKey, b: Any) -> bool:
    return isinstance(b, ec.EllipticCurvePublicKey) and _public_pem(a) == _public_pem(b)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temporary file + rename) with ``mode``; readers never see half a key."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_private(path: Path, data: bytes) -> None:
    _write_file(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_file(path, data, 0o644)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory``: processes of one node start concurrently."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise _invalid(
            "key_invalid", f"私钥文件 {path} 无法读取", f"private key file {path} is unreadable: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _invalid(
            "key_invalid", f"私钥文件 {path} 不是 P-256 密钥", f"private key file {path} is not an EC P-256 key"
        )
    return key


def _load_public_key(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(_as_bytes(pem))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise _invalid("key_invalid", "公钥格式不正确", f"the public key is not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _invalid("key_invalid", "公钥必须是 P-256 椭圆曲线密钥", "the public key must be an EC P-256 key")
    return key


def _parse_cert(pem: bytes | str, what_zh: str, what_en: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_as_bytes(pem))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise _cert_error(f"{what_zh}不是有效的 PEM 证书", f"the {what_en} is not a PEM X.509 certificate") from exc


def _read_cert(path: Path) -> x509.Certificate:
    return _parse_cert(path.read_bytes(), f"文件 {path} ", f"file {path}")


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _common_name(cert: x509.Certificate) -> str | None:
    return _attr(cert.subject, NameOID.COMMON_NAME)


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _tongban_subject(cert: x509.Certificate) -> tuple[str, str | None] | None:
    """(node code, department code or None) from the certificate's tongban URN, if it has one."""
    for uri in _san_uris(cert):
        if uri.startswith(NODE_URN_PREFIX):
            return uri[len(NODE_URN_PREFIX) :], None
        if uri.startswith(DEPT_URN_PREFIX):
            node, sep, dept = uri[len(DEPT_URN_PREFIX) :].partition(":")
            if sep:
                return node, dept
    return None


def cert_sha256(cert_pem: bytes | str) -> str:
    """Lower-case hex SHA-256 fingerprint of a PEM certificate (over its DER encoding)."""
    return _fingerprint(_parse_cert(cert_pem, "", "certificate"))


# --------------------------------------------------------------------------------------------
# the certificate authority


class CertificateAuthority:
    """The city CA: an EC P-256 key and a self-signed certificate, kept in one directory."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        if not _same_key(key.public_key(), certificate.public_key()):
            raise _invalid("key_mismatch", "CA 私钥与证书不匹配", "the CA key does not match the CA certificate")
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
        with _locked(directory):
            return cls._create_unlocked(directory, city_code, city_name, not_before)

    @classmethod
    def _create_unlocked(
        cls, directory: Path, city_code: str, city_name: str, not_before: datetime | None
    ) -> CertificateAuthority:
        city_code = _check_node_code(city_code)
        city_name = _check_name(city_name, "城市名称", "city name")
        if (directory / CA_KEY_FILE).exists() or (directory / CA_CERT_FILE).exists():
            raise DomainError(
                "ca_exists",
                f"目录 {directory} 中已有证书颁发机构，不会覆盖（覆盖会使所有节点证书失效）",
                f"a certificate authority already exists in {directory}; not overwriting it "
                "(that would invalidate every node certificate): use load() or ensure()",
                ErrorKind.CONFLICT,
            )
        key = _generate_key()
        start = _utc(not_before) if not_before is not None else _now() - CLOCK_SKEW
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
        _write_private(directory / CA_KEY_FILE, _private_pem(key))
        _write_public(directory / CA_CERT_FILE, _cert_pem(cert))
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
        cert = _read_cert(cert_path)
        cn = _common_name(cert) or ""
        if not _is_ca(cert) or not cn.startswith(CA_CN_PREFIX):
            raise _invalid("ca_invalid", f"{cert_path} 不是通办城市 CA 证书", f"{cert_path} is not a Tongban city CA")
        return cls(directory, _load_private_key(key_path), cert)

    @classmethod
    def ensure(cls, directory: Path, city_code: str, city_name: str) -> CertificateAuthority:
        """Load the CA in ``directory`` if there is one (it must be for ``city_code``), else create it."""
        directory = Path(directory)
        with _locked(directory):
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
        return (_common_name(self._cert) or "")[len(CA_CN_PREFIX) :]

    @property
    def city_name(self) -> str:
        return _attr(self._cert.subject, NameOID.ORGANIZATION_NAME) or ""

    @property
    def certificate_pem(self) -> bytes:
        return _cert_pem(self._cert)

    @property
    def cert_sha256(self) -> str:
        return _fingerprint(self._cert)

    @property
    def cert_path(self) -> Path:
        return self._directory / CA_CERT_FILE

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
        node_code = _check_node_code(node_code)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, node_code),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, _check_name(node_name, "节点名称", "node name")),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _check_tier(tier)),
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
        node_code = _check_node_code(node_code)
        if not isinstance(department_code, str) or not _DEPT_CODE.match(department_code):
            raise _invalid(
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
            raise _invalid(
                "validity_invalid", "有效期天数必须为正整数", f"days must be a positive integer, not {days!r}"
            )
        public_key = _load_public_key(public_key_pem)
        if not_before is None:
            now = _now()
            start, end = now - CLOCK_SKEW, now + timedelta(days=days)
        else:
            start = _utc(not_before)
            end = start + timedelta(days=days)
        end = min(end, self._cert.not_valid_after_utc)  # never outlive the CA
        if end <= start or (not_before is None and end <= _now()):
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
        return _cert_pem(builder.sign(self._key, hashes.SHA256()))


# --------------------------------------------------------------------------------------------
# verification


def _verify_issued(cert: x509.Certificate, ca_pem: bytes | str, at: datetime | None) -> x509.Certificate:
    """Check ``cert`` was signed by the CA in ``ca_pem`` and both are valid at ``at``; returns the CA."""
    ca = _parse_cert(ca_pem, "CA ", "CA certificate")
    when = _utc(at)
    if not _is_ca(ca):
        raise _cert_error("信任的 CA 证书不是证书颁发机构", "the trusted CA certificate is not a certificate authority")
    if cert.issuer != ca.subject:
        raise _cert_error(
            "不是由本市证书颁发机构签发（签发者不符）",
            f"wrong issuer: issued by {cert.issuer.rfc4514_string()!r}, not by {ca.subject.rfc4514_string()!r}",
        )
    try:
        cert.verify_directly_issued_by(ca)
    except InvalidSignature as exc:
        raise _cert_error(
            "证书签名无效，不是由本市证书颁发机构签发", "bad signature: not signed by the city certificate authority"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise _cert_error("不是由本市证书颁发机构签发", f"wrong issuer: {exc}") from exc
    if when > ca.not_valid_after_utc:
        raise _cert_error("城市证书颁发机构的证书已过期", "the city CA certificate has expired")
    if when < ca.not_valid_before_utc:
        raise _cert_error("城市证书颁发机构的证书尚未生效", "the city CA certificate is not yet valid")
    if when > cert.not_valid_after_utc:
        raise _cert_error(
            f"证书已于 {cert.not_valid_after_utc:%Y-%m-%d %H:%M} (UTC) 过期",
            f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        )
    if when < cert.not_valid_before_utc:
        raise _cert_error(
            f"证书在 {cert.not_valid_before_utc:%Y-%m-%d %H:%M} (UTC) 之前尚未生效",
            f"not yet valid (valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)",
        )
    if _is_ca(cert):
        raise _cert_error(
            "证书颁发机构的证书不能用作节点证书", "a CA certificate cannot be used as an end-entity certificate"
        )
    return ca


def verify_certificate(cert_pem: bytes | str, ca_pem: bytes | str, at: datetime | None = None) -> str:
    """The node code of a node certificate valid under ``ca_pem`` at ``at`` (default: now).

    Raises DomainError ``certificate_invalid`` (UNAUTHENTICATED) when it is malformed, issued by
    another CA, badly signed, expired or not yet valid, or not a Tongban node certificate.
    """
    cert = _parse_cert(cert_pem, "", "certificate")
    _verify_issued(cert, ca_pem, at)
    cn = _common_name(cert)
    if not cn or f"{NODE_URN_PREFIX}{cn}" not in _san_uris(cert):
        raise _cert_error(
            "不是通办节点证书（缺少与 CN 一致的 urn:tongban:node 标识）",
            "not a Tongban node certificate (no urn:tongban:node SAN matching its CN)",
        )
    return cn


def verify_department_certificate(
    cert_pem: bytes | str, ca_pem: bytes | str, at: datetime | None = None
) -> tuple[str, str]:
    """(node code, department code) of a department certificate valid under ``ca_pem`` at ``at``."""
    cert = _parse_cert(cert_pem, "", "certificate")
    _verify_issued(cert, ca_pem, at)
    found = _tongban_subject(cert)
    if found is None or found[1] is None or found[1] != _common_name(cert):
        raise _cert_error("不是通办部门证书", "not a Tongban department certificate (no matching urn:tongban:dept SAN)")
    return found[0], found[1]


def verify_signature(
    signature: Mapping[str, Any],
    digest_hex: str,
    cert_pem: bytes | str,
    ca_pem: bytes | str,
    *,
    at: datetime | None = None,
) -> None:
    """Check an ES256 signature (from :meth:`NodeIdentity.sign`) over ``digest_hex``.

    ``at`` is when the certificate must have been valid (default now; pass the event's time to
    verify old events after their signer's certificate expired). Raises DomainError
    ``signature_invalid`` (UNAUTHENTICATED) on any failure.
    """
    if not isinstance(signature, Mapping):
        raise _sig_error("签名格式不正确", "the signature is not an object")
    fields = {name: signature.get(name) for name in ("alg", "signer", "cert_sha256", "value")}
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
    if missing:
        raise _sig_error(f"签名缺少字段 {', '.join(missing)}", f"the signature lacks {', '.join(missing)}")
    if fields["alg"] != SIGNATURE_ALG:
        raise _sig_error(f"不支持的签名算法 {fields['alg']!r}", f"unsupported algorithm {fields['alg']!r}")
    if not isinstance(digest_hex, str) or not digest_hex:
        raise _sig_error("被签名的摘要为空或格式不正确", "the signed digest is empty or not a string")
    try:
        node_code = verify_certificate(cert_pem, ca_pem, at)
    except DomainError as exc:
        raise DomainError(
            "signature_invalid",
            f"签名无效：签名证书不可信（{exc.message_zh}）",
            f"signature invalid: the signing certificate is not trusted ({exc.message_en})",
            ErrorKind.UNAUTHENTICATED,
        ) from exc
    cert = _parse_cert(cert_pem, "", "certificate")
    if _fingerprint(cert) != fields["cert_sha256"].lower():
        raise _sig_error(
            "签名所声明的证书指纹与所给证书不符",
            "the certificate fingerprint does not match the signature's cert_sha256",
        )
    if node_code != fields["signer"]:
        raise _sig_error(
            f"签名者 {fields['signer']} 与证书持有者 {node_code} 不符",
            f"signer {fields['signer']!r} does not match the certificate's node {node_code!r}",
        )
    try:
        value = base64.b64decode(fields["value"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _sig_error("签名值不是有效的 Base64", "the signature value is not valid base64") from exc
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise _sig_error("证书公钥不是椭圆曲线密钥", "the certificate key is not an EC key")
    try:
        public_key.verify(value, digest_hex.encode("utf-8"), _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise _sig_error(
            "签名与内容不符（内容或签名已被篡改）", "the signature does not verify (content or signature altered)"
        ) from exc


# --------------------------------------------------------------------------------------------
# a node's identity


class NodeIdentity:
    """A node's private key, its certificate and the city CA certificate (its trust anchor)."""

    def __init__(
        self, directory: Path, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate, ca: x509.Certificate
    ) -> None:
        if not _same_key(key.public_key(), certificate.public_key()):
            raise _invalid("key_mismatch", "节点私钥与证书不匹配", "the node key does not match the node certificate")
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
        return cls(directory, _load_private_key(paths[0]), _read_cert(paths[1]), _read_cert(paths[2]))

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
        node_code = _check_node_code(node_code)
        node_name = _check_name(node_name, "节点名称", "node name")
        tier = _check_tier(tier)
        with _locked(directory):
            key_path, cert_path, ca_path = (
                directory / NODE_KEY_FILE,
                directory / NODE_CERT_FILE,
                directory / CA_CERT_FILE,
            )
            if key_path.exists():
                key = _load_private_key(key_path)
            else:
                key = _generate_key()
                _write_private(key_path, _private_pem(key))
            current: NodeIdentity | None = None
            if cert_path.exists() and ca_path.exists():
                cert = _read_cert(cert_path)
                if _common_name(cert) != node_code:
                    raise DomainError(
                        "node_identity_mismatch",
                        f"目录 {directory} 中的身份属于节点 {_common_name(cert)}，不是 {node_code}",
                        f"the identity in {directory} belongs to node {_common_name(cert)!r}, not {node_code!r}",
                        ErrorKind.CONFLICT,
                    )
                if _same_key(key.public_key(), cert.public_key()):
                    current = cls(directory, key, cert, _read_cert(ca_path))
            if ca is None:
                if current is not None:
                    return current
                _write_public(directory / NODE_PUBLIC_KEY_FILE, _public_pem(key.public_key()))
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
            cert_pem = ca.issue_node_certificate(node_code, node_name, tier, _public_pem(key.public_key()), days)
            _write_public(cert_path, cert_pem)
            _write_public(ca_path, ca.certificate_pem)
            return cls(directory, key, x509.load_pem_x509_certificate(cert_pem), ca.certificate)

    def _needs_reissue(self, ca: CertificateAuthority, node_name: str, tier: str) -> bool:
        if self._ca != ca.certificate or self.node_name != node_name or self.tier != tier:
            return True
        try:
            verify_certificate(self.certificate_pem, ca.certificate_pem)
        except DomainError:
            return True
        lifetime = self._cert.not_valid_after_utc - self._cert.not_valid_before_utc
        return self._cert.not_valid_after_utc - _now() < min(RENEW_BEFORE, lifetime / 4)

    # -- properties -----------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def node_code(self) -> str:
        return _common_name(self._cert) or ""

    @property
    def node_name(self) -> str:
        return _attr(self._cert.subject, NameOID.ORGANIZATION_NAME) or ""

    @property
    def tier(self) -> str:
        return _attr(self._cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) or ""

    @property
    def certificate(self) -> x509.Certificate:
        return self._cert

    @property
    def certificate_pem(self) -> bytes:
        return _cert_pem(self._cert)

    @property
    def ca_pem(self) -> bytes:
        return _cert_pem(self._ca)

    @property
    def cert_sha256(self) -> str:
        return _fingerprint(self._cert)

    @property
    def public_key_pem(self) -> bytes:
        return _public_pem(self._key.public_key())

    @property
    def key_path(self) -> Path:
        """For ``ssl.SSLContext.load_cert_chain(cert_path, key_path)``."""
        return self._directory / NODE_KEY_FILE

    @property
    def cert_path(self) -> Path:
        return self._directory / NODE_CERT_FILE

    @property
    def ca_path(self) -> Path:
        """For ``ssl.SSLContext.load_verify_locations(ca_path)``."""
        return self._directory / CA_CERT_FILE

    # -- signing --------------------------------------------------------------------------

    def sign(self, digest_hex: str) -> dict[str, str]:
        """ES256 signature over the UTF-8 bytes of ``digest_hex`` (verify with :func:`verify_signature`)."""
        if not isinstance(digest_hex, str) or not _HEX.match(digest_hex):
            raise _invalid(
                "digest_invalid", "被签名的摘要必须是十六进制字符串", "the digest to sign must be a hex string"
            )
        value = self._key.sign(digest_hex.encode("utf-8"), _ECDSA_SHA256)
        return {
            "alg": SIGNATURE_ALG,
            "signer": self.node_code,
            "cert_sha256": self.cert_sha256,
            "value": base64.b64encode(value).decode("ascii"),
        }


# --------------------------------------------------------------------------------------------
# certificates as replicated documents


class CertificateDirectory:
    """Certificates by SHA-256 fingerprint, replicated between nodes as ``certificate`` documents.

    The directory only finds certificates; trust comes from :func:`verify_signature` /
    :func:`verify_certificate` against the city CA, so documents from any peer may be added.
    """

    def __init__(self, pems: Iterable[bytes | str] = ()) -> None:
        self._certs: dict[str, x509.Certificate] = {}
        for pem in pems:
            self.add(pem)

    def add(self, pem: bytes | str) -> str:
        """Add a Tongban node or department certificate; returns its fingerprint."""
        cert = _parse_cert(pem, "", "certificate")
        if _tongban_subject(cert) is None:
            raise _cert_error("不是通办节点或部门证书", "not a Tongban node or department certificate")
        sha = _fingerprint(cert)
        self._certs[sha] = cert
        return sha

    def get(self, sha: str) -> bytes | None:
        cert = self._certs.get(sha.lower()) if isinstance(sha, str) else None
        return None if cert is None else _cert_pem(cert)

    def node_of(self, sha: str) -> str | None:
        cert = self._certs.get(sha.lower()) if isinstance(sha, str) else None
        found = None if cert is None else _tongban_subject(cert)
        return None if found is None else found[0]

    def __contains__(self, sha: object) -> bool:
        return isinstance(sha, str) and sha.lower() in self._certs

    def __len__(self) -> int:
        return len(self._certs)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._certs))

    # -- documents ------------------------------------------------------------------------

    @staticmethod
    def doc_for(pem: bytes | str) -> dict[str, str]:
        """The replicable document for one certificate (department certificates add ``department``)."""
        cert = _parse_cert(pem, "", "certificate")
        found = _tongban_subject(cert)
        if found is None:
            raise _cert_error("不是通办节点或部门证书", "not a Tongban node or department certificate")
        node, dept = found
        sha = _fingerprint(cert)
        doc = {
            "_id": f"cert:{node}:{sha}",
            "doc_type": CERT_DOC_TYPE,
            "node": node,
            "pem": _cert_pem(cert).decode("ascii"),
        }
        if dept is not None:
            doc["department"] = dept
        return doc

    def to_docs(self) -> list[dict[str, str]]:
        return sorted((self.doc_for(_cert_pem(cert)) for cert in self._certs.values()), key=lambda d: d["_id"])

    def add_doc(self, doc: Mapping[str, Any]) -> str:
        """Add the certificate of a ``certificate`` document, checking its id matches its content."""
        pem = doc.get("pem")
        if doc.get("doc_type") != CERT_DOC_TYPE or not isinstance(pem, str):
            raise _invalid("certificate_doc_invalid", "不是证书文档", "not a certificate document")
        expected = self.doc_for(pem)
        if doc.get("_id") != expected["_id"] or doc.get("node") != expected["node"]:
            raise _invalid(
                "certificate_doc_invalid",
                f"证书文档 {doc.get('_id')} 的标识与证书内容不符",
                f"certificate document {doc.get('_id')!r} does not match its certificate "
                f"(expected {expected['_id']!r})",
            )
        return self.add(pem)

    @classmethod
    def from_docs(cls, docs: Iterable[Mapping[str, Any]]) -> CertificateDirectory:
        """A directory from documents; documents of other types are skipped, bad certificate docs raise."""
        directory = cls()
        for doc in docs:
            if doc.get("doc_type") == CERT_DOC_TYPE:
                directory.add_doc(doc)
        return directory
