"""一件事一次办: packages of matters handled together, and how a package reads from its sub-cases.

A :class:`Package` is authored at the city with the catalogue (``packages`` in the catalogue
document): the matters it combines (any departments, any tiers), one promised deadline, what happens
when one department refuses (``on_refusal``), and for joint reviews and inspections (多图联审,
联合验收) the lead department that issues the consolidated decision.

Accepting a package creates one **sub-case per matter**, each an ordinary case routed by its own
jurisdiction rule; every sub-case's first event names the package (``package`` in its payload:
number, code, lead department, each department's share of the deadline). The package itself is
never stored: :func:`read_package` folds it from its sub-cases, the way a case folds from its
events, so every node holding the sub-cases reads the same package.

What this module decides (pure):
- the merged material list (each material asked once, required if any matter requires it, the
  largest number of copies), the combined fee and each department's share of the promise;
- the package's state: in progress, waiting for one merged supplement, stopped by a refusal,
  decided (all sub-cases decided), delivered;
- the merged 补正 notice (一次性告知 across departments): the requests of every department at once,
  ready when every department has reviewed (asked or decided) or the pre-review window has passed;
- that a supplement answers every open request (:func:`check_supplement`), that the results go out
  together, and that a joint review's consolidated decision comes once, after every opinion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from node.domain.case import Case, CaseState
from node.domain.catalogue import Catalogue, Material
from node.domain.errors import DomainError, ErrorKind

MAX_MATTERS = 12
PREVIEW_WORKING_DAYS = 2  # departments raise their 补正 requests within this window (一次性告知)
ON_REFUSAL = ("continue", "stop")
JOINT_KINDS = ("review", "inspection")  # 多图联审 / 联合验收
_DECIDED = frozenset({CaseState.APPROVED, CaseState.REJECTED, CaseState.DELIVERED})
_OVER = frozenset({CaseState.REFUSED, CaseState.WITHDRAWN})
_WITH_REASON = frozenset({CaseState.REJECTED, CaseState.SUPPLEMENT_REQUESTED})


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def _conflict(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.CONFLICT)


@dataclass(frozen=True)
class Package:
    code: str
    name: str
    name_en: str
    matters: tuple[str, ...]
    promised_days: int
    on_refusal: str = "continue"  # "stop": one department's refusal stops the others
    joint: str | None = None  # "review" (多图联审 / 多评合一) or "inspection" (联合验收)
    lead_department: str | None = None  # issues the consolidated decision of a joint package
    # Materials one of the package's own matters produces (the deed-tax receipt for the registration):
    # the applicant does not bring them; the department gets them from the other sub-case.
    produced: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "name": self.name,
            "name_en": self.name_en,
            "matters": list(self.matters),
            "promised_days": self.promised_days,
            "on_refusal": self.on_refusal,
        }
        if self.produced:
            data["produced"] = list(self.produced)
        if self.joint:
            data["joint"] = self.joint
            data["lead_department"] = self.lead_department
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], catalogue: Catalogue) -> Package:
        """A package of ``catalogue``, validated: every matter known, departments of a joint package too."""
        if not isinstance(data, Mapping):
            raise _invalid("invalid_package", "一件事套餐应为对象", "a package must be an object")
        code, name, name_en = data.get("code"), data.get("name"), data.get("name_en")
        if not all(isinstance(v, str) and 0 < len(v) <= 80 for v in (code, name, name_en)):
            raise _invalid("invalid_package", "一件事须有编码和中英文名称", "a package needs a code and zh/en names")
        assert isinstance(code, str) and isinstance(name, str) and isinstance(name_en, str)
        matters = data.get("matters")
        if not isinstance(matters, list) or not 2 <= len(matters) <= MAX_MATTERS or len(set(matters)) != len(matters):
            raise _invalid(
                "invalid_package",
                f"{code}：须包含 2–{MAX_MATTERS} 个不重复的事项",
                f"{code}: a package combines 2..{MAX_MATTERS} distinct matters",
            )
        for matter_code in matters:
            catalogue.get(matter_code)  # unknown matter: the catalogue's own bilingual error
        days = data.get("promised_days")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
            raise _invalid("invalid_package", f"{code}：承诺时限应为 1–365 个工作日", f"{code}: promised_days 1..365")
        on_refusal = data.get("on_refusal", "continue")
        joint, lead = data.get("joint"), data.get("lead_department")
        if on_refusal not in ON_REFUSAL or (joint is not None and joint not in JOINT_KINDS):
            raise _invalid("invalid_package", f"{code}：拒绝规则或联审类型无效", f"{code}: bad on_refusal or joint")
        if joint is not None:
            departments = {catalogue.get(m).department for m in matters}
            if lead not in departments:
                raise _invalid(
                    "invalid_package",
                    f"{code}：牵头部门须是套餐中某一事项的部门",
                    f"{code}: the lead department must handle one of the package's matters",
                )
        produced = data.get("produced", [])
        if not isinstance(produced, list) or not all(isinstance(m, str) and len(m) <= 20 for m in produced):
            raise _invalid("invalid_package", f"{code}：produced 应为材料编码列表", f"{code}: bad produced list")
        return cls(
            code, name, name_en, tuple(matters), days, on_refusal, joint, lead if joint else None, tuple(produced)
        )

    # --- what the window tells the applicant --------------------------------------------------------------

    def materials(self, catalogue: Catalogue) -> list[Material]:
        """进一扇门、交一套材料: every material once, required if any matter needs it, the most copies asked."""
        merged: dict[str, Material] = {}
        for matter_code in self.matters:
            for material in catalogue.get(matter_code).materials:
                if material.code in self.produced:
                    continue
                have = merged.get(material.code)
                if have is None:
                    merged[material.code] = material
                else:
                    merged[material.code] = Material(
                        code=have.code,
                        name=have.name,
                        form=have.form,
                        copies=max(have.copies, material.copies),
                        source=have.source,
                        required=have.required or material.required,
                    )
        return list(merged.values())

    def fee(self, catalogue: Catalogue) -> Decimal:
        """一次性缴费: the fees of all matters, paid once."""
        return sum((catalogue.get(m).fee_yuan for m in self.matters), Decimal(0))

    def share_days(self, catalogue: Catalogue, matter_code: str) -> int:
        """The working days one department has: its own promise, never more than the package's.

        Sub-cases run at the same time, so each department may use the whole package promise but
        not more than its matter's own promise; a 预警/黄牌/红牌 then falls on the late department.
        """
        own = catalogue.get(matter_code).promised_days
        return min(own, self.promised_days) if own > 0 else 0

    def departments(self, catalogue: Catalogue) -> list[str]:
        return sorted({catalogue.get(m).department for m in self.matters})


def catalogue_packages(catalogue: Catalogue) -> dict[str, Package]:
    """The packages ``catalogue`` carries, validated against its matters (read from what it holds, no copy)."""
    return packages_from({"packages": list(catalogue.package_data)}, catalogue)


def packages_from(document: Mapping[str, Any], catalogue: Catalogue) -> dict[str, Package]:
    """The packages of a catalogue document (``packages``: a list), validated against its matters."""
    listed = document.get("packages") or []
    if not isinstance(listed, list):
        raise _invalid("invalid_package", "packages 应为列表", "packages must be a list")
    packages: dict[str, Package] = {}
    for data in listed:
        package = Package.from_dict(data, catalogue)
        if package.code in packages:
            raise _invalid("invalid_package", f"一件事编码 {package.code} 重复", f"duplicate package {package.code}")
        packages[package.code] = package
    return packages


# --- the package as its sub-cases make it ---------------------------------------------------------------------


class PackageState(StrEnum):
    IN_PROGRESS = "in_progress"
    SUPPLEMENT_REQUESTED = "supplement_requested"  # one merged notice to the applicant
    STOPPED = "stopped"  # a department refused and the package's rule stops the rest
    DECIDED = "decided"  # every sub-case decided: results go out together
    DELIVERED = "delivered"

    @property
    def label_zh(self) -> str:
        return {
            "in_progress": "并联办理中",
            "supplement_requested": "待补正（一次性告知）",
            "stopped": "已终止",
            "decided": "全部办结，待统一送达",
            "delivered": "已统一送达",
        }[self.value]

    @property
    def label_en(self) -> str:
        return {
            "in_progress": "in parallel review",
            "supplement_requested": "awaiting one supplement",
            "stopped": "stopped",
            "decided": "all decided, results to go out together",
            "delivered": "delivered together",
        }[self.value]


@dataclass(frozen=True)
class SupplementRequest:
    case_no: str
    matter_code: str
    department: str
    reason: str


@dataclass(frozen=True)
class PackageView:
    package_no: str
    code: str
    state: PackageState
    sub_cases: tuple[Case, ...]
    requests: tuple[SupplementRequest, ...]  # open 补正 requests, every department's
    notice_ready: bool  # the merged notice may go to the applicant now
    refused_by: tuple[str, ...]  # case numbers of rejected sub-cases

    def to_dict(self, catalogue: Catalogue) -> dict[str, Any]:
        return {
            "package_no": self.package_no,
            "code": self.code,
            "state": self.state.value,
            "state_zh": self.state.label_zh,
            "state_en": self.state.label_en,
            "notice_ready": self.notice_ready,
            "supplement_requests": [
                {"case_no": r.case_no, "matter_code": r.matter_code, "department": r.department, "reason": r.reason}
                for r in self.requests
            ],
            "refused": list(self.refused_by),
            "sub_cases": [
                {
                    "case_no": case.case_no,
                    "matter_code": case.matter_code,
                    "matter_name": catalogue.get(case.matter_code).name if case.matter_code in catalogue else "",
                    "department": catalogue.get(case.matter_code).department if case.matter_code in catalogue else "",
                    "handling_node": case.handling_node,
                    "state": case.state.value,
                    "state_zh": case.state.label_zh,
                    "decision": case.decision,
                    "reason": case.reason if case.state in _WITH_REASON else None,
                    "deadline": case.deadline.isoformat() if case.deadline else None,
                    "flag": (case.flags or {}).get("level"),
                    "decided_at": _decided_at(case),
                }
                for case in self.sub_cases
            ],
        }


def _decided_at(case: Case) -> str | None:
    for entry in reversed(case.timeline):
        if entry.get("type") in ("approved", "rejected"):
            return str(entry.get("at"))
    return None


def package_of(case: Case, first_payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The package reference a sub-case's first event carries, if it is part of one (bounded)."""
    ref = first_payload.get("package")
    if not isinstance(ref, Mapping) or not isinstance(ref.get("no"), str) or len(ref["no"]) > 80:
        return None
    return ref


