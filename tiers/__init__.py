"""The division tree of the city and the default roles of each tier."""

from tiers.roles import Capability, capabilities
from tiers.tree import Division, DivisionTree, Tier, UnknownDivisionError, infer_tier, yiyang

__all__ = [
    "Capability",
    "Division",
    "DivisionTree",
    "Tier",
    "UnknownDivisionError",
    "capabilities",
    "infer_tier",
    "yiyang",
]
