"""Routing scopes: which nodes must hold a document, and what a parent may send down to a child.

An event's scope is its case's scope (the accepting node, every handling node, the tree paths
between them, up to the city). Certificates, the catalogue with every kept version
(``catalogue:v<N>``) and the revocation list (``crl``) go everywhere; heartbeats and any
other document travel up only. What a node may write across a link is :mod:`sync.authority`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from node.domain.case import fold, scope
from node.domain.errors import DomainError
from node.domain.events import Event, EventType, parse_event_doc_id
from tiers import DivisionTree

Doc = dict[str, Any]
EVERYWHERE_PREFIXES = ("cert:", "catalogue:v")
EVERYWHERE_IDS = frozenset({"catalogue", "crl"})


def case_of(doc_id: str) -> str | None:
    try:
        return parse_event_doc_id(doc_id)[0]
    except DomainError:
        return None


def goes_everywhere(doc_id: str) -> bool:
    return doc_id in EVERYWHERE_IDS or doc_id.startswith(EVERYWHERE_PREFIXES)


def case_scope(case_docs: Iterable[Doc], tree: DivisionTree) -> frozenset[str]:
    """The scope of a case from whatever of its event documents are here (unverified: routing only).

    Documents that do not parse are ignored; a case whose first event has not arrived yet has an
    empty scope and is sent nowhere until it does.
    """
    events = []
    for doc in case_docs:
        if doc.get("_deleted"):
            continue
        try:
            events.append(Event.from_doc(doc))
        except DomainError:
            continue
    if not events:
        return frozenset()
    try:
        return scope(fold(events), tree)
    except DomainError:
        return frozenset()


def touches_subtree(members: frozenset[str], subtree_root: str, tree: DivisionTree) -> bool:
    return any(tree.is_in_subtree(code, subtree_root) for code in members if code in tree)


def widens_scope(doc: Doc) -> bool:
    """A transfer adds a handler: the new branch must get the case's whole history, not just this event."""
    return doc.get("type") == EventType.TRANSFERRED.value
