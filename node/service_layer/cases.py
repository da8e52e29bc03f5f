"""Use cases of one node: accept a case, act on it, flag deadlines, show it to staff and to the applicant.

Each handler takes a command (:mod:`node.service_layer.commands`), validates everything first and
then writes its events in one request, so a rejected command writes nothing. Who may do what is
checked here, with the actor the command carries (:mod:`node.domain.permissions` and the state
machine's table), so every entry point — API, pages, worker, agent — gets the same rules. Events
are stamped with the node's clock, chained to the case's last event and signed with the node's key
before they are written; then the handler publishes :class:`~node.domain.messages.CaseWritten` and
the handlers the composition root registered (projection, wake-ups, notices) react.

Once the store has the events, the command has happened: a failure of what follows (the read
model, a wake-up) is logged and never reaches the caller as an error, which would invite a retry
and a second case. The agent's catch-up follows the store and brings the read model up to date.

Case numbers (``<node>-<YYYYMMDD>-<serial>``) come from a counter in the node's state file; the
store is the truth behind it. At the first number of a day in a process (so at every start) the
day's counter is moved past the highest serial this node's events in the store carry, and every new
number is checked against the store before use: after a restore of an old state file, numbers
continue where the store left off instead of colliding with issued ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from node.adapters.catalogue_doc import PublishedCatalogue
from node.adapters.eventstore import EventStore, EventVerifier
from node.adapters.nodestate import NodeState
from node.adapters.pii import PersonalData
from node.adapters.pki import NodeIdentity
from node.domain.case import (
    APPROVER,
    CITIZEN,
    Case,
    allowed_actions,
    check_command,
    event_type_for,
    fold,
)
from node.domain.catalogue import Catalogue, Matter, location_field, missing_materials
from node.domain.errors import DomainError, ErrorKind, missing_field
from node.domain.events import CATALOGUE_VERSION, ID_PREFIX, Event, EventType
from node.domain.hlc import HybridLogicalClock
from node.domain.identifiers import mask_id_number, validate_credit_code, validate_id_number
from node.domain.jurisdiction import handling_node, transfer_problem
from node.domain.messages import CaseWritten
from node.domain.permissions import ONLINE, WINDOW, check_acceptance, check_evaluation, check_withdrawal
from node.domain.workdays import WorkingDayCalendar, warning_level
from node.service_layer.commands import (
    SYSTEM_INTAKE,
    AcceptCase,
    ActOnCase,
    Actor,
    Applicant,
    FlagDeadline,
    SweepDeadlines,
)
from tiers import DivisionTree

CHINA = timezone(timedelta(hours=8))
log = logging.getLogger(__name__)
# New numbers tried against the store before giving up (each failed try first re-reads the store's highest).
NUMBER_TRIES = 5


def china_today() -> date:
    return datetime.now(CHINA).date()


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


@dataclass
class AcceptOutcome:
    outcome: str  # "accepted" | "incomplete" | "refused"
    case_no: str | None = None
    case: Case | None = None
    missing: list[dict[str, Any]] = field(default_factory=list)
    notice: dict[str, Any] | None = None


class CaseService:
    def __init__(
        self,
        node_code: str,
        tree: DivisionTree,
        catalogue: PublishedCatalogue,
        events: EventStore,
        verifier: EventVerifier,
        identity: NodeIdentity,
        state: NodeState,
        personal_data: PersonalData,
        calendar: WorkingDayCalendar,
        publish: Callable[[CaseWritten], None],
        today: Callable[[], date] = china_today,
    ) -> None:
        self.node = node_code
        self.tree = tree
        self.published = catalogue
        self.events = events
        self.verifier = verifier
        self.identity = identity
        self.state = state
        self.pii = personal_data
        self.calendar = calendar
        self.clock = HybridLogicalClock(node_code)
        self.publish = publish
        self.today = today
        # The day whose counter this process has checked against the store (None: not yet, e.g. at start).
        self._counter_checked: date | None = None
        self._counter_lock = threading.Lock()

    @property
    def catalogue(self) -> Catalogue:
        return self.published.current

    # --- writing ------------------------------------------------------------------------------------

    def _event(
        self, case_no: str, kind: EventType, actor: Actor, prev_hash: str | None, payload: dict[str, Any]
    ) -> Event:
        event = Event(
            case_no=case_no,
            type=kind,
            actor_id=actor.username,
            actor_role=actor.role,
            node=self.node,
            hlc=self.clock.tick().to_str(),
            prev_hash=prev_hash,
            payload=payload,
        )
        return event.with_signature(self.identity.sign(event.hash))

    def _write(self, written: list[Event], known: list[Event] | None = None) -> bool:
        """Append ``written``; then say so, with the whole case (``known`` + ``written``) for the read model.

        Returns whether everything after the write went well. A failure there is logged, not raised:
        the events are in the store, so the command has happened, and an error would make the caller
        retry it (a second case). The agent's catch-up projects what the handlers could not.
        """
        self.events.append(written)
        try:
            self.publish(CaseWritten(tuple(written), (*(known or ()), *written)))
        except Exception as exc:
            # The type only: a database error's text can quote the row it failed to write (personal data).
            case_no, kind = written[0].case_no, type(exc).__name__
            log.error("case %s written; a reaction failed (%s), the agent catches up", case_no, kind)
            return False
        return True

    # --- case numbers -------------------------------------------------------------------------------

    def highest_issued_serial(self, day: date) -> int:
        """The highest serial of ``day`` among this node's case numbers in the store (0 if none)."""
        prefix = f"{ID_PREFIX}{self.node}-{day:%Y%m%d}-"
        highest = 0
        for row in self.events.store.all_docs(prefix, prefix + "\ufff0", include_docs=False):
            serial = str(row.get("id", ""))[len(prefix) :].partition(":")[0]
            if serial.isdigit() and len(serial) <= 9:
                highest = max(highest, int(serial))
        return highest

    def recover_counter(self, day: date) -> int:
        """Move ``day``'s counter past every number of that day the store holds; returns the counter."""
        with self._counter_lock:
            value = self.state.raise_case_serial(day, self.highest_issued_serial(day))
            self._counter_checked = day
            return value

    def _new_case_no(self) -> str:
        today = self.today()
        if self._counter_checked != today:
            self.recover_counter(today)
        for _ in range(NUMBER_TRIES):
            case_no = f"{self.node}-{today:%Y%m%d}-{self.state.next_case_serial(today)}"
            if not self.events.case_docs(case_no):
                return case_no
            log.warning("case number %s is in the store already; moving the counter past the store's", case_no)
            self.recover_counter(today)
        raise DomainError(
            "case_number_unavailable",
            "暂时无法分配受理编号，请稍后重试",
            "no free case number could be issued just now; try again shortly",
            ErrorKind.CONFLICT,
        )

    # --- acceptance ---------------------------------------------------------------------------------

    def _applicant(self, given: Applicant) -> dict[str, Any]:
        if given.kind == "person":
            number = validate_id_number(given.identifier)
            masked, sealed = mask_id_number(number), {"name": given.name, "id_number": number}
        else:
            number = validate_credit_code(given.identifier)
            masked, sealed = number[:8] + "****" + number[-4:], {"name": given.name, "credit_code": number}
        return {
            "kind": given.kind,
            "key": self.pii.lookup_key(number),
            "key_id": self.pii.key_id,  # which city key made "key" and "sealed" (key rotation)
            "masked": masked,
            "sealed": self.pii.seal(sealed),
        }

    def accept(self, command: AcceptCase) -> AcceptOutcome:
        actor = command.actor
        check_acceptance(actor.role)
        # One version for the whole acceptance: the event names it, and every node checks the routing by it.
        catalogue = self.catalogue
        matter = catalogue.get(command.matter_code)
        applicant = self._applicant(command.applicant)
        materials = list(command.materials)
        location = command.location(location_field(matter.jurisdiction_rule))
        handling = handling_node(matter, self.tree, self.node, location, catalogue)
        matter = catalogue.effective_matter(matter, self.tree, location or self.node)
        missing = missing_materials(matter, materials)
        refuse_reason = command.refuse_reason

        if refuse_reason:
            case_no = self._new_case_no()
            event = self._event(
                case_no,
                EventType.REFUSED,
                actor,
                None,
                {"matter_code": matter.code, "applicant": applicant, "reason": refuse_reason, "materials": materials},
            )
            self._write([event])
            return AcceptOutcome("refused", case_no, fold([event]))
        if missing:
            return AcceptOutcome(
                "incomplete",
                missing=[{"code": m.code, "name": m.name, "form": m.form, "copies": m.copies} for m in missing],
                notice=self.incomplete_notice(matter, missing),
            )

        case_no = self._new_case_no()
        today = self.today()
        promised_days = matter.promised_days
        if command.package is not None and isinstance(command.package.get("share_days"), int):
            promised_days = min(promised_days, command.package["share_days"])  # the department's share
        deadline = self.calendar.add_working_days(today, promised_days)
        accepted = self._event(
            case_no,
            EventType.ACCEPTED,
            actor,
            None,
            {
                "matter_code": matter.code,
                "applicant": applicant,
                "materials": materials,
                "location_code": location,
                "accepting_node": self.node,
                "handling_node": handling,
                "deadline": deadline.isoformat(),
                "promised_days": promised_days,
                "handling_type": matter.handling_type,
                CATALOGUE_VERSION: catalogue.version,
                **({"package": dict(command.package)} if command.package is not None else {}),
            },
        )
        written = [accepted]
        if handling != self.node:
            written.append(self._event(case_no, EventType.ROUTED, actor, accepted.hash, {"handling_node": handling}))
        elif matter.is_immediate and command.settle_on_spot:
            written.append(
                self._event(
                    case_no, EventType.SETTLED, actor, accepted.hash, {"method": "window", "summary": "即办件当场办结"}
                )
            )
        else:
            written.append(self._event(case_no, EventType.RECEIVED, actor, accepted.hash, {}))
        self._write(written)
        return AcceptOutcome("accepted", case_no, fold(written))

    def incomplete_notice(self, matter: Matter, missing: list[Any]) -> dict[str, Any]:
        """一次性告知: everything missing, at once, in a form that can be printed and handed over."""
        department = self.catalogue.department(matter.department)
        return {
            "title_zh": "材料补正一次性告知书",
            "title_en": "One-time notice of missing materials",
            "matter_code": matter.code,
            "matter_name": matter.name,
            "department": department.name_zh,
            "node": self.node,
            "node_name": self.tree.get(self.node).name,
            "date": self.today().isoformat(),
            "missing": [{"code": m.code, "name": m.name, "form": m.form, "copies": m.copies} for m in missing],
        }

    # --- reading ------------------------------------------------------------------------------------

    def load(self, case_no: str) -> Case:
        return fold(self._events(case_no))

    def applicant_fields(self, case: Case) -> dict[str, Any] | None:
        """The case's sealed applicant opened with the city's keyring, or None if no key opens it."""
        sealed = case.applicant.get("sealed")
        return self.pii.open(sealed) if isinstance(sealed, str) else None

    def applicant_name(self, case: Case) -> str:
        opened = self.applicant_fields(case)
        return str(opened.get("name")) if opened else "（无法解密）"

    def matter_department(self, case: Case) -> str | None:
        return self.catalogue.get(case.matter_code).department if case.matter_code in self.catalogue else None

    def staff_view(self, actor: Actor, case: Case) -> dict[str, Any]:
        department = self.matter_department(case)
        view = self.public_view(case)
        view["applicant"] = {
            "kind": case.applicant.get("kind"),
            "name": self.applicant_name(case),
            # Events written before the shorter mask keep 10 characters of the number: shown masked again.
            "masked": mask_id_number(str(case.applicant.get("masked") or ""))
            if case.applicant.get("kind") == "person"
            else case.applicant.get("masked"),
        }
        view["timeline"] = [
            {k: entry.get(k) for k in ("type", "node", "actor_id", "actor_role", "at", "summary_zh", "summary_en")}
            | {"actor": entry.get("actor_id")}
            for entry in case.timeline
        ]
        view["handlers_history"] = case.handlers_history
        view["anomalies"] = len(case.anomalies)
        view["allowed_actions"] = sorted(allowed_actions(case, actor.role, department, actor.department, self.node))
        view["materials"] = case.materials
        view["department"] = department
        view["reason"] = case.reason
        view["evaluation"] = case.evaluation
        view["withdrawal_requested"] = case.withdrawal_requested
        return view

    def public_view(self, case: Case) -> dict[str, Any]:
        """What the applicant may see: no staff identities, no personal data beyond what they gave."""
        matter = self.catalogue.get(case.matter_code) if case.matter_code in self.catalogue else None
        return {
            "case_no": case.case_no,
            "matter_code": case.matter_code,
            "matter_name": matter.name if matter else case.matter_code,
            "state": case.state.value,
            "state_zh": case.state.label_zh,
            "state_en": case.state.label_en,
            "accepting_node": case.accepting_node,
            "accepting_node_name": self.tree.get(case.accepting_node).name if case.accepting_node in self.tree else "",
            "handling_node": case.handling_node,
            "handling_node_name": self.tree.get(case.handling_node).name if case.handling_node in self.tree else "",
            "deadline": case.deadline.isoformat() if case.deadline else None,
            "paused": case.paused,
            "flag": (case.flags or {}).get("level"),
            "result": {k: v for k, v in (case.result or {}).items() if k in ("summary", "certificate_id", "at")}
            or None,
            "delivery": {k: v for k, v in (case.delivery or {}).items() if k in ("method", "at")} or None,
            "timeline": [
                {
                    "type": entry["type"],
                    "node": entry["node"],
                    "node_name": self.tree.get(entry["node"]).name if entry["node"] in self.tree else "",
                    "at": entry["at"],
                    "summary_zh": entry.get("summary_zh"),
                    "summary_en": entry.get("summary_en"),
                }
                for entry in case.timeline
            ],
        }

    def citizen_progress(self, case_no: str, identifier: str) -> dict[str, Any]:
        """Progress for the applicant: the case number plus their ID number or credit code must match."""
        not_found = DomainError(
            "case_not_found",
            "未找到与该身份证件号码匹配的案件，请核对受理编号和证件号码",
            "no case matches this case number and ID number; check both",
            ErrorKind.NOT_FOUND,
        )
        if not isinstance(identifier, str) or not identifier.strip():
            raise _invalid("missing_field", "请输入身份证号码或统一社会信用代码", "enter the ID number or credit code")
        try:
            case = self.load(case_no)
        except DomainError:
            raise not_found from None
        if not self.pii.matches(identifier, case.applicant.get("key"), case.applicant.get("key_id")):
            raise not_found
        return self.public_view(case)

    # --- actions ------------------------------------------------------------------------------------

    def _events(self, case_no: str) -> list[Event]:
        if not isinstance(case_no, str) or not case_no or len(case_no) > 80:
            raise DomainError("case_not_found", "案件不存在", "no such case", ErrorKind.NOT_FOUND)
        events = self.verifier.verified_case(case_no).events
        if not events:
            raise DomainError(
                "case_not_found", f"本节点没有案件 {case_no}", f"this node holds no case {case_no}", ErrorKind.NOT_FOUND
            )
        return events

    def _apply_permissions(self, case: Case, command: ActOnCase) -> ActOnCase:
        """The permission table's rules for withdrawal and evaluation (node.domain.permissions).

        A staff withdrawal must name the applicant's signed request, which goes into the event's
        reason; an evaluation is the applicant's (online, or recorded at the window), once per case
        per channel, and a window evaluation never replaces the applicant's own online one.
        """
        role = command.actor.role
        if command.action == "withdraw":
            reference = command.signed_request
            check_withdrawal(role, reference)
            if role == CITIZEN:
                return command
            note = f"申请人书面撤回申请 {str(reference).strip()}"
            return replace(command, reason=f"{command.reason}（{note}）" if command.reason else note)
        if command.action == "evaluate":
            earlier = {
                ONLINE if entry.get("actor_role") == CITIZEN else WINDOW
                for entry in case.timeline
                if entry.get("type") == "evaluated"
            }
            check_evaluation(role, ONLINE if role == CITIZEN else WINDOW, earlier)
        return command

    def act(self, command: ActOnCase) -> Case:
        actor, case_no, action = command.actor, command.case_no, command.action
        events = self._events(case_no)
        case = fold(events)
        command = self._apply_permissions(case, command)
        department = self.matter_department(case)
        self.clock.observe(case.last_hlc)
        written: list[Event] = []
        # An approver's first action on a case that has just arrived implies taking it in (签收).
        if (
            action not in ("receive", "transfer", "withdraw", "evaluate")
            and actor.role == APPROVER
            and case.state.value == "accepted"
            and case.handling_node == self.node
        ):
            check_command(case, "receive", actor.role, actor.department, department, self.node)
            written.append(self._event(case_no, EventType.RECEIVED, actor, case.last_event_hash, {}))
            case = fold([*events, *written])
        check_command(case, action, actor.role, actor.department, department, self.node)
        kind = event_type_for(case, action, self.node)
        payload = self._action_payload(case, events, kind, command)
        written.append(self._event(case_no, kind, actor, case.last_event_hash, payload))
        self._write(written, events)
        return fold([*events, *written])

    def _action_payload(self, case: Case, events: list[Event], kind: EventType, command: ActOnCase) -> dict[str, Any]:
        reason = command.reason
        if kind in (EventType.REJECTED, EventType.SUPPLEMENT_REQUESTED):
            if not reason:
                raise _invalid("reason_required", "此操作必须填写理由", "this action needs a reason")
            return (
                {"reason": reason, "paused_on": self.today().isoformat()}
                if kind is EventType.SUPPLEMENT_REQUESTED
                else {"reason": reason}
            )
        if kind is EventType.SUPPLEMENT_PROVIDED:
            request = next(e for e in reversed(events) if e.type is EventType.SUPPLEMENT_REQUESTED)
            paused_on = date.fromisoformat(request.payload.get("paused_on") or self.today().isoformat())
            deadline = case.deadline or self.today()
            new_deadline = self.calendar.remaining_after_pause(deadline, paused_on, self.today())
            return {
                "deadline": new_deadline.isoformat(),
                "materials": list(command.materials or ()),
                **({"note": reason} if reason else {}),
            }
        if kind is EventType.RESULT_RECORDED:
            if not command.summary:
                raise missing_field("summary")
            summary, certificate_id = command.summary, command.certificate_id
            return {"summary": summary, **({"certificate_id": certificate_id} if certificate_id else {})}
        if kind is EventType.DELIVERED:
            method = command.method or "window"
            if method not in ("window", "post", "electronic"):
                raise _invalid(
                    "invalid_method",
                    "送达方式必须是 window、post 或 electronic",
                    "method must be window, post or electronic",
                )
            return {"method": method}
        if kind is EventType.TRANSFERRED:
            target = command.new_handling_node
            if not target:
                raise missing_field("new_handling_node")
            if target not in self.tree:
                raise _invalid("unknown_division", f"未知的办理节点 {target}", f"unknown handling node {target}")
            if target == case.handling_node:
                raise DomainError(
                    "same_handler", "转办目标与当前办理节点相同", "already handled there", ErrorKind.CONFLICT
                )
            if not reason:
                raise _invalid("reason_required", "转办必须填写理由", "a transfer needs a reason")
            # The target must handle the matter under the catalogue version the event names (checked again
            # by every node that verifies it).
            catalogue = self.catalogue
            problem = transfer_problem(case.matter_code, target, self.tree, catalogue)
            if problem:
                raise _invalid(
                    "transfer_not_allowed",
                    f"{target} 不办理事项 {case.matter_code}（事项目录第 {catalogue.version} 版），不能转办到该节点",
                    f"cannot transfer there: {problem}",
                )
            return {"new_handling_node": target, "reason": reason, CATALOGUE_VERSION: catalogue.version}
        if kind is EventType.EVALUATED:
            level = command.level
            if level not in (1, 2, 3, 4, 5):
                raise _invalid("invalid_level", "评价等级必须是 1 到 5", "evaluation level must be 1..5")
            return {"level": level, **({"comment": reason} if reason else {})}
        if kind in (EventType.WITHDRAWAL_REQUESTED, EventType.WITHDRAWN):
            return {"reason": reason} if reason else {}
        if kind is EventType.JOINT_SESSION_SCHEDULED:
            return _joint_session(command.session, self.today())
        if kind is EventType.APPROVED and reason:
            return {"conditions": reason}  # 附条件同意: an approval with conditions (a joint review's opinion)
        return {}

    def system_receive(self, case: Case, events: list[Event]) -> None:
        """Take in a case that has just arrived for this node, so its timeline shows when it did."""
        if case.handling_node != self.node or case.state.value != "accepted":
            return
        self.clock.observe(case.last_hlc)
        received = self._event(case.case_no, EventType.RECEIVED, SYSTEM_INTAKE, case.last_event_hash, {"auto": True})
        self._write([received], events)

    # --- deadlines ----------------------------------------------------------------------------------

    def sweep_deadlines(self, command: SweepDeadlines) -> int:
        """Flag every listed case whose deadline level rose; returns how many were flagged."""
        return sum(1 for case_no in command.case_numbers if self.flag_deadline(FlagDeadline(case_no, command.on)))

    def flag_deadline(self, command: FlagDeadline) -> str | None:
        """Append a 预警/黄牌/红牌 flag when the case's level rose; returns the new level if one was written."""
        case_no, on = command.case_no, command.on
        events = self._events(case_no)
        case = fold(events)
        if case.deadline is None or case.paused or case.handling_node != self.node or case.state.terminal:
            return None
        level = warning_level(case.deadline, on, self.calendar)
        current = (case.flags or {}).get("level")
        order = [None, "warning", "yellow", "red"]
        if level is None or order.index(level) <= order.index(current):
            return None
        self.clock.observe(case.last_hlc)
        payload = {"level": level, "on": on.isoformat()}
        flagged = self._event(case_no, EventType.DEADLINE_FLAGGED, command.actor, case.last_event_hash, payload)
        self._write([flagged], events)
        return level


