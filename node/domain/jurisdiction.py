"""Jurisdiction: which node handles a case of a matter for an applicant (ARCHITECTURE §4).

The *jurisdiction location* of a case is the applicant's registered residence, the property's
location or the business's registration place (any tier's division code), or — for the
``nearest`` rule — the accepting node itself. The *handling node* is the ancestor-or-self of that
location at the matter's authority tier, after any implementation-list delegation that applies
at the location. Pure: the catalogue and the division tree come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.domain.catalogue import Catalogue, ImplementationList, Matter, known_division, location_field, tier_name
from node.domain.errors import DomainError, ErrorKind
from tiers.tree import DivisionTree

_LOCATION_LABELS_ZH = {
    "residence": "户籍（居住）地",
    "property": "不动产所在地",
    "business_registration": "登记注册地",
}
_LOCATION_LABELS_EN = {
    "residence": "registered residence",
    "property": "property location",
    "business_registration": "place of business registration",
}


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def jurisdiction_location(matter: Matter, tree: DivisionTree, accepting_node: str, location_code: str | None) -> str:
    """The division whose jurisdiction the case falls under: the given location, or the accepting node (nearest)."""
    known_division(tree, accepting_node, "accepting_node")
    field_name = location_field(matter.jurisdiction_rule)
    if field_name is None:
        return accepting_node
    if location_code is None or location_code == "":
        rule = matter.jurisdiction_rule
        raise _invalid(
            "location_required",
            f"事项「{matter.name}」按{_LOCATION_LABELS_ZH[rule]}确定管辖，请填写 {field_name}（区划代码）",
            f"matter {matter.code} is handled by {_LOCATION_LABELS_EN[rule]}: "
            f"{field_name} (a division code) is required",
        )
    return known_division(tree, location_code, field_name)


def handling_node(
    matter: Matter,
    tree: DivisionTree,
    accepting_node: str,
    location_code: str | None = None,
    implementation: ImplementationList | Catalogue | None = None,
) -> str:
    """The node holding authority for a case of ``matter`` accepted at ``accepting_node``.

    The handling node is the ancestor-or-self of the jurisdiction location at the matter's
    authority tier, after any implementation-list delegation that applies at that location.
    Raises ``DomainError`` with code ``location_required`` (the rule needs a location),
    ``unknown_division`` or ``location_too_coarse`` (the location lies above the authority tier).
    """
    if isinstance(implementation, Catalogue):
        implementation = implementation.implementation
    location = jurisdiction_location(matter, tree, accepting_node, location_code)
    effective = implementation.effective(matter, tree, location) if implementation else matter
    tier = effective.authority_tier
    location_tier = tree.tier(location)
    if location_tier < tier:
        division = tree.get(location)
        field_name = location_field(matter.jurisdiction_rule)
        if field_name is None:
            raise _invalid(
                "location_too_coarse",
                f"事项「{matter.name}」由{tier.label_zh}级办理、按就近原则确定管辖，"
                f"须在{tier.label_zh}级或以下的节点受理；{location}（{division.name}）是{location_tier.label_zh}级",
                f"matter {matter.code} is handled at {tier_name(tier)} level by the nearest office: accept it at a "
                f"{tier_name(tier)}-level node or below, not at {location} ({tier_name(location_tier)})",
            )
        raise _invalid(
            "location_too_coarse",
            f"事项「{matter.name}」由{tier.label_zh}级办理，{field_name} 须精确到{tier.label_zh}或以下；"
            f"{location}（{division.name}）只到{location_tier.label_zh}级",
            f"matter {matter.code} is handled at {tier_name(tier)} level: {field_name} must name a "
            f"{tier_name(tier)}-level division or below, but {location} is a {tier_name(location_tier)}",
        )
    for code in tree.path_to_root(location):
        if tree.tier(code) == tier:
            return code
    raise AssertionError(f"{location} has no ancestor at tier {tier_name(tier)}")  # the tree guarantees one


# --- checking what another node routed ----------------------------------------------------------------


def may_handle(matter: Matter, tree: DivisionTree, node: str, catalogue: Catalogue) -> bool:
    """Whether ``node`` is a node at which ``matter`` is handled under ``catalogue``: a transfer target.

    A node handles a matter when it sits at the matter's authority tier as it applies at the node's own
    division (after the implementation lists on its path from the city), so a case may be transferred
    to a sibling that handles the same matter, never up or down to a tier that does not.
    """
    if node not in tree:
        return False
    return tree.tier(node) == catalogue.effective_matter(matter, tree, node).authority_tier


def accepted_routing_problem(
    payload: Mapping[str, Any], accepting_node: str, tree: DivisionTree, catalogue: Catalogue
) -> str | None:
    """Why an ``accepted`` event's ``handling_node`` is not what ``catalogue`` routes it to (None: it agrees)."""
    code = payload.get("matter_code")
    if code not in catalogue:
        return f"matter {str(code)[:40]!r} is not in catalogue version {catalogue.version}"
    location = payload.get("location_code")
    if location is not None and not isinstance(location, str):
        return "payload.location_code is not a division code"
    try:
        expected = handling_node(catalogue.get(code), tree, accepting_node, location, catalogue)
    except DomainError as exc:
        return f"catalogue version {catalogue.version} routes no case here ({exc.message_en[:160]})"
    if payload.get("handling_node") != expected:
        return (
            f"handling_node {str(payload.get('handling_node'))[:20]} is not {expected}, "
            f"where catalogue version {catalogue.version} routes matter {code}"
        )
    return None


def transfer_problem(matter_code: str, target: object, tree: DivisionTree, catalogue: Catalogue) -> str | None:
    """Why a transfer of a case of ``matter_code`` to ``target`` is not allowed under ``catalogue`` (None: allowed)."""
    if matter_code not in catalogue:
        return f"matter {str(matter_code)[:40]!r} is not in catalogue version {catalogue.version}"
    if not isinstance(target, str) or target not in tree:
        return f"transfer target {str(target)[:20]!r} is not a node"
    if not may_handle(catalogue.get(matter_code), tree, target, catalogue):
        return f"{target} does not handle matter {matter_code} under catalogue version {catalogue.version}"
    return None
