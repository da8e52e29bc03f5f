"""The permission table holds whichever door a command comes through: here, the bus itself (issue 11).

Before, withdrawal and evaluation rules were checked in the web layer only: a command built by the
worker, the agent or a future entry point went through unchecked.
"""

from __future__ import annotations

import pytest

from node.bootstrap import NodeContext
from node.domain.errors import DomainError
from node.service_layer.commands import AcceptCase, ActOnCase, Actor, Applicant
from tests.test_api_cases import DIBAO, DIBAO_MATERIALS, RESIDENT
from tiers.demo import HESHAN_VILLAGE

ACCEPTOR = Actor("acceptor", "acceptor", None)
APPROVER = Actor("approver", "approver", "civil_affairs")
OPS = Actor("ops", "ops", None)


def accept(node: NodeContext, actor: Actor = ACCEPTOR) -> str:
    outcome = node.bus.handle(
        AcceptCase(
            actor,
            DIBAO,
            Applicant("person", "李秀英", RESIDENT),
            tuple(DIBAO_MATERIALS),
            (("residence_code", HESHAN_VILLAGE),),
        )
    )
    return str(outcome.case_no)


def refused(node: NodeContext, command: object) -> str:
    with pytest.raises(DomainError) as error:
        node.bus.handle(command)
    return error.value.code


def test_the_bus_applies_the_permission_table(county_node: NodeContext) -> None:
    assert refused(county_node, AcceptCase(OPS, DIBAO, Applicant("person", "李", RESIDENT))) == "role_not_allowed"
    case_no = accept(county_node)

    assert refused(county_node, ActOnCase(ACCEPTOR, case_no, "withdraw")) == "signed_request_required"
    assert refused(county_node, ActOnCase(OPS, case_no, "withdraw", signed_request="CH-1")) == "withdraw_not_allowed"
    assert county_node.cases.load(case_no).state.value == "in_review"
    withdrawn = county_node.bus.handle(ActOnCase(ACCEPTOR, case_no, "withdraw", signed_request="CH-2026-7"))
    assert withdrawn.state.value == "withdrawn" and "CH-2026-7" in str(withdrawn.reason)

    other = accept(county_node)
    county_node.bus.handle(ActOnCase(APPROVER, other, "approve"))
    county_node.bus.handle(ActOnCase(ACCEPTOR, other, "deliver", method="window"))
    assert refused(county_node, ActOnCase(APPROVER, other, "evaluate", level=5)) == "evaluate_not_allowed"
    county_node.bus.handle(ActOnCase(ACCEPTOR, other, "evaluate", level=1))
    assert refused(county_node, ActOnCase(ACCEPTOR, other, "evaluate", level=5)) == "already_evaluated"
    assert county_node.cases.load(other).evaluation["level"] == 1  # type: ignore[index]
