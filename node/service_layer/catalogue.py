"""Publishing a new catalogue version: only at the tier that authors it (the city), only by an admin."""

from __future__ import annotations

from typing import Any

from node.adapters.catalogue_doc import PublishedCatalogue
from node.domain.case import ADMIN
from node.domain.catalogue import Catalogue
from node.domain.errors import DomainError, ErrorKind
from tiers import Capability, Tier, capabilities


def publish_catalogue(role: str, tier: Tier, published: PublishedCatalogue, body: Any) -> Catalogue:
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
    if not isinstance(body, dict):
        raise DomainError("invalid_json", "请求体必须是 JSON 对象", "the request body must be a JSON object")
    catalogue = Catalogue.from_dict(body)
    published.publish(catalogue)
    return catalogue
