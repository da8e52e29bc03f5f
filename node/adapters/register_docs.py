"""Register records as replicated documents: authored and signed at the city (or a county), held down the tree.

This adapter owns the document form of a person's register record and its signature:

``register:person:<look-up key>:<residence code>`` →
``{doc_type, kind, residence_code, key, status, sealed, author, signed_at, signature}``

The look-up key (the PersonalData HMAC of the ID number) leads the id so a node finds a person with one
key-range read; the residence code ends it so a parent routes the document from its id alone (to the
children whose subtree holds the residence, :mod:`sync.registers`); ``sealed`` is the whole
:class:`~node.domain.registers.PersonRecord` encrypted with the city's data key. The author signs the
canonical hash of every field but ``signature`` with its node key (the events' signature format), and a
reader checks it against the author's certificate and the city CA before it believes the record: the
city, or the county whose subtree holds the residence, may author.

:class:`RegisterDocuments` writes the documents a node authors and finds one person's record among
those replicated to this node (a key-range read by look-up key).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from node.adapters.docstore import DocStore
from node.adapters.eventstore import EventStore
from node.adapters.pii import PersonalData
from node.adapters.pki import NodeIdentity, verify_signature
from node.domain.errors import DomainError
from node.domain.events import canonical_json
from node.domain.registers import PersonRecord
from tiers import DivisionTree, Tier

__all__ = [
    "PREFIX",
    "RegisterDocuments",
    "authorised_author",
    "parse_register_id",
    "register_hash",
    "register_id",
]

PREFIX = "register:"
MAX_SEALED_CHARS = 64 * 1024
_ID = re.compile(r"^register:(person):([0-9a-f]{64}):([0-9A-Z]{12})$", re.ASCII)
_BATCH = 500


def register_id(kind: str, residence_code: str, key: str) -> str:
    return f"{PREFIX}{kind}:{key}:{residence_code}"


def parse_register_id(doc_id: object) -> tuple[str, str, str] | None:
    """``(kind, residence code, look-up key)`` of a register document id, or None."""
    match = _ID.match(doc_id) if isinstance(doc_id, str) else None
    return (match.group(1), match.group(3), match.group(2)) if match else None


def register_hash(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every field but the ``_`` ones (``_id``, ``_rev`` …) and the signature."""
    fields = {k: v for k, v in doc.items() if not k.startswith("_") and k != "signature"}
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def authorised_author(author: object, residence_code: str, tree: DivisionTree) -> bool:
    """The city authors every record; a county authors its own residents' records."""
    if not isinstance(author, str) or author not in tree:
        return False
    if author == tree.root:
        return True
    return (
        tree.tier(author) is Tier.COUNTY and residence_code in tree and tree.is_in_subtree(residence_code, author)
    )


class RegisterDocuments:
    """The node's store as the carrier of register records it authors or was sent."""

    def __init__(
        self, store: DocStore, events: EventStore, ca_pem: bytes, personal_data: PersonalData, tree: DivisionTree
    ) -> None:
        self.store = store
        self.events = events
        self.ca_pem = ca_pem
        self._pii = personal_data
        self.tree = tree

    def publish(self, records: Iterable[PersonRecord], identity: NodeIdentity) -> int:
        """Write (or update) the records this node may author; returns how many were written."""
        written = 0
        batch: list[dict[str, Any]] = []
        for record in records:
            if not authorised_author(identity.node_code, record.residence_code, self.tree):
                continue
            key = self._pii.lookup_key(record.id_number)
            doc: dict[str, Any] = {
                "_id": register_id("person", record.residence_code, key),
                "doc_type": "register",
                "kind": "person",
                "residence_code": record.residence_code,
                "key": key,
                "status": record.status,
                "sealed": self._pii.seal(record.to_dict()),
                "author": identity.node_code,
                "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            doc["signature"] = identity.sign(register_hash(doc))
            batch.append(doc)
            if len(batch) >= _BATCH:
                written += self._put(batch)
                batch = []
        return written + self._put(batch)

    def _put(self, docs: list[dict[str, Any]]) -> int:
        if not docs:
            return 0
        held = self.store.current_revs([doc["_id"] for doc in docs])
        for doc in docs:
            if doc["_id"] in held:
                doc["_rev"] = held[doc["_id"]]
        return sum(1 for row in self.store.bulk_docs(docs) if not row.get("error"))

    def find_person(self, id_number: str) -> PersonRecord | None:
        """The person's record among the register documents here, verified; None when none is trusted."""
        key = self._pii.lookup_key(id_number)
        start = f"{PREFIX}person:{key}:"
        for doc in self.store.all_docs(start, start + "\ufff0"):
            record = self.verified(doc)
            if record is not None and record.id_number == id_number.strip().upper():
                return record
        return None

    def verified(self, doc: Mapping[str, Any]) -> PersonRecord | None:
        """The record a document carries when its id, author and signature hold; None otherwise."""
        parsed = parse_register_id(doc.get("_id"))
        if parsed is None or doc.get("_deleted"):
            return None
        _kind, residence, key = parsed
        if doc.get("residence_code") != residence or doc.get("key") != key:
            return None
        author, signature = doc.get("author"), doc.get("signature")
        if not authorised_author(author, residence, self.tree) or not isinstance(signature, Mapping):
            return None
        if signature.get("signer") != author or not isinstance(doc.get("sealed"), str):
            return None
        pem = self.events.certificate(str(author), str(signature.get("cert_sha256")))
        if pem is None:
            return None
        try:
            verify_signature(signature, register_hash(doc), pem, self.ca_pem)
        except DomainError:
            return None
        sealed = str(doc["sealed"])
        data = self._pii.open(sealed) if len(sealed) <= MAX_SEALED_CHARS else None
        try:
            record = PersonRecord.from_dict(data) if data is not None else None
        except DomainError:
            return None
        if record is None or record.residence_code != residence or self._pii.lookup_key(record.id_number) != key:
            return None
        return record
