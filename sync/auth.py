"""Node-to-node authentication: requests signed with the node's key, certified by the city CA.

A child signs method, path, time and body hash; the parent checks the certificate against the city
CA, the signature, and that the time is fresh. (In production the same certificates also serve for
mutual TLS at the front proxy; the signature keeps working behind any proxy.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

from node.adapters.pki import NodeIdentity, verify_certificate, verify_signature
from node.domain.errors import DomainError, ErrorKind

MAX_SKEW_S = 300
HEADER_CERT = "X-Tongban-Cert"
HEADER_TIME = "X-Tongban-Time"
HEADER_SIGNATURE = "X-Tongban-Signature"


def request_digest(method: str, path: str, timestamp: str, body: bytes) -> str:
    text = "\n".join([method.upper(), path, timestamp, hashlib.sha256(body).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()


def sign_request(identity: NodeIdentity, method: str, path: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = identity.sign(request_digest(method, path, timestamp, body))
    return {
        HEADER_CERT: base64.b64encode(identity.certificate_pem).decode(),
        HEADER_TIME: timestamp,
        HEADER_SIGNATURE: base64.b64encode(json.dumps(signature).encode()).decode(),
    }


def _refused(zh: str, en: str) -> DomainError:
    return DomainError("node_unauthenticated", zh, en, ErrorKind.UNAUTHENTICATED)


def verify_request(
    headers: dict[str, str], method: str, path: str, body: bytes, ca_pem: bytes, now: float | None = None
) -> str:
    """The calling node's code, or DomainError ``node_unauthenticated``."""
    try:
        cert_pem = base64.b64decode(headers[HEADER_CERT], validate=True)
        timestamp = headers[HEADER_TIME]
        signature = json.loads(base64.b64decode(headers[HEADER_SIGNATURE], validate=True))
    except (KeyError, ValueError):
        raise _refused("缺少或无法解析节点证书与签名", "missing or malformed node certificate and signature") from None
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
        raise _refused("请求时间与本节点相差过大", "request time is too far from this node's clock")
    node = verify_certificate(cert_pem, ca_pem)
    if not isinstance(signature, dict):
        raise _refused("签名格式错误", "malformed signature")
    verify_signature(signature, request_digest(method, path, timestamp, body), cert_pem, ca_pem)
    return node
