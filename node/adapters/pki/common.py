"""What the CA, node identities and verification share: file names, certificate profile constants,
bilingual errors, key and certificate encoding, atomic files and the directory lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.domain.errors import DomainError, ErrorKind
from tiers import Tier
from tiers.tree import CODE_PATTERN

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
TIERS = frozenset(tier.key for tier in Tier)

DEPT_CODE = re.compile(r"^[0-9A-Za-z._-]{1,64}$")
HEX = re.compile(r"^[0-9a-fA-F]+$")

ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def cert_error(zh: str, en: str) -> DomainError:
    return DomainError(
        "certificate_invalid", f"证书无效：{zh}", f"certificate invalid: {en}", ErrorKind.UNAUTHENTICATED
    )


def sig_error(zh: str, en: str) -> DomainError:
    return DomainError("signature_invalid", f"签名无效：{zh}", f"signature invalid: {en}", ErrorKind.UNAUTHENTICATED)


def invalid_input(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(at: datetime | None) -> datetime:
    """``at`` as an aware UTC datetime; a naive datetime is taken to be UTC already."""
    if at is None:
        return utc_now()
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else bytes(pem)


def check_node_code(node_code: str) -> str:
    if not isinstance(node_code, str) or not CODE_PATTERN.match(node_code):
        raise invalid_input(
            "node_code_invalid",
            f"节点代码 {node_code!r} 格式不正确，应为 12 位区划代码",
            f"node code {node_code!r} is malformed: use a 12-character division code (e.g. 430902000000)",
        )
    return node_code


def check_tier(tier: str | Enum) -> str:
    value = tier.name.lower() if isinstance(tier, Enum) else str(tier).strip().lower()
    if value not in TIERS:
        raise invalid_input(
            "tier_invalid",
            f"层级 {tier!r} 无效，应为 city/county/township/village 之一",
            f"tier {tier!r} is not one of city, county, township, village",
        )
    return value


def check_name(name: str, what_zh: str, what_en: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise invalid_input("name_invalid", f"{what_zh}不能为空", f"{what_en} must not be empty")
    return name.strip()


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def same_key(a: ec.EllipticCurvePublicKey, b: Any) -> bool:
    return isinstance(b, ec.EllipticCurvePublicKey) and public_pem(a) == public_pem(b)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
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


def write_private(path: Path, data: bytes) -> None:
    write_atomically(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    write_atomically(path, data, 0o644)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory``: processes of one node start concurrently."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise invalid_input(
            "key_invalid", f"私钥文件 {path} 无法读取", f"private key file {path} is unreadable: {exc}"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise invalid_input(
            "key_invalid", f"私钥文件 {path} 不是 P-256 密钥", f"private key file {path} is not an EC P-256 key"
        )
    return key


def load_public_key(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(as_bytes(pem))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise invalid_input("key_invalid", "公钥格式不正确", f"the public key is not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise invalid_input("key_invalid", "公钥必须是 P-256 椭圆曲线密钥", "the public key must be an EC P-256 key")
    return key


def parse_cert(pem: bytes | str, what_zh: str, what_en: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(as_bytes(pem))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise cert_error(f"{what_zh}不是有效的 PEM 证书", f"the {what_en} is not a PEM X.509 certificate") from exc


def read_cert(path: Path) -> x509.Certificate:
    return parse_cert(path.read_bytes(), f"文件 {path} ", f"file {path}")


def name_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def common_name(cert: x509.Certificate) -> str | None:
    return name_attribute(cert.subject, NameOID.COMMON_NAME)


def san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def tongban_subject(cert: x509.Certificate) -> tuple[str, str | None] | None:
    """(node code, department code or None) from the certificate's tongban URN, if it has one."""
    for uri in san_uris(cert):
        if uri.startswith(NODE_URN_PREFIX):
            return uri[len(NODE_URN_PREFIX) :], None
        if uri.startswith(DEPT_URN_PREFIX):
            node, sep, dept = uri[len(DEPT_URN_PREFIX) :].partition(":")
            if sep:
                return node, dept
    return None


def cert_sha256(cert_pem: bytes | str) -> str:
    """Lower-case hex SHA-256 fingerprint of a PEM certificate (over its DER encoding)."""
    return fingerprint(parse_cert(cert_pem, "", "certificate"))
