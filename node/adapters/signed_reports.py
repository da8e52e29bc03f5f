"""Signed MQTT reports: what a node says about itself on ``tongban/up/<node>/…``, sealed with its node key.

Bridges re-publish every message unchanged, so the broker's notion of who published a message is
lost one hop up: the city's collector cannot attribute a status from the connection it arrived on.
Each report therefore carries its own proof. The body stays as it was (readers that only look at
``status`` or ``kind`` keep working) and gains one reserved key, ``auth``::

    {..body..., "auth": {"v": 1, "at": <epoch s>, "nonce": <32 hex>, "session": <32 hex>,
                         "will": <bool>, "cert": <node certificate PEM>, "sig": <NodeIdentity.sign>}}

The signature covers the topic (so the node and the kind of report), the body, the time, the nonce,
the session (one per connection's signer: heartbeats and the last will of one agent share it) and
whether this is the last will. :class:`ReportOpener` checks a report against the city CA; what is
fresh enough and what counts as a replay is the collector's policy (:mod:`node.entrypoints.ops_reports`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from node.adapters.pki import NodeIdentity, cert_sha256, verify_signature
from node.adapters.pki.common import ECDSA_SHA256, SIGNATURE_ALG, sig_error
from node.domain.errors import DomainError

AUTH_KEY = "auth"
ENVELOPE_VERSION = 1
# A report is a few hundred bytes of body and ~1 KiB of certificate and signature: anything much
# larger is refused before it is even parsed (the broker's own limit is a little higher).
MAX_REPORT_BYTES = 16_384
MAX_CERT_CHARS = 4_096
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
# The last year a report may claim (datetime cannot go past 9999; nothing honest is near it).
_LATEST_AT = 253_402_300_799.0


class ReportRefused(Exception):
    """A report that proves nothing: ``reason`` is a short code, ``signer`` the real signer when known."""

    def __init__(self, reason: str, detail: str, signer: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:300]
        self.signer = signer


@dataclass(frozen=True)
class OpenedReport:
    """A report whose signature holds, by the node its topic names."""

    node: str
    body: dict[str, Any]
    at: float
    nonce: str
    session: str
    will: bool


def report_digest(topic: str, body: dict[str, Any], at: float, nonce: str, session: str, will: bool) -> str:
    """SHA-256 (hex) of the canonical JSON of everything a report's signature covers."""
    signed = {"v": ENVELOPE_VERSION, "topic": topic, "body": body, "at": at, "nonce": nonce, "session": session}
    signed["will"] = will
    text = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReportSigner:
    """Seals the reports one MQTT connection publishes under its node's topics."""

    def __init__(self, identity: NodeIdentity) -> None:
        self.identity = identity
        self.node = identity.node_code
        self.session = secrets.token_hex(16)
        self._cert = identity.certificate_pem.decode("ascii")

    def seal(self, topic: str, body: dict[str, Any], will: bool = False, at: float | None = None) -> dict[str, Any]:
        body = {key: value for key, value in body.items() if key != AUTH_KEY}
        at = time.time() if at is None else at
        nonce = secrets.token_hex(16)
        signature = self.identity.sign(report_digest(topic, body, at, nonce, self.session, will))
        auth = {"v": ENVELOPE_VERSION, "at": at, "nonce": nonce, "session": self.session, "will": will}
        return {**body, AUTH_KEY: {**auth, "cert": self._cert, "sig": signature}}


@dataclass(frozen=True)
class _CheckedCertificate:
    node: str
    fingerprint: str
    public_key: ec.EllipticCurvePublicKey
    valid_from: float
    valid_until: float


