"""Node-to-node authentication, both ways: requests signed by the child, answers signed by the parent.

A child signs method, path, time, a fresh nonce, the audience (the parent's node code) and the body
hash with its node key; the parent checks the certificate against the city CA, the signature, that
the time is fresh, that it is the audience, and that the nonce was not seen before by any of its web
processes (:class:`SeenNonces`: the node's shared nonce log). The parent signs each answer — the
request's nonce, the status and the body hash — with its own node key, and the child accepts an
answer only from a certificate of the city CA naming its parent (docs/threat-model.md). The
signatures work behind any proxy; mutual TLS at a front proxy may be added but is not relied on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Protocol

from node.adapters.pki import NodeIdentity, verify_certificate, verify_signature
from node.domain.errors import DomainError, ErrorKind
from tiers import yiyang

MAX_SKEW_S = 300
HEADER_CERT = "X-Tongban-Cert"
HEADER_TIME = "X-Tongban-Time"
HEADER_NONCE = "X-Tongban-Nonce"
HEADER_AUDIENCE = "X-Tongban-Audience"
HEADER_SIGNATURE = "X-Tongban-Signature"
MAX_HEADER_CHARS = 16_384
_NONCE = re.compile(r"^[0-9a-f]{32}$")


def request_digest(method: str, path: str, timestamp: str, nonce: str, audience: str, body: bytes) -> str:
    text = "\n".join([method.upper(), path, timestamp, nonce, audience, hashlib.sha256(body).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()


def response_digest(nonce: str, status: int, body: bytes) -> str:
    text = "\n".join(["response", nonce, str(status), hashlib.sha256(body).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()


def _encode_signature(identity: NodeIdentity, digest: str) -> dict[str, str]:
    return {
        HEADER_CERT: base64.b64encode(identity.certificate_pem).decode(),
        HEADER_SIGNATURE: base64.b64encode(json.dumps(identity.sign(digest)).encode()).decode(),
    }


def sign_request(
    identity: NodeIdentity, method: str, path: str, body: bytes, audience: str | None = None
) -> dict[str, str]:
    """Headers for a request to ``audience`` (by default this node's parent in the division tree)."""
    audience = audience or yiyang().parent(identity.node_code) or ""
    timestamp = str(int(time.time()))
    nonce = secrets.token_hex(16)
    return {
        HEADER_TIME: timestamp,
        HEADER_NONCE: nonce,
        HEADER_AUDIENCE: audience,
        **_encode_signature(identity, request_digest(method, path, timestamp, nonce, audience, body)),
    }


def sign_response(identity: NodeIdentity, nonce: str, status: int, body: bytes) -> dict[str, str]:
    return _encode_signature(identity, response_digest(nonce, status, body))


def _refused(zh: str, en: str) -> DomainError:
    return DomainError("node_unauthenticated", zh, en, ErrorKind.UNAUTHENTICATED)


class SeenNonces(Protocol):
    """Where accepted nonces are remembered: the node's :class:`~node.adapters.nonces.NonceLog`
    (shared by every web process of the node) or, for one process alone, a :class:`ReplayCache`."""

    def first_use(self, nonce: str, now: float | None = None) -> bool: ...


class ReplayCache:
    """Nonces seen in the last ``ttl_s`` seconds, at most ``capacity`` of them (the oldest go first).

    Per process only: a node's web processes share a :class:`~node.adapters.nonces.NonceLog` instead
    (the sync API uses it); this one serves a process that has no node data directory.
    """

    def __init__(self, ttl_s: float = 2 * MAX_SKEW_S, capacity: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, nonce: str, now: float | None = None) -> bool:
        """Record ``nonce``; False when it was already used."""
        now = time.time() if now is None else now
        with self._lock:
            while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= self.capacity):
                self._seen.popitem(last=False)
            if nonce in self._seen:
                return False
            self._seen[nonce] = now + self.ttl_s
            return True


def _decode(headers: dict[str, str]) -> tuple[bytes, str, str, str, dict[str, object]]:
    try:
        raw = {
            name: headers[name] for name in (HEADER_CERT, HEADER_TIME, HEADER_NONCE, HEADER_AUDIENCE, HEADER_SIGNATURE)
        }
        if any(len(value) > MAX_HEADER_CHARS for value in raw.values()):
            raise ValueError
        cert_pem = base64.b64decode(raw[HEADER_CERT], validate=True)
        signature = json.loads(base64.b64decode(raw[HEADER_SIGNATURE], validate=True))
    except (KeyError, ValueError, binascii.Error, UnicodeDecodeError):
        raise _refused("缺少或无法解析节点证书与签名", "missing or malformed node certificate and signature") from None
    if not isinstance(signature, dict):
        raise _refused("签名格式错误", "malformed signature")
    return cert_pem, raw[HEADER_TIME], raw[HEADER_NONCE], raw[HEADER_AUDIENCE], signature


def check_request_headers(headers: dict[str, str], audience: str, ca_pem: bytes, now: float | None = None) -> str:
    """The calling node's code from the headers alone (certificate, time, audience), before any body is read."""
    cert_pem, timestamp, nonce, claimed_audience, _ = _decode(headers)
    if not timestamp.isdigit() or len(timestamp) > 12 or abs((now or time.time()) - int(timestamp)) > MAX_SKEW_S:
        raise _refused("请求时间与本节点相差过大", "request time is too far from this node's clock")
    if not _NONCE.match(nonce):
        raise _refused("请求缺少一次性随机数", "the request carries no valid nonce")
    if claimed_audience != audience:
        raise _refused("请求不是发给本节点的", f"the request was meant for {claimed_audience[:64]!r}, not {audience}")
    return verify_certificate(cert_pem, ca_pem)


def verify_request(
    headers: dict[str, str],
    method: str,
    path: str,
    body: bytes,
    ca_pem: bytes,
    audience: str,
    replays: SeenNonces,
    now: float | None = None,
) -> str:
    """The calling node's code, or DomainError ``node_unauthenticated`` (also for a replayed request)."""
    node = check_request_headers(headers, audience, ca_pem, now)
    cert_pem, timestamp, nonce, _, signature = _decode(headers)
    verify_signature(signature, request_digest(method, path, timestamp, nonce, audience, body), cert_pem, ca_pem)
    if not replays.first_use(nonce, now):
        raise _refused("重复的请求（重放）", "this request was already received (replay)")
    return node


def verify_response(headers: dict[str, str], nonce: str, status: int, body: bytes, ca_pem: bytes, parent: str) -> None:
    """Raise DomainError unless the answer is signed by ``parent``'s certificate of the city CA for this request."""
    try:
        cert_pem = base64.b64decode(headers[HEADER_CERT], validate=True)
        signature = json.loads(base64.b64decode(headers[HEADER_SIGNATURE], validate=True))
    except (KeyError, ValueError, binascii.Error, UnicodeDecodeError):
        raise _refused("上级节点的应答未签名", "the parent's answer is not signed") from None
    if not isinstance(signature, dict):
        raise _refused("签名格式错误", "malformed signature")
    node = verify_certificate(cert_pem, ca_pem)
    if node != parent:
        raise _refused(f"应答来自 {node}，不是上级节点 {parent}", f"the answer comes from {node}, not {parent}")
    verify_signature(signature, response_digest(nonce, status, body), cert_pem, ca_pem)
