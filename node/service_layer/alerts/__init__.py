"""City operations' alert rules, one module each, and the use cases that run them.

A rule module names its ``KIND`` and has two functions: ``holds(situation)`` — the nodes in that
trouble right now — and ``says(situation, node)`` — the detail an alert carries (the figures that made
it fire). :data:`RULES` in :mod:`.registry` is the one list of them; a new alert is a new module there.
:func:`evaluate_alerts` opens an alert for a new (kind, node) pair, keeps it open (its detail refreshed)
while the pair is still named, and closes it when it is not; :func:`announce` publishes openings and
closings on MQTT.
"""

from node.service_layer.alerts.evaluate import AlertChanges, alert_json, announce, conditions, evaluate_alerts
from node.service_layer.alerts.registry import ALERT_KINDS, RULES
from node.service_layer.alerts.situation import Rule, Situation

__all__ = [
    "ALERT_KINDS",
    "RULES",
    "AlertChanges",
    "Rule",
    "Situation",
    "alert_json",
    "announce",
    "conditions",
    "evaluate_alerts",
]