class ReportOpener:
    """Checks reports against the city CA: well-formed, signed by a certificate it issued, by the topic's node.

    A certificate is checked against the CA in full (:func:`verify_signature`) the first time it is
    seen; later reports with it cost one ECDSA verification (a full check is ~1 ms, and the city
    hears ~300 reports a second). The cache is bounded, least recently used first out.
    """

    def __init__(self, ca_pem: bytes, capacity: int = 4_096) -> None:
        self.ca_pem = ca_pem
        self.capacity = capacity
        self._checked: OrderedDict[str, _CheckedCertificate] = OrderedDict()

    def _verify(self, signature: dict[str, Any], digest: str, cert: str, at: float) -> None:
        known = self._checked.get(cert)
        if known is None or not known.valid_from <= at <= known.valid_until:
            verify_signature(signature, digest, cert, self.ca_pem, at=datetime.fromtimestamp(at, UTC))
            parsed = x509.load_pem_x509_certificate(cert.encode("ascii"))
            public_key = parsed.public_key()
            if isinstance(public_key, ec.EllipticCurvePublicKey):
                self._checked[cert] = _CheckedCertificate(
                    str(signature["signer"]),
                    cert_sha256(cert),
                    public_key,
                    parsed.not_valid_before_utc.timestamp(),
                    parsed.not_valid_after_utc.timestamp(),
                )
                while len(self._checked) > self.capacity:
                    self._checked.popitem(last=False)
            return
        self._checked.move_to_end(cert)
        value = signature.get("value")
        if (
            signature.get("alg") != SIGNATURE_ALG
            or signature.get("signer") != known.node
            or str(signature.get("cert_sha256", "")).lower() != known.fingerprint
            or not isinstance(value, str)
        ):
            raise sig_error("签名字段与证书不符", "the signature's fields do not match its certificate")
        try:
            known.public_key.verify(base64.b64decode(value, validate=True), digest.encode("utf-8"), ECDSA_SHA256)
        except (InvalidSignature, binascii.Error, ValueError):
            raise sig_error("签名与内容不符", "the signature does not verify (content or signature altered)") from None

    def open(self, topic: str, node: str, payload: dict[str, Any]) -> OpenedReport:
        """The report's body and seal, or :class:`ReportRefused` (``unsigned``, ``malformed``, ``bad_signature``,
        ``wrong_signer``)."""
        auth = payload.get(AUTH_KEY)
        if auth is None:
            raise ReportRefused("unsigned", "the report carries no signature")
        if not isinstance(auth, dict):
            raise ReportRefused("malformed", "the report's auth block is not an object")
        at, nonce, session, will = auth.get("at"), auth.get("nonce"), auth.get("session"), auth.get("will")
        cert, signature = auth.get("cert"), auth.get("sig")
        if (
            type(auth.get("v")) is not int
            or auth.get("v") != ENVELOPE_VERSION
            or not isinstance(at, int | float)
            or isinstance(at, bool)
            or not 0 < at < _LATEST_AT
            or not isinstance(nonce, str)
            or not _HEX32.match(nonce)
            or not isinstance(session, str)
            or not _HEX32.match(session)
            or not isinstance(will, bool)
            or not isinstance(cert, str)
            or len(cert) > MAX_CERT_CHARS
            or not isinstance(signature, dict)
        ):
            raise ReportRefused("malformed", "the report's auth block is incomplete or malformed")
        claimed_signer = signature.get("signer") if isinstance(signature.get("signer"), str) else None
        body = {key: value for key, value in payload.items() if key != AUTH_KEY}
        try:
            digest = report_digest(topic, body, float(at), nonce, session, will)
        except ValueError as exc:  # NaN or infinity in the body
            raise ReportRefused("malformed", f"the report cannot be put in canonical form ({exc})") from None
        try:
            self._verify(signature, digest, cert, float(at))
        except DomainError as exc:
            detail = f"{exc.message_en} (claims to be {_short(claimed_signer)})"
            raise ReportRefused("bad_signature", detail) from None
        # The signature holds, so its signer is the certificate's node (verify_signature checked both).
        if claimed_signer != node:
            raise ReportRefused(
                "wrong_signer", f"signed by {claimed_signer}, but the topic names {node}", signer=claimed_signer
            )
        return OpenedReport(node, body, float(at), nonce, session, will)


def _short(value: str | None) -> str | None:
    return value[:20] if value else None
