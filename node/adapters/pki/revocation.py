"""Certificate revocation: the city CA's signed revocation list (CRL) as one replicated document, ``crl``.

The city CA signs (with its own key, ES256 over :func:`crl_digest`) a list of revoked node
certificates, each by SHA-256 fingerprint with the time it was revoked and why, under a CRL number
that only grows. The document travels down to every node and is never accepted from a child
(:mod:`sync.authority`); a node uses a list only when the CA's signature verifies
(:func:`crl_problem`) and never goes back to a lower number (:class:`PublishedRevocations`).

Verification (:class:`node.adapters.eventstore.EventVerifier`) quarantines an event signed with a
revoked certificate when its signing time is after the revocation; earlier events stay valid, so a
village's history survives the theft of its key. Certificates themselves are never deleted: a
renewed node keeps its old ``cert:<node>:<sha>`` documents, and each event names the one it used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from node.adapters.pki.ca import CertificateAuthority
from node.adapters.pki.common import ECDSA_SHA256, SIGNATURE_ALG, common_name, fingerprint, parse_cert
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import canonical_json
from node.domain.hlc import NODE_PATTERN

CRL_DOC = "crl"
CRL_DOC_TYPE = "revocation_list"
MAX_ENTRIES = 20_000  # far more than the city's nodes; keeps the document under the link's size bound
MAX_REASON_CHARS = 200
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UNSIGNED_FIELDS = ("signature",)


@dataclass(frozen=True)
class Revoked:
    cert_sha256: str
    node: str
    revoked_at: datetime
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {
            "cert_sha256": self.cert_sha256,
            "node": self.node,
            "revoked_at": self.revoked_at.isoformat(),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RevocationList:
    number: int = 0  # 0: nothing revoked yet (no document)
    entries: tuple[Revoked, ...] = ()

    def revoked(self, cert_sha256: str) -> Revoked | None:
        return next((entry for entry in self.entries if entry.cert_sha256 == cert_sha256), None)

    def with_revoked(self, entries: list[Revoked]) -> RevocationList:
        """The next list: ``entries`` added (a certificate already revoked keeps its first revocation)."""
        kept = list(self.entries)
        known = {entry.cert_sha256 for entry in kept}
        kept.extend(entry for entry in entries if entry.cert_sha256 not in known)
        return RevocationList(self.number + 1, tuple(kept))

    def to_body(self) -> dict[str, Any]:
        return {
            "doc_type": CRL_DOC_TYPE,
            "number": self.number,
            "revoked": [entry.to_dict() for entry in self.entries],
        }


def crl_digest(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if not k.startswith("_") and k not in _UNSIGNED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def signed_crl_doc(crl: RevocationList, ca: CertificateAuthority) -> dict[str, Any]:
    doc: dict[str, Any] = {"_id": CRL_DOC, **crl.to_body()}
    doc["signature"] = ca.sign(crl_digest(doc))
    return doc


def _parse_entry(entry: Any) -> Revoked:
    if not isinstance(entry, dict):
        raise ValueError("an entry is not an object")
    sha, node, at, reason = (entry.get(k) for k in ("cert_sha256", "node", "revoked_at", "reason"))
    if not isinstance(sha, str) or not _HEX64.match(sha):
        raise ValueError("an entry's cert_sha256 is not 64 lowercase hex digits")
    if not isinstance(node, str) or not NODE_PATTERN.match(node):
        raise ValueError("an entry's node is not a node code")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ValueError("an entry's reason is not a short text")
    if not isinstance(at, str) or len(at) > 40:
        raise ValueError("an entry's revoked_at is not a time")
    when = datetime.fromisoformat(at)
    if when.tzinfo is None:
        raise ValueError("an entry's revoked_at has no time zone")
    return Revoked(sha, node, when.astimezone(UTC), reason)


def parse_crl(doc: Any) -> RevocationList:
    """The list in ``doc`` (shape only; :func:`crl_problem` checks the signature). Raises ValueError."""
    if not isinstance(doc, dict) or doc.get("doc_type") != CRL_DOC_TYPE:
        raise ValueError("not a revocation list")
    number, revoked = doc.get("number"), doc.get("revoked")
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 10**9:
        raise ValueError("the CRL number is not a positive integer")
    if not isinstance(revoked, list) or len(revoked) > MAX_ENTRIES:
        raise ValueError("the revoked list is missing or too long")
    return RevocationList(number, tuple(_parse_entry(entry) for entry in revoked))


def crl_problem(doc: Any, ca_pem: bytes) -> str | None:
    """None when ``doc`` is a revocation list signed by the city CA in ``ca_pem``; else why not."""
    try:
        parse_crl(doc)
    except ValueError as exc:
        return f"malformed revocation list: {exc}"
    signature = doc.get("signature")
    if not isinstance(signature, dict) or signature.get("alg") != SIGNATURE_ALG:
        return "the revocation list is not signed"
    try:
        ca = parse_cert(ca_pem, "CA ", "CA certificate")
    except DomainError as exc:
        return exc.message_en
    if signature.get("signer") != f"ca:{(common_name(ca) or '').rsplit(' ', 1)[-1]}" or signature.get(
        "cert_sha256"
    ) != fingerprint(ca):
        return "the revocation list is not signed by the city CA"
    public_key = ca.public_key()
    try:
        value = base64.b64decode(str(signature.get("value")), validate=True)
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            return "the city CA key is not an EC key"
        public_key.verify(value, crl_digest(doc).encode("utf-8"), ECDSA_SHA256)
    except (binascii.Error, ValueError, InvalidSignature):
        return "the revocation list's signature does not verify against the city CA"
    return None


class _Store(Protocol):
    def get(self, doc_id: str) -> dict[str, Any] | None: ...

    def put(self, doc: dict[str, Any]) -> dict[str, Any]: ...


class PublishedRevocations:
    """The newest verified revocation list in a node's store, re-read at most every ``ttl_s`` seconds.

    A stored list that does not verify, or whose number is lower than one already used here, is
    ignored: the last good list stays in force.
    """

    def __init__(self, store: _Store, ca_pem: bytes, ttl_s: float = 5.0) -> None:
        self.store = store
        self.ca_pem = ca_pem
        self.ttl_s = ttl_s
        self._list = RevocationList()
        self._rev: str | None = None
        self._checked = -float("inf")
        self._lock = threading.Lock()

    @property
    def current(self) -> RevocationList:
        if time.monotonic() - self._checked >= self.ttl_s:
            self.refresh()
        return self._list

    def refresh(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            doc = self.store.get(CRL_DOC)
            if not doc or doc.get("_rev") == self._rev or crl_problem(doc, self.ca_pem) is not None:
                return
            found = parse_crl(doc)
            if found.number >= self._list.number:
                self._list, self._rev = found, doc.get("_rev")

    def revoked(self, cert_sha256: str) -> Revoked | None:
        return self.current.revoked(cert_sha256)

    def revoked_nodes(self) -> list[str]:
        """The nodes named in the newest list, read now (a new list has just arrived)."""
        self.refresh()
        return sorted({entry.node for entry in self._list.entries})


def publish_revocation(
    store: _Store, ca: CertificateAuthority, entries: list[Revoked]
) -> tuple[RevocationList, dict[str, Any]]:
    """At the city: sign and store the next revocation list with ``entries`` added; returns it and its document."""
    if not entries:
        raise DomainError(
            "nothing_to_revoke", "没有要吊销的证书", "no certificate to revoke was found", ErrorKind.NOT_FOUND
        )
    held = store.get(CRL_DOC)
    current = RevocationList()
    if held:
        problem = crl_problem(held, ca.certificate_pem)
        if problem is not None:
            raise DomainError(
                "crl_invalid",
                f"本节点保存的吊销列表无效：{problem}",
                f"the revocation list held here is not valid: {problem}",
                ErrorKind.CONFLICT,
            )
        current = parse_crl(held)
    doc = signed_crl_doc(current.with_revoked(entries), ca)
    if held:
        doc["_rev"] = held["_rev"]
    store.put(doc)
    return parse_crl(doc), doc


def revocation_entry(cert_sha256: str, node: str, reason: str, at: datetime | None = None) -> Revoked:
    return Revoked(cert_sha256, node, (at or datetime.now(UTC)).astimezone(UTC), reason[:MAX_REASON_CHARS])