def _joint_session(session: Any, today: date) -> dict[str, Any]:
    """The lead department's joint session: a day from today on, on site or online, the departments asked."""
    if not isinstance(session, dict):
        raise missing_field("session")
    try:
        day = date.fromisoformat(str(session.get("date")))
    except ValueError:
        raise _invalid(
            "invalid_session_date", "会议日期格式应为 YYYY-MM-DD", "the session date must be YYYY-MM-DD"
        ) from None
    if day < today:
        raise _invalid("session_in_past", "联合审查日期不能早于今天", "the joint session cannot be in the past")
    mode, place = session.get("mode"), session.get("place")
    departments = session.get("departments")
    if mode not in ("onsite", "online") or not isinstance(place, str) or not 0 < len(place.strip()) <= 100:
        raise _invalid(
            "invalid_session", "请填写会议方式（现场/线上）和地点", "give the mode (onsite/online) and the place"
        )
    if (
        not isinstance(departments, list)
        or not 1 <= len(departments) <= 20
        or not all(isinstance(d, str) and 0 < len(d) <= 40 for d in departments)
    ):
        raise _invalid("invalid_session", "请列出参加的部门", "list the departments taking part")
    return {"date": day.isoformat(), "mode": mode, "place": place.strip(), "departments": sorted(set(departments))}
