"""The published catalogue: one ``catalogue`` document, authored at the city, replicated everywhere.

Every process of a node reads it through :class:`PublishedCatalogue`, which re-reads the document at
most every few seconds, so a new version reaches running nodes without a restart.
"""

from __future__ import annotations

import threading
import time

from node.adapters.docstore import DocStore, StoreUnavailable
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError, ErrorKind

CATALOGUE_DOC = "catalogue"


class PublishedCatalogue:
    def __init__(self, store: DocStore, fallback: Catalogue, ttl_s: float = 10.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._catalogue = fallback
        self._rev: str | None = None
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
            if doc and doc.get("_rev") != self._rev:
                self._catalogue, self._rev = Catalogue.from_dict(doc), doc.get("_rev")

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
        doc = {**catalogue.to_dict(), "_id": CATALOGUE_DOC}
        if current:
            doc["_rev"] = current["_rev"]
        self.store.put(doc)
        self._checked = 0.0
