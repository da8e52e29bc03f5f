"""What a node does when something happened to a case: the message handlers the bus runs.

Each takes the message and the ports it needs; :mod:`node.bootstrap` decides which of them run in
which kind of process.
"""

from __future__ import annotations

from node.adapters.mqtt import MqttLink, notice_topic
from node.adapters.readmodel import Projector
from node.domain.messages import CaseChanged, CaseWritten
from node.service_layer.cases import CaseService
from node.service_layer.packages import PackageService
from node.service_layer.ratings import RatingService


def project(message: CaseWritten, projector: Projector) -> None:
    """Show what this node just wrote in its read model, from the events in hand (no store read)."""
    projector.project_events(list(message.history), from_write=True)


def post_notice(message: CaseChanged, link: MqttLink | None, node: str) -> None:
    """Tell the node's open staff pages that a case changed (a hint: the pages poll as well)."""
    if link is None:
        return
    case = message.case
    link.signal(
        notice_topic(node), {"case_no": case.case_no, "state": case.state.value, "handling_node": case.handling_node}
    )


def post_notice_of_own_write(message: CaseChanged, link: MqttLink | None, node: str) -> None:
    """The web process tells the pages of its own writes only; the agent tells them of the rest."""
    if message.from_write:
        post_notice(message, link, node)


def take_in(message: CaseChanged, cases: CaseService) -> None:
    """A case that has just arrived for this node is taken in (签收) at once, so its timeline shows when."""
    cases.system_receive(message.case, list(message.events))


def take_evaluations(message: CaseChanged, ratings: RatingService) -> None:
    """At the handling node, a poor evaluation of the case opens a rectification ticket (谁办理谁负责)."""
    ratings.take_case_evaluations(message.case, message.events)
def take_in_package(message: CaseChanged, packages: PackageService) -> None:
    """A sub-case of a 一件事 package is indexed; at the window a refusal may stop its siblings."""
    packages.take_in(message)
