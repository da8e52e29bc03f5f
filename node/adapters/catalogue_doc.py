"""The published catalogue: one ``catalogue`` document, authored at the city, replicated everywhere.

Every process of a node reads it through :class:`PublishedCatalogue`, which re-reads the document at
most every few seconds, so a new version reaches running nodes without a restart.

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
from typing import Any

from node.adapters.docstore import Doc, DocStore, StoreUnavailable
from node.adapters.pki import NodeIdentity, verify_signature
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import canonical_json

CATALOGUE_DOC = "catalogue"
_UNSIGNED_FIELDS = ("signature", "certificate")
log = logging.getLogger(__name__)


def catalogue_digest(doc: Doc) -> str:
    """SHA-256 of the canonical JSON of the catalogue's content (store fields and the signature left out)."""
    body = {k: v for k, v in doc.items() if not k.startswith("_") and k not in _UNSIGNED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def signed_catalogue_doc(catalogue: Catalogue, identity: NodeIdentity) -> Doc:
    doc: Doc = {**catalogue.to_dict(), "_id": CATALOGUE_DOC}
    doc["certificate"] = identity.certificate_pem.decode("ascii")
    doc["signature"] = identity.sign(catalogue_digest(doc))
    return doc


def catalogue_problem(doc: Any, ca_pem: bytes, city: str) -> str | None:
    """None when ``doc`` is a catalogue signed by ``city`` with a certificate of the city CA; else why not."""
    if not isinstance(doc, dict):
        return "not a document"
    signature, certificate = doc.get("signature"), doc.get("certificate")
    if not isinstance(signature, dict) or not isinstance(certificate, str) or len(certificate) > 16_384:
        return "the catalogue is not signed by the city"
    if signature.get("signer") != city:
        return f"the catalogue is signed by {str(signature.get('signer'))[:64]!r}, not by the city {city}"
    try:
        verify_signature(signature, catalogue_digest(doc), certificate.encode(), ca_pem)
    except (DomainError, TypeError, ValueError) as exc:
        return f"the catalogue's signature does not verify ({str(exc)[:200]})"
    return None


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
            if problem is None:
                try:
                    self._catalogue, self._rev = Catalogue.from_dict(doc), doc.get("_rev")
                    return
                except DomainError as exc:
                    problem = exc.message_en
            self._refused_rev = doc.get("_rev")
            log.warning("catalogue revision %s not used: %s", doc.get("_rev"), problem)

    def problem(self, doc: Doc) -> str | None:
        """Why a stored catalogue document may not be used here (None: use it)."""
        if self.identity is None or self.city is None:
            return None
        return catalogue_problem(doc, self.identity.ca_pem, self.city)

    def document(self, catalogue: Catalogue) -> Doc:
        """The document to store for ``catalogue``: signed when this node has an identity."""
        if self.identity is None:
            return {**catalogue.to_dict(), "_id": CATALOGUE_DOC}
        return signed_catalogue_doc(catalogue, self.identity)

    def ensure_published(self, seed: Catalogue) -> None:
        """At the city: store the seed if there is no catalogue yet, and sign one stored unsigned."""
        current = self.store.get(CATALOGUE_DOC)
        if current is None:
            self.store.bulk_docs([self.document(seed)])
        elif self.identity is not None and self.problem(current) is not None:
            doc = self.document(Catalogue.from_dict(current))
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
        doc = self.document(catalogue)
        if current:
            doc["_rev"] = current["_rev"]
        self.store.put(doc)
        self._checked = 0.0