def read_package(
    package_no: str,
    code: str,
    sub_cases: Sequence[Case],
    catalogue: Catalogue,
    on_refusal: str,
    today: date,
    preview_ends: date,
) -> PackageView:
    """The package as its sub-cases make it now (``preview_ends``: the last day of the pre-review window)."""
    requests = tuple(
        SupplementRequest(
            case.case_no,
            case.matter_code,
            catalogue.get(case.matter_code).department if case.matter_code in catalogue else "",
            case.reason or "",
        )
        for case in sub_cases
        if case.state is CaseState.SUPPLEMENT_REQUESTED
    )
    refused = tuple(c.case_no for c in sub_cases if c.decision == "rejected")
    live = [c for c in sub_cases if c.state not in _OVER]
    reviewed = all(c.state in _DECIDED or c.state is CaseState.SUPPLEMENT_REQUESTED for c in live)
    if refused and on_refusal == "stop":
        state = PackageState.STOPPED
    elif live and all(c.state is CaseState.DELIVERED for c in live):
        state = PackageState.DELIVERED
    elif live and all(c.state in _DECIDED for c in live):
        state = PackageState.DECIDED
    elif requests:
        state = PackageState.SUPPLEMENT_REQUESTED
    else:
        state = PackageState.IN_PROGRESS
    notice_ready = bool(requests) and (reviewed or today > preview_ends)
    return PackageView(package_no, code, state, tuple(sub_cases), requests, notice_ready, refused)


