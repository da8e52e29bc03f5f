"""Appointments and queue numbers at a node: which plan applies, booking within a share, numbers, calls.

The rules are in :mod:`node.domain.appointments` and the storage in
:mod:`node.adapters.appointments_store`; this service puts them together for the entry points. A
person is known by the look-up key of their ID number (never the number). Times are China local
time as naive datetimes, as the domain module expects.

Which node decides a place (docs/appointments.md): the window's own node for its share of each slot,
the city for the places a plan lends it. A node booking for a window elsewhere confirms within its
lent share, or files a request the window's node decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from node.adapters.appointments_store import AppointmentStore
from node.domain.appointments import (
    Appointment,
    Ticket,
    TicketStatus,
    WorkingPlan,
    booking_share,
    check_arrival,
    check_booking,
    parse_day,
    parse_start,
    queue_view,
    slots,
)
from node.domain.errors import DomainError, ErrorKind
from node.domain.identifiers import validate_id_number
from node.domain.workdays import WorkingDayCalendar
from tiers import DivisionTree, UnknownDivisionError

CHINA = ZoneInfo("Asia/Shanghai")
APPOINTMENTS_DB = "appointments.sqlite3"
OWN_PLAN_FILE = "working-plan.json"
CITY_PLACEHOLDER = "@city"


def china_now() -> datetime:
    """Now as the windows' wall clock shows it (China Standard Time, naive)."""
    return datetime.now(CHINA).replace(tzinfo=None, microsecond=0)


def _default_plans() -> dict[str, Any]:
    return json.loads(resources.files("node").joinpath("data/working_plans.json").read_text(encoding="utf-8"))


class WorkingPlans:
    """The working plan of any node of the tree: its own file where it has one, else its tier's default."""

    def __init__(self, tree: DivisionTree, own_code: str, own_plan: Path | None = None) -> None:
        self.tree = tree
        self.own_code = own_code
        self._defaults = _default_plans()
        self._own: WorkingPlan | None = None
        if own_plan is not None and own_plan.exists():
            self._own = WorkingPlan.from_dict({**json.loads(own_plan.read_text(encoding="utf-8")), "node": own_code})

    def for_node(self, code: object) -> WorkingPlan:
        if not isinstance(code, str) or len(code) > 20:
            raise _unknown_node(code)
        try:
            division = self.tree.get(code)
        except UnknownDivisionError:
            raise _unknown_node(code) from None
        if code == self.own_code and self._own is not None:
            return self._own
        template = self._defaults[division.tier.key]
        return WorkingPlan.from_dict({**_with_city(template, self.tree.root), "node": code})


def _with_city(template: Mapping[str, Any], city: str) -> dict[str, Any]:
    groups = []
    for group in template["groups"]:
        lent = {(city if node == CITY_PLACEHOLDER else node): places for node, places in group.get("lent", {}).items()}
        groups.append({**group, "lent": lent})
    return {key: value for key, value in template.items() if not key.startswith("_")} | {"groups": groups}


def _unknown_node(code: object) -> DomainError:
    return DomainError(
        "unknown_node",
        f"没有编码为 {str(code)[:20]!r} 的服务网点",
        f"there is no service point with code {str(code)[:20]!r}",
        ErrorKind.NOT_FOUND,
    )


def _within_reach(tree: DivisionTree, here: str, node: str) -> bool:
    """A node books for its own windows and those below it; the city for every window."""
    code: str | None = node
    while code is not None:
        if code == here:
            return True
        code = tree.parent(code)
    return False


