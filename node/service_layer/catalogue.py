"""Publishing a new catalogue version: only at the tier that authors it (the city), only by an admin.

The handlers of :class:`PublishCatalogue`, :class:`PublishMatter` and :class:`PublishDelegation`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.adapters.catalogue_doc import PublishedCatalogue
from node.domain.case import ADMIN
from node.domain.catalogue import Catalogue, Matter
from node.domain.errors import DomainError, ErrorKind
from node.domain.packages import catalogue_packages
from node.service_layer.commands import PublishCatalogue, PublishDelegation, PublishMatter
from tiers import Capability, DivisionTree, Tier, capabilities


def may_author(role: str, tier: Tier) -> bool:
    try:
        _check_author(role, tier)
    except DomainError:
        return False
    return True


def _check_author(role: str, tier: Tier) -> None:
    if Capability.CATALOGUE_AUTHORING not in capabilities(tier):
        raise DomainError(
            "catalogue_read_only",
            "事项目录由市级编制，本节点只读",
            "the catalogue is authored at the city; it is read-only at this node",
            ErrorKind.FORBIDDEN,
        )
    if role != ADMIN:
        raise DomainError(
            "role_not_allowed",
            "只有管理员可以发布事项目录",
            "only an admin may publish the catalogue",
            ErrorKind.FORBIDDEN,
        )


def _current_for_edit(published: PublishedCatalogue, based_on: int) -> Catalogue:
    """The newest catalogue, provided the editor started from it (else someone published meanwhile)."""
    current = published.latest()
    if based_on != current.version:
        raise DomainError(
            "catalogue_changed",
            f"编辑期间目录已更新为第 {current.version} 版，请重新打开后再修改",
            f"the catalogue was updated to version {current.version} while you edited; reopen it and edit again",
            ErrorKind.CONFLICT,
        )
    return current


class CatalogueService:
    """Catalogue publication at one node: its tier decides whether it may author at all."""

    def __init__(self, published: PublishedCatalogue, tree: DivisionTree, tier: Tier) -> None:
        self.published = published
        self.tree = tree
        self.tier = tier

    def _publish(self, role: str, document: Mapping[str, Any]) -> Catalogue:
        _check_author(role, self.tier)
        catalogue = Catalogue.from_dict(document)
        catalogue_packages(catalogue)  # a package naming a matter the catalogue lacks is refused
        self.published.publish(catalogue)
        return catalogue

    def publish(self, command: PublishCatalogue) -> Catalogue:
        return self._publish(command.actor.role, command.document)

    def publish_matter(self, command: PublishMatter) -> Catalogue:
        role, matter, is_new = command.actor.role, command.matter, command.is_new
        _check_author(role, self.tier)
        current = _current_for_edit(self.published, command.based_on)
        code = matter.get("code")
        if is_new and code in current:
            raise DomainError(
                "matter_exists",
                f"事项编码 {code} 已存在",
                f"a matter with code {code} exists already",
                ErrorKind.CONFLICT,
            )
        previous: Matter | None = None if is_new else current.get(str(code))  # raises for an unknown code
        changed = {**matter, "version": previous.version + 1 if previous else 1}
        if previous is not None and "fee_due" not in matter:  # issue 15: the edit form does not show it yet
            changed["fee_due"] = previous.fee_due
        data = current.to_dict()
        if is_new:
            data["matters"].append(changed)
        else:
            data["matters"] = [changed if m["code"] == code else m for m in data["matters"]]
        data["version"] = current.version + 1
        return self._publish(role, data)

    def publish_delegation(self, command: PublishDelegation) -> Catalogue:
        """The catalogue checks that authority only moves down and promised days only shrink."""
        role, line, region = command.actor.role, command.line, command.region
        _check_author(role, self.tier)
        current = _current_for_edit(self.published, command.based_on)
        if region not in self.tree:
            raise DomainError(
                "unknown_division", f"没有区划代码为 {region!r} 的区域", f"no division with code {region!r}"
            )
        code = current.get(str(line.get("matter_code"))).code  # raises for an unknown code
        if not command.remove and line.get("authority_tier") is None and line.get("promised_days") is None:
            raise DomainError(
                "empty_delegation",
                "请至少指定下放到的层级或缩短后的承诺时限",
                "give the tier the matter is delegated to, or a shorter promised time, or both",
            )
        data = current.to_dict()
        lines = [kept for kept in data["implementation"].get(region, []) if kept["matter_code"] != code]
        if not command.remove:
            lines.append({key: value for key, value in line.items() if value is not None})
        data["implementation"] = {**data["implementation"], region: lines}
        data["version"] = current.version + 1
        return self._publish(role, data)
