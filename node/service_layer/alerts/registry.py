"""The one list of alert rules: evaluation runs them in this order."""

from __future__ import annotations

from node.service_layer.alerts import (
    checkpoint_stuck,
    incomplete_cases,
    link_lag,
    node_offline,
    quarantine,
    store_unreachable,
)
from node.service_layer.alerts.situation import Rule

RULES: tuple[Rule, ...] = (node_offline, link_lag, checkpoint_stuck, quarantine, store_unreachable, incomplete_cases)
ALERT_KINDS = tuple(rule.KIND for rule in RULES)
