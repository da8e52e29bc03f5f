"""The published catalogue: one ``catalogue`` document, authored at the city, replicated everywhere.

Every process of a node reads it through :class:`PublishedCatalogue`, which re-reads the document at
most every few seconds, so a new version reaches running nodes without a restart.

Beside that pointer, every version the city publishes is kept as a write-once document
``catalogue:v<N>`` that travels everywhere too: an event names the version it was routed by, and any
node checks it against that version even if it never held it as current (:meth:`PublishedCatalogue.version`).

The document carries the city's signature (``signature`` over :func:`catalogue_digest`, with the
signing ``certificate``): a node configured with its identity uses a version only when the signature
verifies against the city CA and names the city, so a catalogue forged anywhere in the tree is never
used (nor passed down: see :mod:`sync.authority`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from node.adapters.docstore import Doc, DocStore, StoreUnavailable
from node.adapters.pki import NodeIdentity, verify_signature
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import canonical_json

CATALOGUE_DOC = "catalogue"
VERSION_PREFIX = "catalogue:v"
MAX_VERSION = 1_000_000_000
MAX_SIGNED_AHEAD = timedelta(minutes=15)
_UNSIGNED_FIELDS = ("signature", "certificate")
log = logging.getLogger(__name__)


def catalogue_digest(doc: Doc) -> str:
    """SHA-256 of the canonical JSON of the catalogue's content (store fields and the signature left out)."""
    body = {k: v for k, v in doc.items() if not k.startswith("_") and k not in _UNSIGNED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def version_doc_id(version: int) -> str:
    return f"{VERSION_PREFIX}{version}"


def parse_version_doc_id(doc_id: str) -> int | None:
    """N of ``catalogue:v<N>`` (no leading zeros, at most :data:`MAX_VERSION`), else None."""
    if not isinstance(doc_id, str) or not doc_id.startswith(VERSION_PREFIX):
        return None
    digits = doc_id[len(VERSION_PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or digits.startswith("0") or len(digits) > 10:
        return None
    version = int(digits)
    return version if version <= MAX_VERSION else None


def document_version(doc: Any) -> int | None:
    """The ``version`` field of a catalogue document, when it is a plausible one."""
    version = doc.get("version", 1) if isinstance(doc, dict) else None
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        return None
    return version


def content_digest(doc: Doc) -> str:
    """SHA-256 of the catalogue a document holds (whoever signed it, whenever): equal for the same catalogue."""
    return hashlib.sha256(canonical_json(Catalogue.from_dict(doc).to_dict()).encode()).hexdigest()


def signed_catalogue_doc(catalogue: Catalogue, identity: NodeIdentity, doc_id: str = CATALOGUE_DOC) -> Doc:
    # ``signed_at`` is covered by the signature: the signature is checked against the city's certificate
    # as it was then, so kept versions stay verifiable after that certificate is renewed or expires.
    doc: Doc = {**catalogue.to_dict(), "_id": doc_id, "signed_at": datetime.now(UTC).isoformat(timespec="seconds")}
    doc["certificate"] = identity.certificate_pem.decode("ascii")
    doc["signature"] = identity.sign(catalogue_digest(doc))
    return doc


def catalogue_problem(doc: Any, ca_pem: bytes, city: str) -> str | None:
    """None when ``doc`` is a catalogue signed by ``city`` with a certificate of the city CA; else why not."""
    if not isinstance(doc, dict):
        return "not a document"
    if document_version(doc) is None:
        return "the catalogue has no valid version number"
    doc_id = doc.get("_id", CATALOGUE_DOC)
    if doc_id != CATALOGUE_DOC and parse_version_doc_id(doc_id) != doc.get("version", 1):
        return f"the catalogue version document {str(doc_id)[:40]!r} holds version {doc.get('version')!r}"
    signature, certificate = doc.get("signature"), doc.get("certificate")
    if not isinstance(signature, dict) or not isinstance(certificate, str) or len(certificate) > 16_384:
        return "the catalogue is not signed by the city"
    if signature.get("signer") != city:
        return f"the catalogue is signed by {str(signature.get('signer'))[:64]!r}, not by the city {city}"
    try:
        at = _signed_at(doc.get("signed_at"))
        verify_signature(signature, catalogue_digest(doc), certificate.encode(), ca_pem, at=at)
    except (DomainError, TypeError, ValueError) as exc:
        return f"the catalogue's signature does not verify ({str(exc)[:200]})"
    return None


def _signed_at(value: Any) -> datetime | None:
    """When a catalogue says it was signed (None: not said, check against now); never in the future."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("signed_at is not a time")
    at = datetime.fromisoformat(value)
    if at.tzinfo is None or at > datetime.now(UTC) + MAX_SIGNED_AHEAD:
        raise ValueError("signed_at has no time zone or lies in the future")
    return at


class PublishedCatalogue:
    def __init__(
        self,
        store: DocStore,
        fallback: Catalogue,
        ttl_s: float = 10.0,
        *,
        identity: NodeIdentity | None = None,
        city: str | None = None,
    ) -> None:
        """With ``identity`` and ``city``, only versions signed by the city are used, and this node signs
        what it publishes (only the city's signature verifies elsewhere)."""
        self.store = store
        self.ttl_s = ttl_s
        self.identity = identity
        self.city = city
        self._catalogue = fallback
        self._seed = fallback
        # Verified versions by number: version documents are written once, so a verified one stays true.
        self._versions: dict[int, Catalogue] = {}
        self._held: list[Catalogue] = []
        self._held_checked = 0.0
        self._rev: str | None = None
        self._refused_rev: str | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    @property
    def current(self) -> Catalogue:
        """The newest published version (the shipped seed until one arrives)."""
        if time.monotonic() - self._checked >= self.ttl_s:
            self._refresh()
        return self._catalogue

    def latest(self) -> Catalogue:
        """The newest version in the store, read now: an editor must never build on a stale copy."""
        self._refresh()
        return self._catalogue

    def _refresh(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            try:
                doc = self.store.get(CATALOGUE_DOC)
            except StoreUnavailable:
                return  # keep serving the version we have
            if not doc or doc.get("_rev") in (self._rev, self._refused_rev):
                return
            problem = self.problem(doc)
            if problem is None and self._rev is not None and (document_version(doc) or 0) < self._catalogue.version:
                # An older version written over a newer one (a replay that got past the link): keep the newer.
                problem = f"version {doc.get('version')} is older than version {self._catalogue.version} in use"
            if problem is None:
                try:
                    self._catalogue, self._rev = Catalogue.from_dict(doc), doc.get("_rev")
                    return
                except DomainError as exc:
                    problem = exc.message_en
            self._refused_rev = doc.get("_rev")
            log.warning("catalogue revision %s not used: %s", doc.get("_rev"), problem)

    def version(self, number: int) -> Catalogue | None:
        """Catalogue version ``number`` as the city published it, or None while this node does not hold it.

        From its ``catalogue:v<N>`` document (or the pointer, when that is the version), verified before
        use; the shipped seed stands for its own version until the city's copy arrives.
        """
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_VERSION:
            return None
        with self._lock:
            if number in self._versions:
                return self._versions[number]
        found: Catalogue | None = None
        candidates = [self.store.get(version_doc_id(number)), self.store.get(CATALOGUE_DOC)]
        for doc in candidates:
            if not doc or document_version(doc) != number or self.problem(doc) is not None:
                continue
            try:
                found = Catalogue.from_dict(doc)
            except DomainError:
                continue
            break
        if found is None:
            return self._seed if self._seed.version == number else None
        with self._lock:
            self._versions[number] = found
        return found

    def versions_held(self) -> list[Catalogue]:
        """Every verified version this node holds (for events written before they named one); re-listed
        at most every ``ttl_s``."""
        if self._held and time.monotonic() - self._held_checked < self.ttl_s:
            return self._held
        rows = self.store.all_docs(VERSION_PREFIX, VERSION_PREFIX + "\ufff0", include_docs=False)
        numbers = {n for n in (parse_version_doc_id(row.get("id", "")) for row in rows) if n is not None}
        numbers.add(self.current.version)
        found = [c for c in (self.version(n) for n in sorted(numbers)) if c is not None] or [self._seed]
        self._held, self._held_checked = found, time.monotonic()
        return found

    def problem(self, doc: Doc) -> str | None:
        """Why a stored catalogue document may not be used here (None: use it)."""
        if self.identity is None or self.city is None:
            return None
        return catalogue_problem(doc, self.identity.ca_pem, self.city)

    def document(self, catalogue: Catalogue, doc_id: str = CATALOGUE_DOC) -> Doc:
        """The document to store for ``catalogue``: signed when this node has an identity."""
        if self.identity is None:
            return {**catalogue.to_dict(), "_id": doc_id}
        return signed_catalogue_doc(catalogue, self.identity, doc_id)

    def _keep_version(self, catalogue: Catalogue) -> None:
        """Store the write-once ``catalogue:v<N>`` document of a version, unless it is there already."""
        if self.store.get(version_doc_id(catalogue.version)) is None:
            self.store.bulk_docs([self.document(catalogue, version_doc_id(catalogue.version))])

    def ensure_published(self, seed: Catalogue) -> None:
        """At the city: store the seed if there is no catalogue yet, sign one stored unsigned, and keep
        the current version's own document (a city that published before versions were kept gets it here)."""
        current = self.store.get(CATALOGUE_DOC)
        if current is None:
            self._keep_version(seed)
            self.store.bulk_docs([self.document(seed)])
        else:
            catalogue = Catalogue.from_dict(current)
            self._keep_version(catalogue)
            if self.identity is not None and self.problem(current) is not None:
                doc = self.document(catalogue)
                self.store.put({**doc, "_rev": current["_rev"]})
        self._checked = 0.0

    def publish(self, catalogue: Catalogue) -> None:
        """Store a new version; it must be exactly one above the current one."""
        current = self.store.get(CATALOGUE_DOC)
        current_version = int(current.get("version", 1)) if current else self._catalogue.version - 1
        if catalogue.version != current_version + 1:
            raise DomainError(
                "catalogue_version",
                f"新目录的版本号应为 {current_version + 1}",
                f"the new catalogue's version must be {current_version + 1}, got {catalogue.version}",
                ErrorKind.CONFLICT,
            )
        # The version document first: a pointer naming a version always has its document beside it.
        self._keep_version(catalogue)
        doc = self.document(catalogue)
        if current:
            doc["_rev"] = current["_rev"]
        self.store.put(doc)
        self._checked = 0.0
