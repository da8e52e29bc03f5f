"""Register records across links (issue 12): to the residence's subtree, from their authors only.

A register document (:mod:`node.adapters.register_docs`) names the residence in its id, so a parent
routes it from the id alone: to every child whose subtree holds the residence, and no other. What a
link takes: from a parent, a record authored by the city or by the county of the residence and signed
by its author (the signature itself is checked against the author's certificate when a node reads the
record); from a child, only a record its own subtree authored (a county sending its residents' records
up to the city). Records are never deleted — a status changes instead.
"""

from __future__ import annotations

import re
from typing import Any

from node.adapters.register_docs import MAX_SEALED_CHARS, PREFIX, authorised_author, parse_register_id
from tiers import DivisionTree

__all__ = ["is_register", "register_problem", "register_visible"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_register(doc_id: object) -> bool:
    return isinstance(doc_id, str) and doc_id.startswith(PREFIX)


def register_visible(doc_id: str, child: str, tree: DivisionTree) -> bool:
    """Whether ``child``'s subtree holds the residence the record belongs to."""
    parsed = parse_register_id(doc_id)
    if parsed is None or child not in tree:
        return False
    residence = parsed[1]
    return residence in tree and tree.is_in_subtree(residence, child)


def register_problem(doc: dict[str, Any], peer: str, tree: DivisionTree, from_child: bool) -> str | None:
    """Why a register document may not cross this link (English), or None."""
    parsed = parse_register_id(doc.get("_id"))
    if parsed is None:
        return "a register document with a malformed id"
    if doc.get("_deleted"):
        return "deletion of a register record (its status changes instead)"
    kind, residence, key = parsed
    if doc.get("doc_type") != "register" or doc.get("kind") != kind:
        return "a register document of another type than its id says"
    if doc.get("residence_code") != residence or doc.get("key") != key:
        return "a register document whose residence or key differs from its id"
    sealed = doc.get("sealed")
    if not isinstance(sealed, str) or not 0 < len(sealed) <= MAX_SEALED_CHARS:
        return "a register document without a bounded sealed record"
    author = doc.get("author")
    if not authorised_author(author, residence, tree):
        return f"{str(author)[:20]!r} may not author a record of a resident of {residence}"
    signature = doc.get("signature")
    if (
        not isinstance(signature, dict)
        or signature.get("signer") != author
        or not _HEX64.match(str(signature.get("cert_sha256")))
    ):
        return "a register record unsigned, or signed by another node than its author"
    if from_child and not tree.is_in_subtree(str(author), peer):
        return f"a register record authored by {author}, outside {peer}'s subtree"
    return None
