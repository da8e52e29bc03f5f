"""Jurisdiction: which node handles a case of a matter for an applicant (ARCHITECTURE §4).

The *jurisdiction location* of a case is the applicant's registered residence, the property's
location or the business's registration place (any tier's division code), or — for the
``nearest`` rule — the accepting node itself. The *handling node* is the ancestor-or-self of that
location at the matter's authority tier, after any implementation-list delegation that applies
at the location. Pure: the catalogue and the division tree come in as arguments.
"""

from __future__ import annotations

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