class AppointmentService:
    """Slots, bookings, cancellations, numbers and calls at one node."""

    def __init__(
        self,
        here: str,
        tree: DivisionTree,
        plans: WorkingPlans,
        calendar: WorkingDayCalendar,
        store: AppointmentStore,
        lookup_key: Callable[[str], str],
        clock: Callable[[], datetime] = china_now,
    ) -> None:
        self.here = here
        self.tree = tree
        self.plans = plans
        self.calendar = calendar
        self.store = store
        self.lookup_key = lookup_key
        self.clock = clock

    def _person(self, id_number: object) -> str:
        if not isinstance(id_number, str):
            raise DomainError("invalid_id_number", "请填写身份证件号码", "give the ID number")
        return self.lookup_key(validate_id_number(id_number.strip().upper()))

    def _reachable_plan(self, node: object) -> WorkingPlan:
        plan = self.plans.for_node(node)
        if not _within_reach(self.tree, self.here, plan.node):
            raise DomainError(
                "node_out_of_reach",
                "本网点不能为该服务网点办理预约，请到市级网上大厅或该网点的上级预约",
                "this node cannot book for that service point; book at the city's portal or a node above it",
                ErrorKind.FORBIDDEN,
            )
        return plan

    def slots(self, node: object, day: object, matter_code: object = None) -> dict[str, Any]:
        plan = self._reachable_plan(node)
        wanted = parse_day(day)
        if matter_code is not None and (not isinstance(matter_code, str) or not 0 < len(matter_code) <= 64):
            raise DomainError("invalid_matter_code", "事项编码无效", "invalid matter code")
        taken = self.store.taken(plan.node, wanted)
        return {
            "node": plan.node,
            "date": wanted.isoformat(),
            "slots": slots(plan, self.calendar, wanted, self.clock(), taken, matter_code),
        }

    def book(self, node: object, matter_code: object, start: object, id_number: object) -> Appointment:
        """Confirm within this node's share of the slot, or file a request for the window's node."""
        plan = self._reachable_plan(node)
        if not isinstance(matter_code, str) or not 0 < len(matter_code) <= 64:
            raise DomainError("invalid_matter_code", "请选择要办理的事项", "choose the matter")
        applicant = self._person(id_number)
        now = self.clock()
        slot = check_booking(plan, self.calendar, matter_code, parse_start(start), now)
        share = booking_share(plan, slot, self.here)
        if share > 0:
            return self.store.book(slot, matter_code, applicant, self.here, share, now)
        return self.store.request(slot, matter_code, applicant, self.here, now)

    def get(self, appointment_id: object, id_number: object) -> Appointment:
        appointment = self.store.get(_appointment_id(appointment_id))
        if appointment.applicant_key != self._person(id_number):
            raise _no_such_appointment()
        return appointment

    def cancel(self, appointment_id: object, id_number: object) -> Appointment:
        appointment = self.store.get(_appointment_id(appointment_id))
        plan = self.plans.for_node(appointment.node)
        return self.store.cancel(appointment.appointment_id, self._person(id_number), self.clock(), plan)

    def decide_requests(self) -> list[Appointment]:
        """At the window's node: decide the booking requests other nodes filed, in arrival order."""
        plan = self.plans.for_node(self.here)
        now = self.clock()
        decided = []
        for day_offset in range(plan.max_lead_days + 1):
            day = date.fromordinal(now.date().toordinal() + day_offset)
            for appointment in self.store.on_day(self.here, day):
                if appointment.status == "requested":
                    share = plan.group(appointment.group).share(self.here, self.here)
                    decided.append(self.store.decide(appointment.appointment_id, share, now))
        return decided

    # --- numbers ------------------------------------------------------------------------------------------

    def take_number(
        self, matter_code: object = None, appointment_id: object = None, id_number: object = None
    ) -> Ticket:
        """取号 at this node: on an appointment (goes first near its slot) or as a walk-in."""
        plan = self.plans.for_node(self.here)
        now = self.clock()
        if appointment_id not in (None, ""):
            appointment = self.store.get(_appointment_id(appointment_id))
            check_arrival(appointment, self._person(id_number), self.here, now, plan)
            return self.store.issue_ticket(self.here, now.date(), plan.group(appointment.group), now, appointment)
        if matter_code not in (None, ""):
            if not isinstance(matter_code, str) or len(matter_code) > 64:
                raise DomainError("invalid_matter_code", "事项编码无效", "invalid matter code")
            group = plan.group_for(matter_code)
        else:
            group = plan.groups[-1]  # the general windows come last in a plan
        return self.store.issue_ticket(self.here, now.date(), group, now)

    def call_next(self, group: object, window: object) -> Ticket | None:
        plan = self.plans.for_node(self.here)
        if not isinstance(window, str) or not 0 < len(window.strip()) <= 20:
            raise DomainError(
                "invalid_window", "请填写窗口号（20 字以内）", "give the window number (at most 20 characters)"
            )
        chosen = plan.group(group if isinstance(group, str) else plan.groups[-1].code)
        return self.store.call_next(self.here, self.clock().date(), chosen.code, window.strip(), self.clock())

    def finish(self, ticket_id: object, outcome: object) -> Ticket:
        statuses = {"served": TicketStatus.SERVED, "no_show": TicketStatus.NO_SHOW}
        if not isinstance(outcome, str) or outcome not in statuses:
            raise DomainError("invalid_outcome", "结果应为 served 或 no_show", "outcome must be served or no_show")
        if not isinstance(ticket_id, str) or len(ticket_id) > 64:
            raise DomainError("ticket_not_found", "没有找到该号码", "No such ticket", ErrorKind.NOT_FOUND)
        return self.store.finish_ticket(ticket_id, statuses[str(outcome)], self.clock())

    def ticket(self, ticket_id: object) -> Ticket:
        if not isinstance(ticket_id, str) or len(ticket_id) > 64:
            raise DomainError("ticket_not_found", "没有找到该号码", "No such ticket", ErrorKind.NOT_FOUND)
        for ticket in self.store.tickets(self.here, self.clock().date()):
            if ticket.ticket_id == ticket_id:
                return ticket
        raise DomainError("ticket_not_found", "没有找到该号码", "No such ticket", ErrorKind.NOT_FOUND)

    def ticket_by_code(self, code: object) -> Ticket:
        """Today's ticket whose visit code (printed on the slip) is ``code``: how a kiosk finds a visit to rate."""
        if isinstance(code, str) and code.isdigit() and len(code) == VISIT_CODE_DIGITS:
            for ticket in self.store.tickets(self.here, self.clock().date()):
                if visit_code(ticket.ticket_id) == code:
                    return ticket
        raise DomainError(
            "ticket_not_found", "没有找到该评价码对应的号码", "no ticket of today has this code", ErrorKind.NOT_FOUND
        )

    def queue(self) -> dict[str, Any]:
        today = self.clock().date()
        tickets = self.store.tickets(self.here, today)
        plan = self.plans.for_node(self.here)
        view = queue_view(tickets)
        names = {g.code: {"name_zh": g.name_zh, "name_en": g.name_en} for g in plan.groups}
        for code, group in view["groups"].items():
            group.update(names.get(code, {}))
        view["date"] = today.isoformat()
        view["tickets"] = [t.to_dict() for t in tickets]
        return view

    def record_no_shows(self) -> list[str]:
        return self.store.record_no_shows(self.here, self.clock(), self.plans.for_node(self.here))


VISIT_CODE_DIGITS = 8


def visit_code(ticket_id: str) -> str:
    """The digits printed on a queue slip that let its holder rate the visit (ticket ids are random)."""
    digest = int(hashlib.sha256(b"tongban-visit:" + ticket_id.encode()).hexdigest(), 16)
    return str(digest % 10**VISIT_CODE_DIGITS).zfill(VISIT_CODE_DIGITS)


def _appointment_id(value: object) -> str:
    if not isinstance(value, str) or not value.isalnum() or len(value) > 64:
        raise _no_such_appointment()
    return value


def _no_such_appointment() -> DomainError:
    return DomainError("appointment_not_found", "没有找到该预约", "no such appointment", ErrorKind.NOT_FOUND)
