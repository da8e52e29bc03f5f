"""Checking certificates against the city CA and ES256 event signatures against certificates."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from node.adapters.pki.common import (
    ECDSA_SHA256,
    NODE_URN_PREFIX,
    SIGNATURE_ALG,
    as_utc,
    cert_error,
    common_name,
    fingerprint,
    is_ca,
    parse_cert,
    san_uris,
    sig_error,
    tongban_subject,
)
from node.domain.errors import DomainError, ErrorKind


def _verify_issued(cert: x509.Certificate, ca_pem: bytes | str, at: datetime | None) -> x509.Certificate:
    """Check ``cert`` was signed by the CA in ``ca_pem`` and both are valid at ``at``; returns the CA."""
    ca = parse_cert(ca_pem, "CA ", "CA certificate")
    when = as_utc(at)
    if not is_ca(ca):
        raise cert_error("信任的 CA 证书不是证书颁发机构", "the trusted CA certificate is not a certificate authority")
    if cert.issuer != ca.subject:
        raise cert_error(
            "不是由本市证书颁发机构签发（签发者不符）",
            f"wrong issuer: issued by {cert.issuer.rfc4514_string()!r}, not by {ca.subject.rfc4514_string()!r}",
        )
    try:
        cert.verify_directly_issued_by(ca)
    except InvalidSignature as exc:
        raise cert_error(
            "证书签名无效，不是由本市证书颁发机构签发", "bad signature: not signed by the city certificate authority"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise cert_error("不是由本市证书颁发机构签发", f"wrong issuer: {exc}") from exc
    if when > ca.not_valid_after_utc:
        raise cert_error("城市证书颁发机构的证书已过期", "the city CA certificate has expired")
    if when < ca.not_valid_before_utc:
        raise cert_error("城市证书颁发机构的证书尚未生效", "the city CA certificate is not yet valid")
    if when > cert.not_valid_after_utc:
        raise cert_error(
            f"证书已于 {cert.not_valid_after_utc:%Y-%m-%d %H:%M} (UTC) 过期",
            f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        )
    if when < cert.not_valid_before_utc:
        raise cert_error(
            f"证书在 {cert.not_valid_before_utc:%Y-%m-%d %H:%M} (UTC) 之前尚未生效",
            f"not yet valid (valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)",
        )
    if is_ca(cert):
        raise cert_error(
            "证书颁发机构的证书不能用作节点证书", "a CA certificate cannot be used as an end-entity certificate"
        )
    return ca


def verify_certificate(cert_pem: bytes | str, ca_pem: bytes | str, at: datetime | None = None) -> str:
    """The node code of a node certificate valid under ``ca_pem`` at ``at`` (default: now).

    Raises DomainError ``certificate_invalid`` (UNAUTHENTICATED) when it is malformed, issued by
    another CA, badly signed, expired or not yet valid, or not a Tongban node certificate.
    """
    cert = parse_cert(cert_pem, "", "certificate")
    _verify_issued(cert, ca_pem, at)
    cn = common_name(cert)
    if not cn or f"{NODE_URN_PREFIX}{cn}" not in san_uris(cert):
        raise cert_error(
            "不是通办节点证书（缺少与 CN 一致的 urn:tongban:node 标识）",
            "not a Tongban node certificate (no urn:tongban:node SAN matching its CN)",
        )
    return cn


def verify_department_certificate(
    cert_pem: bytes | str, ca_pem: bytes | str, at: datetime | None = None
) -> tuple[str, str]:
    """(node code, department code) of a department certificate valid under ``ca_pem`` at ``at``."""
    cert = parse_cert(cert_pem, "", "certificate")
    _verify_issued(cert, ca_pem, at)
    found = tongban_subject(cert)
    if found is None or found[1] is None or found[1] != common_name(cert):
        raise cert_error("不是通办部门证书", "not a Tongban department certificate (no matching urn:tongban:dept SAN)")
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
        raise sig_error("签名格式不正确", "the signature is not an object")
    fields = {name: signature.get(name) for name in ("alg", "signer", "cert_sha256", "value")}
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
    if missing:
        raise sig_error(f"签名缺少字段 {', '.join(missing)}", f"the signature lacks {', '.join(missing)}")
    if fields["alg"] != SIGNATURE_ALG:
        raise sig_error(f"不支持的签名算法 {fields['alg']!r}", f"unsupported algorithm {fields['alg']!r}")
    if not isinstance(digest_hex, str) or not digest_hex:
        raise sig_error("被签名的摘要为空或格式不正确", "the signed digest is empty or not a string")
    try:
        node_code = verify_certificate(cert_pem, ca_pem, at)
    except DomainError as exc:
        raise DomainError(
            "signature_invalid",
            f"签名无效：签名证书不可信（{exc.message_zh}）",
            f"signature invalid: the signing certificate is not trusted ({exc.message_en})",
            ErrorKind.UNAUTHENTICATED,
        ) from exc
    cert = parse_cert(cert_pem, "", "certificate")
    if fingerprint(cert) != fields["cert_sha256"].lower():
        raise sig_error(
            "签名所声明的证书指纹与所给证书不符",
            "the certificate fingerprint does not match the signature's cert_sha256",
        )
    if node_code != fields["signer"]:
        raise sig_error(
            f"签名者 {fields['signer']} 与证书持有者 {node_code} 不符",
            f"signer {fields['signer']!r} does not match the certificate's node {node_code!r}",
        )
    try:
        value = base64.b64decode(fields["value"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise sig_error("签名值不是有效的 Base64", "the signature value is not valid base64") from exc
    public_key = cert.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise sig_error("证书公钥不是椭圆曲线密钥", "the certificate key is not an EC key")
    try:
        public_key.verify(value, digest_hex.encode("utf-8"), ECDSA_SHA256)
    except InvalidSignature as exc:
        raise sig_error(
            "签名与内容不符（内容或签名已被篡改）", "the signature does not verify (content or signature altered)"
        ) from exc
