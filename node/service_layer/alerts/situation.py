"""What every alert rule looks at (one :class:`Situation`, read once per evaluation) and the shape of a rule."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.adapters.opsmodel import OpsModel, OpsSnapshot
from node.config import Thresholds
from node.service_layer.ops import LinkHealth, NodeHealth, link_health, node_health
from tiers import DivisionTree


@dataclass
class Situation:
    now: float
    thresholds: Thresholds
    snapshot: OpsSnapshot
    nodes: list[NodeHealth]
    links: dict[str, LinkHealth]  # by child
    quarantine: dict[str, list[dict[str, Any]]]  # unacknowledged reports by the node that quarantined
    own_code: str | None = None  # the evaluating node (the city) and whether its own store answered
    own_store_ok: bool | None = None
    # Refused MQTT reports not yet acknowledged, by the node they claimed to come from.
    rejections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    by_code: dict[str, NodeHealth] = field(init=False)

    def __post_init__(self) -> None:
        self.by_code = {node.code: node for node in self.nodes}

    @classmethod
    def read(
        cls,
        ops: OpsModel,
        tree: DivisionTree,
        now: float,
        thresholds: Thresholds,
        own_code: str | None = None,
        own_store_ok: bool | None = None,
    ) -> Situation:
        snapshot = ops.snapshot()
        nodes = node_health(snapshot, tree, now, thresholds)
        links = {link.child: link for link in link_health(snapshot, nodes, now, thresholds)}
        quarantine = ops.unacknowledged_quarantine()
        rejections = ops.unacknowledged_rejections()
        return cls(now, thresholds, snapshot, nodes, links, quarantine, own_code, own_store_ok, rejections)


class Rule(Protocol):
    """An alert rule module: its kind, when it holds (for which nodes) and what it says about one."""

    KIND: str

    def holds(self, situation: Situation) -> Iterable[str]: ...

    def says(self, situation: Situation, node: str) -> dict[str, Any]: ...
