"""Who may see and do what with a case: the one table of roles and permissions (README, "Who sees what").

Personal data (the applicant's name; ID numbers are only ever shown masked) is seen in full only by
the people who need it to handle the case:

====================  =========================================================================
role                  sees the applicant's name
====================  =========================================================================
acceptor, approver    yes, for cases their node accepted, handles or handled; masked otherwise
admin                 as an acceptor (an administrator may accept at a window)
supervisor            yes, every case of the node (效能监督 reads complaints and red cards)
ops                   never: masked ("张**"), and a search by name finds nothing
figures (/metrics)    never: counts only
applicant (citizen)   their own case, through the query with their ID number
====================  =========================================================================

Withdrawing a case (撤回申请) is the applicant's decision: the applicant online, or staff (acceptor,
approver) *recording the applicant's signed written request*, whose reference must be given.
Evaluating (好差评, GB/T 39734 一事一评) is the applicant's: online, or at the window where the
acceptor records the applicant's own choice from the window's evaluator; once per case per channel,
and a window evaluation never replaces one the applicant gave online.

Accepting an application (受理) is the window's: acceptors, and administrators who may stand in.

Pure functions of the role and the case's facts: no Flask, no storage. The service layer enforces
them with the actor each command carries (:class:`node.service_layer.cases.CaseService`), so every
entry point — API, pages, worker, agent — gets the same rules; the web layer uses
:func:`sees_personal_data`, :func:`masked_name` and :func:`may_search_by_name` only to shape what
a page or an answer shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from node.domain.case import ACCEPTOR, ADMIN, APPROVER, CITIZEN, OPS, SUPERVISOR
from node.domain.errors import DomainError, ErrorKind

# Roles that handle cases: full personal data, but only for the cases of their node.
HANDLING_ROLES = frozenset({ACCEPTOR, APPROVER, ADMIN})
# Roles that see every case of their node in full.
OVERSIGHT_ROLES = frozenset({SUPERVISOR})
# Roles that only ever see masked personal data.
MASKED_ROLES = frozenset({OPS})
# Who may accept (受理) or refuse (不予受理) an application.
ACCEPTING_ROLES = frozenset({ACCEPTOR, ADMIN})
# Staff who may record a withdrawal the applicant signed.
WITHDRAW_RECORDING_ROLES = frozenset({ACCEPTOR, APPROVER})

ONLINE, WINDOW = "online", "window"
# Who may give an evaluation through which channel.
EVALUATION_CHANNELS = {CITIZEN: frozenset({ONLINE, WINDOW}), ACCEPTOR: frozenset({WINDOW})}
SIGNED_REQUEST_MAX = 60


@dataclass(frozen=True)
class CaseNodes:
    """The nodes a case has been at: where it was accepted and every node that handled it."""

    accepting: str
    handlers: frozenset[str]

    @classmethod
    def of(cls, accepting: str, handling: str, history: Iterable[str] = ()) -> CaseNodes:
        return cls(accepting, frozenset({handling, *history}))

    def __contains__(self, node: object) -> bool:
        return node == self.accepting or node in self.handlers


def sees_personal_data(role: str, here: str, case_nodes: CaseNodes) -> bool:
    """Whether staff of ``role`` signed in at node ``here`` may see this case's personal data unmasked."""
    if role in OVERSIGHT_ROLES:
        return True
    return role in HANDLING_ROLES and here in case_nodes


def may_search_by_name(role: str) -> bool:
    """Whether a case search may match applicants' names (a match would reveal who has a case)."""
    return role not in MASKED_ROLES


def masked_name(name: str) -> str:
    """The first character and two stars ("李秀英" → "李**"): the length of the name is not told either."""
    stripped = name.strip()
    return stripped[0] + "**" if stripped else ""


def check_withdrawal(role: str, signed_request: str | None) -> None:
    """The applicant withdraws; staff only record the applicant's signed request (its reference required)."""
    if role == CITIZEN:
        return
    if role not in WITHDRAW_RECORDING_ROLES:
        raise DomainError(
            "withdraw_not_allowed",
            "只有申请人或受理、审批人员（凭申请人签字的撤回申请）可以撤回",
            "only the applicant, or an acceptor or approver recording the applicant's signed request, may withdraw",
            ErrorKind.FORBIDDEN,
        )
    if not signed_request or not signed_request.strip():
        raise DomainError(
            "signed_request_required",
            "撤回须依据申请人签字的书面撤回申请，请填写其编号",
            "a withdrawal needs the applicant's signed written request: give its reference",
        )
    if len(signed_request) > SIGNED_REQUEST_MAX or any(ord(ch) < 0x20 for ch in signed_request):
        raise DomainError(
            "signed_request_invalid",
            f"书面撤回申请编号最多 {SIGNED_REQUEST_MAX} 个字符",
            f"the signed request's reference is at most {SIGNED_REQUEST_MAX} characters",
        )


def check_evaluation(role: str, channel: str, earlier_channels: Iterable[str]) -> None:
    """一事一评: the applicant's evaluation, once per case per channel; the window never replaces online."""
    allowed = EVALUATION_CHANNELS.get(role, frozenset())
    if channel not in allowed:
        raise DomainError(
            "evaluate_not_allowed",
            "评价由申请人作出：在线评价，或在窗口由受理人员记录申请人本人的选择",
            "the applicant evaluates: online, or at the window where the acceptor records the applicant's choice",
            ErrorKind.FORBIDDEN,
        )
    earlier = set(earlier_channels)
    if channel in earlier or (channel == WINDOW and ONLINE in earlier):
        raise DomainError(
            "already_evaluated",
            "该办件已评价，不能重复评价或更改申请人的评价",
            "this case has been evaluated; an evaluation is given once and never replaced",
            ErrorKind.CONFLICT,
        )


def check_acceptance(role: str) -> None:
    """Only the window (an acceptor, or an administrator standing in) accepts or refuses applications."""
    if role not in ACCEPTING_ROLES:
        raise DomainError(
            "role_not_allowed",
            "只有受理人员可以受理申请",
            "only an acceptor may accept applications",
            ErrorKind.FORBIDDEN,
        )
