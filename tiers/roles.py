"""What each tier may do by default (ARCHITECTURE §2); a region's implementation list may delegate more."""

from __future__ import annotations

from enum import StrEnum

from tiers.tree import Tier


class Capability(StrEnum):
    ACCEPT = "accept"
    PREREVIEW = "prereview"
    DELIVER = "deliver"
    KIOSK = "kiosk"
    APPROVE_DELEGATED = "approve_delegated"
    BACK_OFFICE = "back_office"
    CITY_MATTERS = "city_matters"
    CATALOGUE_AUTHORING = "catalogue_authoring"
    CERTIFICATE_AUTHORITY = "certificate_authority"
    OPS_MONITORING = "ops_monitoring"


_VILLAGE = frozenset({Capability.ACCEPT, Capability.PREREVIEW, Capability.DELIVER, Capability.KIOSK})
_TOWNSHIP = _VILLAGE | {Capability.APPROVE_DELEGATED}
_COUNTY = _TOWNSHIP | {Capability.BACK_OFFICE}
_CITY = _COUNTY | {
    Capability.CITY_MATTERS,
    Capability.CATALOGUE_AUTHORING,
    Capability.CERTIFICATE_AUTHORITY,
    Capability.OPS_MONITORING,
}

DEFAULT_CAPABILITIES: dict[Tier, frozenset[Capability]] = {
    Tier.VILLAGE: _VILLAGE,
    Tier.TOWNSHIP: frozenset(_TOWNSHIP),
    Tier.COUNTY: frozenset(_COUNTY),
    Tier.CITY: frozenset(_CITY),
}


def capabilities(tier: Tier) -> frozenset[Capability]:
    return DEFAULT_CAPABILITIES[tier]
