"""一件事一次办 at a node: accept a package as parallel sub-cases, read it, answer its merged 补正, deliver once.

The rules are in :mod:`node.domain.packages`; every write is an ordinary case command (accept,
supplement, deliver, withdraw, record result) handed to the message bus, so a package's sub-cases
obey the same single-writer, signature and trust rules as any case, over the whole federation.
Everything a package command needs is checked before its first write: a package with a matter the
node cannot route, a supplement that does not answer every department, results not all decided —
each is refused whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from node.adapters.package_index import PackageIndex
from node.domain.case import ACCEPTOR, Case, CaseState
from node.domain.catalogue import Catalogue, location_field
from node.domain.errors import DomainError, ErrorKind
from node.domain.events import Event, EventType
from node.domain.hlc import Timestamp
from node.domain.jurisdiction import handling_node
from node.domain.messages import CaseChanged
from node.domain.packages import (
    PREVIEW_WORKING_DAYS,
    Package,
    PackageView,
    catalogue_packages,
    check_consolidation,
    check_delivery,
    check_supplement,
    read_package,
)
from node.service_layer.cases import CaseService
from node.service_layer.commands import AcceptCase, AcceptPackage, ActOnCase, Actor

log = logging.getLogger(__name__)
MAX_ANSWER_MATERIALS = 20
# The window files the withdrawal requests a stopped package needs: a request, which the holder acts on.
PACKAGE_WINDOW = Actor("system", ACCEPTOR, None)


def _not_found(package_no: object) -> DomainError:
    return DomainError(
        "package_not_found",
        f"本节点没有一件事办件 {str(package_no)[:80]!r}",
        f"no package case {str(package_no)[:80]!r} at this node",
        ErrorKind.NOT_FOUND,
    )


class PackageService:
    def __init__(self, cases: CaseService, handle: Callable[[Any], Any], index: PackageIndex) -> None:
        self.cases = cases
        self.handle = handle
        self.index = index
        self._cache: tuple[Catalogue, dict[str, Package]] | None = None

    # --- the catalogue's packages ----------------------------------------------------------------------

    def packages(self) -> dict[str, Package]:
        catalogue = self.cases.catalogue
        if self._cache is None or self._cache[0] is not catalogue:
            self._cache = (catalogue, catalogue_packages(catalogue))
        return self._cache[1]

    def package(self, code: object) -> Package:
        found = self.packages().get(code) if isinstance(code, str) else None
        if found is None:
            raise DomainError(
                "unknown_package",
                f"事项目录中没有编码为 {str(code)[:40]!r} 的一件事",
                f"no package {str(code)[:40]!r} in the catalogue",
                ErrorKind.NOT_FOUND,
            )
        return found

    def guide(self, package: Package) -> dict[str, Any]:
        catalogue = self.cases.catalogue
        return {
            **package.to_dict(),
            "fee_yuan": format(package.fee(catalogue).normalize(), "f"),
            "departments": package.departments(catalogue),
            "materials": [m.to_dict() for m in package.materials(catalogue)],
            "matter_names": {code: catalogue.get(code).name for code in package.matters},
        }

    # --- acceptance ------------------------------------------------------------------------------------

    def accept(self, command: AcceptPackage) -> dict[str, Any]:
        """One set of materials, one sub-case per matter, each routed by its own rule; or one merged notice."""
        package = self.package(command.package_code)
        catalogue, tree, here = self.cases.catalogue, self.cases.tree, self.cases.node
        locations = dict(command.locations)
        routes = {}
        for code in package.matters:  # every route first: a matter that cannot be routed refuses the whole
            matter = catalogue.get(code)
            location = locations.get(location_field(matter.jurisdiction_rule) or "")
            routes[code] = handling_node(matter, tree, here, location, catalogue)
        handed = set(command.materials)
        missing = [m for m in package.materials(catalogue) if m.required and m.code not in handed]
        if missing:
            return {
                "outcome": "incomplete",
                "missing": [m.to_dict() for m in missing],
                "notice": {
                    "title_zh": "材料补正一次性告知书（一件事）",
                    "title_en": "One-time notice of missing materials (package)",
                    "package_code": package.code,
                    "package_name": package.name,
                    "node": here,
                    "date": self.cases.today().isoformat(),
                    "missing": [{"code": m.code, "name": m.name, "copies": m.copies} for m in missing],
                },
            }
        today = self.cases.today()
        package_no = f"{here}-{today:%Y%m%d}-P{self.cases.state.next_case_serial(today)}"
        sub_cases = []
        for position, code in enumerate(package.matters):
            matter = catalogue.get(code)
            own = {m.code for m in matter.materials}
            materials = tuple(sorted((handed | set(package.produced)) & own))
            reference = {
                "no": package_no,
                "code": package.code,
                "position": position,
                "of": len(package.matters),
                "share_days": package.share_days(catalogue, code),
                "on_refusal": package.on_refusal,
                **({"joint": package.joint, "lead_department": package.lead_department} if package.joint else {}),
            }
            outcome = self.handle(
                AcceptCase(
                    command.actor,
                    code,
                    command.applicant,
                    materials,
                    tuple(locations.items()),
                    package=reference,
                )
            )
            self.index.add(package_no, outcome.case_no, package.code, position, today.isoformat())
            sub_cases.append({"case_no": outcome.case_no, "matter_code": code, "handling_node": routes[code]})
        return {"outcome": "accepted", "package_no": package_no, "package_code": package.code, "sub_cases": sub_cases}

    # --- reading ------------------------------------------------------------------------------------------

    def view(self, package_no: object) -> tuple[Package, PackageView]:
        if not isinstance(package_no, str) or len(package_no) > 80:
            raise _not_found(package_no)
        found = self.index.cases(package_no)
        if found is None:
            raise _not_found(package_no)
        code, numbers, accepted_on = found
        package = self.package(code)
        sub_cases = [self.cases.load(number) for number in numbers]
        calendar = self.cases.calendar
        preview_ends = calendar.add_working_days(date.fromisoformat(accepted_on), PREVIEW_WORKING_DAYS)
        view = read_package(
            package_no, code, sub_cases, self.cases.catalogue, package.on_refusal, self.cases.today(), preview_ends
        )
        return package, view

    def describe(self, package_no: object) -> dict[str, Any]:
        package, view = self.view(package_no)
        catalogue = self.cases.catalogue
        data = view.to_dict(catalogue)
        data.update(
            name=package.name,
            name_en=package.name_en,
            promised_days=package.promised_days,
            on_refusal=package.on_refusal,
            joint=package.joint,
            lead_department=package.lead_department,
            fee_yuan=format(package.fee(catalogue).normalize(), "f"),
            applicant=view.sub_cases[0].applicant.get("masked") if view.sub_cases else None,
            timeline=_merged_timeline(view.sub_cases),
            joint_session=next((c.joint_session for c in view.sub_cases if c.joint_session), None),
        )
        return data

    # --- one supplement, one delivery, one consolidated decision --------------------------------------------

    def supplement(self, package_no: object, actor: Actor, answers: object) -> dict[str, Any]:
        """补正 once for every department: ``answers`` maps each open sub-case to ``{materials, note}``."""
        _, view = self.view(package_no)
        if not isinstance(answers, Mapping) or not all(isinstance(k, str) for k in answers):
            raise DomainError("invalid_answers", "请逐项填写补正内容", "answers must map case numbers to supplements")
        check_supplement(view, answers.keys())
        commands = []
        for case_no, answer in answers.items():
            materials, note = _answer(answer)
            commands.append(ActOnCase(actor, case_no, "supplement", reason=note, materials=materials))
        for command in commands:
            self.handle(command)
        return self.describe(package_no)

    def deliver(self, package_no: object, actor: Actor, method: object) -> dict[str, Any]:
        _, view = self.view(package_no)
        if method not in ("window", "post", "electronic"):
            raise DomainError("invalid_method", "送达方式必须是 window、post 或 electronic", "bad delivery method")
        for case in check_delivery(view):
            self.handle(ActOnCase(actor, case.case_no, "deliver", method=str(method)))
        return self.describe(package_no)

    def _lead_case(self, package: Package, view: PackageView, package_no: object) -> Case:
        catalogue = self.cases.catalogue
        lead = next(
            (c for c in view.sub_cases if catalogue.get(c.matter_code).department == package.lead_department), None
        )
        if lead is None:
            raise _not_found(package_no)
        return lead

    def schedule_session(self, package_no: object, actor: Actor, session: object) -> dict[str, Any]:
        """多图联审 / 联合验收: the lead department sets one session for every department of the package."""
        package, view = self.view(package_no)
        if package.joint is None:
            raise DomainError("not_joint", "该一件事不是联审联验事项", "this package has no joint review")
        if actor.department != package.lead_department:
            raise DomainError(
                "not_lead_department",
                "只有牵头部门可以安排联合审查（验收）",
                "only the lead department schedules the joint session",
                ErrorKind.FORBIDDEN,
            )
        if not isinstance(session, Mapping):
            raise DomainError("invalid_session", "请填写联合审查安排", "give the joint session")
        invited = package.departments(self.cases.catalogue)
        wanted = session.get("departments") or invited
        if not isinstance(wanted, list) or not set(wanted) <= set(invited):
            raise DomainError(
                "department_not_in_package",
                "只能邀请本一件事涉及的部门参加",
                "only the package's departments take part in its joint session",
            )
        lead = self._lead_case(package, view, package_no)
        details = {**session, "departments": wanted}
        self.handle(ActOnCase(actor, lead.case_no, "schedule_joint_session", session=details))
        return self.describe(package_no)

    def consolidate(self, package_no: object, actor: Actor, decision: object) -> dict[str, Any]:
        """联合审查/验收意见: the lead department's one decision over every department's signed opinion."""
        package, view = self.view(package_no)
        catalogue = self.cases.catalogue
        lead = self._lead_case(package, view, package_no)
        check_consolidation(package, view, actor.department, lead)
        if not isinstance(decision, str) or not decision.strip() or len(decision) > 300:
            raise DomainError("decision_required", "请填写联合意见（300 字以内）", "give the consolidated decision")
        opinions = "；".join(
            f"{catalogue.department(catalogue.get(c.matter_code).department).name_zh}："
            f"{'同意' if c.decision == 'approved' else '不同意'}"
            for c in view.sub_cases
        )
        summary = f"{decision.strip()}（各部门意见：{opinions}）"[:500]
        self.handle(ActOnCase(actor, lead.case_no, "record_result", summary=summary))
        return self.describe(package_no)

    # --- reacting to sub-cases -----------------------------------------------------------------------------

    def take_in(self, message: CaseChanged) -> None:
        """Index a sub-case as it is projected; at the window, a refusal stops the rest where the rule says so."""
        first = next((e for e in message.events if e.type is EventType.ACCEPTED), None)
        reference = first.payload.get("package") if first is not None else None
        if first is None or not isinstance(reference, Mapping) or not _valid_reference(reference):
            return
        case = message.case
        self.index.add(reference["no"], case.case_no, reference["code"], reference["position"], _day_of(first))
        if (
            reference.get("on_refusal") == "stop"
            and case.decision == "rejected"
            and case.accepting_node == self.cases.node
        ):
            self._stop_siblings(reference["no"], case)

    def _stop_siblings(self, package_no: str, refused: Case) -> None:
        found = self.index.cases(package_no)
        if found is None:
            return
        for number in found[1]:
            if number == refused.case_no:
                continue
            sibling = self.cases.load(number)
            if sibling.state in (CaseState.ACCEPTED, CaseState.IN_REVIEW, CaseState.SUPPLEMENT_REQUESTED) and not (
                sibling.withdrawal_requested
            ):
                reason = f"一件事中 {refused.case_no} 被不予办理，按规则终止 / stopped: {refused.case_no} rejected"
                try:
                    # The applicant's signed package application carries the stop rule: it is the request.
                    request = f"一件事申请 {package_no}"
                    self.handle(ActOnCase(PACKAGE_WINDOW, number, "withdraw", reason=reason, signed_request=request))
                except DomainError as exc:  # the sibling moved on meanwhile: nothing to stop, never a crash
                    log.info("package %s: sibling %s not stopped (%s)", package_no, number, exc.code)


def _valid_reference(reference: Mapping[str, Any]) -> bool:
    return (
        isinstance(reference.get("no"), str)
        and 0 < len(reference["no"]) <= 80
        and isinstance(reference.get("code"), str)
        and len(reference["code"]) <= 40
        and isinstance(reference.get("position"), int)
        and 0 <= reference["position"] < 100
    )


def _day_of(event: Event) -> str:
    """The day the sub-case was accepted, by its writer's clock (bounded by the trust rules)."""
    try:
        return Timestamp.parse(event.hlc).to_datetime().date().isoformat()
    except DomainError:
        return date.today().isoformat()


def _answer(answer: object) -> tuple[tuple[str, ...], str | None]:
    if not isinstance(answer, Mapping):
        raise DomainError("invalid_answers", "补正内容应为对象", "each answer must be an object")
    materials = answer.get("materials") or []
    note = answer.get("note")
    if (
        not isinstance(materials, list)
        or len(materials) > MAX_ANSWER_MATERIALS
        or not all(isinstance(m, str) and 0 < len(m) <= 20 for m in materials)
    ):
        raise DomainError("invalid_answers", "补正材料应为材料编码列表", "materials must be a list of material codes")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        raise DomainError("invalid_answers", "补正说明不超过 500 字", "a note has at most 500 characters")
    if not materials and not note:
        raise DomainError("invalid_answers", "每项补正须提交材料或说明", "each answer needs materials or a note")
    return tuple(materials), note


def _merged_timeline(sub_cases: list[Case] | tuple[Case, ...]) -> list[dict[str, Any]]:
    entries = [{**entry, "case_no": case.case_no} for case in sub_cases for entry in case.timeline]
    return sorted(entries, key=lambda entry: str(entry.get("at")))