def check_supplement(view: PackageView, answered: Iterable[str]) -> None:
    """A supplement must answer every department's open request at once (one trip, 一次性补正)."""
    if view.state is not PackageState.SUPPLEMENT_REQUESTED:
        raise _conflict(
            "no_open_supplement", "该一件事当前没有待补正的事项", "this package has no open supplement request"
        )
    open_cases = {r.case_no for r in view.requests}
    given = set(answered)
    unknown = given - open_cases
    if unknown:
        raise _invalid(
            "supplement_not_requested",
            f"以下办件没有补正要求：{'、'.join(sorted(unknown))}",
            f"no supplement was requested for: {', '.join(sorted(unknown))}",
        )
    missing = open_cases - given
    if missing:
        names = sorted(r.department for r in view.requests if r.case_no in missing)
        raise _invalid(
            "supplement_incomplete",
            f"补正须一次答复全部部门的要求，尚未答复：{'、'.join(names)}",
            f"a supplement answers every department's request at once; not yet answered: {', '.join(names)}",
        )


def check_delivery(view: PackageView) -> list[Case]:
    """领一次证: the results go out together, once every sub-case is decided; the sub-cases to deliver."""
    if view.state not in (PackageState.DECIDED, PackageState.STOPPED):
        raise _conflict(
            "package_not_decided",
            "一件事中还有部门未作出决定，办结后统一送达",
            "some departments have not decided yet; the results go out together once all have",
        )
    return [c for c in view.sub_cases if c.state in (CaseState.APPROVED, CaseState.REJECTED)]


def check_consolidation(package: Package, view: PackageView, department: str | None, lead_case: Case) -> None:
    """The lead department's consolidated decision of a joint review: once, after every opinion."""
    if package.joint is None:
        raise _invalid("not_joint", "该一件事不是联审联验事项", "this package has no joint review")
    if department != package.lead_department:
        raise DomainError(
            "not_lead_department",
            "只有牵头部门可以出具联合审查（验收）意见",
            "only the lead department issues the consolidated decision",
            ErrorKind.FORBIDDEN,
        )
    if lead_case.result is not None:
        raise _conflict(
            "already_consolidated",
            "联合意见已经出具，不能再修改",
            "the consolidated decision has been issued; it cannot be changed",
        )
    if view.state not in (PackageState.DECIDED, PackageState.STOPPED):
        raise _conflict(
            "opinions_pending",
            "还有部门尚未提出意见，全部部门意见提出后才能出具联合意见",
            "some departments have not given their opinion yet",
        )
