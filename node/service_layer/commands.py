"""Commands: what a person or a timer asks a node to do, as small frozen values.

The entrypoints build them (:mod:`node.entrypoints.web.commands` from a request's JSON or a page's
form; the worker and the agent directly); the message bus hands each to its handler in
:class:`node.service_layer.cases.CaseService`. A command has been checked for shape (types, lengths,
required fields); what needs the catalogue, the tree or the case — an ID number's check digit, the
handling node, whether the action is allowed now — is checked by the handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from node.adapters.nodestate import Account
from node.domain.case import APPROVER, SUPERVISOR

ApplicantKind = Literal["person", "enterprise"]
MAX_REASON = 500  # characters of a reason, a summary or a note


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in staff account, or the node itself (``system``) for timers and intake."""

    username: str
    role: str
    department: str | None

    @classmethod
    def of(cls, account: Account) -> Actor:
        return cls(account.username, account.role, account.department)


SYSTEM_INTAKE = Actor("system", APPROVER, None)
SYSTEM_SUPERVISION = Actor("system", SUPERVISOR, None)


@dataclass(frozen=True)
class Applicant:
    """The applicant as given: a person with an ID number or an enterprise with a credit code."""

    kind: ApplicantKind
    name: str
    identifier: str  # the ID number or the unified social credit code, not validated yet


@dataclass(frozen=True)
class AcceptCase:
    """Accept (受理), refuse (不予受理, with ``refuse_reason``) or, materials missing, get the one-time notice."""

    actor: Actor
    matter_code: str
    applicant: Applicant
    materials: tuple[str, ...] = ()
    # Jurisdiction locations by request field (``residence_code`` …); the matter's rule picks the one it needs.
    locations: tuple[tuple[str, str], ...] = ()
    settle_on_spot: bool = False
    refuse_reason: str | None = None
    # A sub-case of a 一件事 package: the package reference its first event carries (node.domain.packages).
    package: Mapping[str, Any] | None = None

    def location(self, field_name: str | None) -> str | None:
        return dict(self.locations).get(field_name) if field_name else None


@dataclass(frozen=True)
class ActOnCase:
    """One action on a case; the fields an action does not use are ignored."""

    actor: Actor
    case_no: str
    action: str
    reason: str | None = None
    materials: tuple[str, ...] | None = None
    summary: str | None = None
    certificate_id: str | None = None
    method: str | None = None
    new_handling_node: str | None = None
    level: int | None = None
    # The joint session of a 联合审查/验收 (date, mode, place, departments), checked by the handler.
    session: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FlagDeadline:
    """Raise 预警/黄牌/红牌 on one case when its deadline level rose by ``on``."""

    case_no: str
    on: date
    actor: Actor = field(default=SYSTEM_SUPERVISION)


@dataclass(frozen=True)
class SweepDeadlines:
    """:class:`FlagDeadline` for each listed case."""

    case_numbers: tuple[str, ...]
    on: date


@dataclass(frozen=True)
class PublishCatalogue:
    """Publish a whole catalogue document as the next version (the API's ``PUT /catalog``)."""

    actor: Actor
    document: Mapping[str, Any]


@dataclass(frozen=True)
class PublishMatter:
    """Publish the next catalogue version with one matter changed, or added (``is_new``).

    ``based_on`` is the version the editor started from: a change made on an older one is refused.
    """

    actor: Actor
    matter: Mapping[str, Any]  # the matter's fields as a catalogue document holds them
    based_on: int
    is_new: bool


@dataclass(frozen=True)
class PublishDelegation:
    """Set (or ``remove``) one region's line of the implementation list (实施清单) for one matter."""

    actor: Actor
    region: str
    line: Mapping[str, Any]  # {"matter_code", "authority_tier"?, "promised_days"?}
    based_on: int
    remove: bool = False


@dataclass(frozen=True)
class AcceptPackage:
    """Accept a 一件事 package: one set of materials, one sub-case per matter (node.service_layer.packages)."""

    actor: Actor
    package_code: str
    applicant: Applicant
    materials: tuple[str, ...] = ()
    locations: tuple[tuple[str, str], ...] = ()


Command = (
    AcceptPackage
    | AcceptCase
    | ActOnCase
    | FlagDeadline
    | SweepDeadlines
    | PublishCatalogue
    | PublishMatter
    | PublishDelegation
)
