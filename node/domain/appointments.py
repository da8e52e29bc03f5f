"""Appointments (在线预约) and queue numbers (取号叫号) at a node's windows.

This module owns a node's working plan (working days from the project's calendar, opening hours,
breaks, slot length, window groups with their places per slot and the places lent to other
nodes), the slots of a day, the rules for booking, cancelling and arriving, which booking share a
node may fill, and the order in which numbers are called. Storage is a port
(``node/adapters/appointments_store.py``); everything here is pure.

Times are the node's local wall-clock time (China Standard Time, no daylight saving), as naive
``datetime`` values: a slot is "09:00-09:30 on a working day" for everyone who books it.

Who may fill a place (docs/appointments.md): the node that owns the window is the authority for
its slots. Each slot's places are split into disjoint *shares*: the owner's share and, if the plan
says so, a share lent to each other node (typically the city's portal). A node confirms bookings
only within its own share, so two nodes that cannot reach each other never hand out the same
place. A node with no share left files a *request*, which the owner confirms from its own share or
rejects, in the order the requests reach it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from node.domain.errors import DomainError, ErrorKind
from node.domain.workdays import WorkingDayCalendar

__all__ = [
    "Appointment",
    "AppointmentStatus",
    "SlotRef",
    "Ticket",
    "TicketStatus",
    "WindowGroup",
    "WorkingPlan",
    "booking_share",
    "check_arrival",
    "check_booking",
    "check_cancel",
    "is_no_show",
    "merge",
    "next_ticket",
    "parse_day",
    "parse_start",
    "queue_view",
    "reminder_due",
    "slots",
    "ticket_number",
]

MAX_SLOT_MINUTES = 240
MAX_CAPACITY = 500
MAX_HORIZON_DAYS = 90
_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_PREFIX = re.compile(r"[A-Z]")


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def _conflict(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.CONFLICT)


def _plan_error(zh: str, en: str) -> DomainError:
    return _invalid("invalid_working_plan", f"窗口工作计划无效：{zh}", f"Invalid working plan: {en}")


def _parse_time(value: object, what: str) -> time:
    if isinstance(value, time):
        return value
    try:
        if not isinstance(value, str) or len(value) != 5:
            raise ValueError
        return time.fromisoformat(value)
    except ValueError:
        raise _plan_error(f"{what} 应为 HH:MM，收到 {value!r}", f"{what} must be HH:MM, got {value!r}") from None


def _positive_int(value: object, what: str, upper: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise _plan_error(f"{what} 应为 0–{upper} 的整数", f"{what} must be an integer in 0..{upper}")
    return value


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


# ---------------------------------------------------------------------------------------------------------------------
# The working plan


@dataclass(frozen=True)
class WindowGroup:
    """Windows that serve the same matters (综合窗口, 不动产窗口 …) and how many people each slot takes.

    ``capacity`` places per slot in all; ``lent`` maps another node's code to the places of each
    slot it may confirm on its own (carved out of ``capacity``); ``matters`` empty means every matter.
    ``prefix`` is the letter of this group's queue numbers (A001, B001 …).
    """

    code: str
    name_zh: str
    name_en: str
    capacity: int
    prefix: str
    matters: frozenset[str] = frozenset()
    lent: tuple[tuple[str, int], ...] = ()

    def serves(self, matter_code: str) -> bool:
        return not self.matters or matter_code in self.matters

    def share(self, owner: str, holder: str) -> int:
        """The places of each slot that ``holder`` may confirm by itself (the owner keeps what is not lent)."""
        lent = dict(self.lent)
        if holder == owner:
            return self.capacity - sum(lent.values())
        return lent.get(holder, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "capacity": self.capacity,
            "prefix": self.prefix,
            "matters": sorted(self.matters),
            "lent": dict(self.lent),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowGroup:
        if not isinstance(data, Mapping):
            raise _plan_error("窗口组应为对象", "a window group must be an object")
        code = data.get("code")
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise _plan_error(f"窗口组编码 {code!r} 无效", f"window group code {code!r} is invalid")
        names = (data.get("name_zh"), data.get("name_en"))
        if not all(isinstance(n, str) and 0 < len(n) <= 64 for n in names):
            raise _plan_error(f"窗口组 {code} 须有中英文名称", f"window group {code} needs a zh and an en name")
        capacity = _positive_int(data.get("capacity"), f"{code}.capacity", MAX_CAPACITY)
        prefix = data.get("prefix")
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise _plan_error(f"{code} 的叫号字母应为一个大写字母", f"{code}.prefix must be one capital letter")
        matters = data.get("matters", [])
        if not isinstance(matters, list) or not all(isinstance(m, str) and m for m in matters):
            raise _plan_error(f"{code}.matters 应为事项编码列表", f"{code}.matters must be a list of matter codes")
        lent = data.get("lent", {})
        if not isinstance(lent, Mapping) or not all(isinstance(k, str) and k for k in lent):
            raise _plan_error(f"{code}.lent 应为「节点 → 名额」", f"{code}.lent must map node codes to places")
        shares = {node: _positive_int(places, f"{code}.lent[{node}]", MAX_CAPACITY) for node, places in lent.items()}
        if sum(shares.values()) > capacity:
            raise _plan_error(
                f"{code} 借给其他节点的名额多于每个时段的名额 {capacity}",
                f"{code} lends more places than its {capacity} per slot",
            )
        return cls(code, names[0], names[1], capacity, prefix, frozenset(matters), tuple(sorted(shares.items())))


@dataclass(frozen=True)
class WorkingPlan:
    """When a node's windows take appointments, and the booking rules around them.

    - ``opens``/``closes`` with ``breaks`` (e.g. lunch 12:00-14:00): slots of ``slot_minutes`` run
      from ``opens``; a slot that would overlap a break or run past ``closes`` is not offered.
    - ``min_lead_minutes``: the latest a slot can be booked (e.g. 60: not within the hour before it).
    - ``max_lead_days``: the horizon: a slot more than this many calendar days ahead is not offered.
    - ``cancel_minutes``: a booking can be cancelled until this many minutes before its start.
    - ``grace_minutes``: arriving this late still counts; after that the booking is a no-show.
    """

    node: str
    opens: time
    closes: time
    slot_minutes: int
    groups: tuple[WindowGroup, ...]
    breaks: tuple[tuple[time, time], ...] = ()
    min_lead_minutes: int = 60
    max_lead_days: int = 14
    cancel_minutes: int = 120
    grace_minutes: int = 15

    def __post_init__(self) -> None:
        if not 5 <= self.slot_minutes <= MAX_SLOT_MINUTES:
            raise _plan_error(f"时段长度应为 5–{MAX_SLOT_MINUTES} 分钟", f"slot_minutes must be 5..{MAX_SLOT_MINUTES}")
        if self.opens >= self.closes:
            raise _plan_error("开始办公时间须早于结束时间", "opens must be before closes")
        for start, end in self.breaks:
            if not self.opens <= start < end <= self.closes:
                raise _plan_error(
                    f"休息时间 {start:%H:%M}-{end:%H:%M} 须在办公时间之内",
                    f"break {start:%H:%M}-{end:%H:%M} must lie within opening hours",
                )
        if not self.groups:
            raise _plan_error("至少需要一个窗口组", "at least one window group is needed")
        codes = [g.code for g in self.groups]
        prefixes = [g.prefix for g in self.groups]
        if len(set(codes)) != len(codes) or len(set(prefixes)) != len(prefixes):
            raise _plan_error("窗口组编码和叫号字母不能重复", "window group codes and prefixes must be unique")
        if not 0 < self.max_lead_days <= MAX_HORIZON_DAYS:
            raise _plan_error(
                f"最长提前预约天数应为 1–{MAX_HORIZON_DAYS}", f"max_lead_days must be 1..{MAX_HORIZON_DAYS}"
            )

    def group(self, code: str) -> WindowGroup:
        for group in self.groups:
            if group.code == code:
                return group
        raise DomainError(
            "unknown_window_group",
            f"本节点没有编码为 {code!r} 的窗口组",
            f"this node has no window group {code!r}",
            ErrorKind.NOT_FOUND,
        )

    def group_for(self, matter_code: str) -> WindowGroup:
        """The first window group serving ``matter_code`` (a plan lists specialised groups first)."""
        for group in self.groups:
            if group.serves(matter_code):
                return group
        raise DomainError(
            "matter_not_served_here",
            f"本节点的窗口不办理事项 {matter_code!r}，无法预约",
            f"no window of this node handles matter {matter_code!r}: it cannot be booked here",
            ErrorKind.NOT_FOUND,
        )

    def slot_times(self, day: date, calendar: WorkingDayCalendar) -> list[tuple[datetime, datetime]]:
        """Start and end of every slot of ``day`` (none on a day off)."""
        if not calendar.is_working_day(day):
            return []
        step = self.slot_minutes
        result = []
        start = _minutes(self.opens)
        while start + step <= _minutes(self.closes):
            end = start + step
            if not any(start < _minutes(b_end) and _minutes(b_start) < end for b_start, b_end in self.breaks):
                result.append((_at(day, start), _at(day, end)))
            start = end
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "opens": f"{self.opens:%H:%M}",
            "closes": f"{self.closes:%H:%M}",
            "breaks": [[f"{a:%H:%M}", f"{b:%H:%M}"] for a, b in self.breaks],
            "slot_minutes": self.slot_minutes,
            "groups": [g.to_dict() for g in self.groups],
            "min_lead_minutes": self.min_lead_minutes,
            "max_lead_days": self.max_lead_days,
            "cancel_minutes": self.cancel_minutes,
            "grace_minutes": self.grace_minutes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkingPlan:
        """Read and validate a plan (as an admin edits it or another node sends it)."""
        if not isinstance(data, Mapping):
            raise _plan_error("应为对象", "must be an object")
        node = data.get("node")
        if not isinstance(node, str) or not _CODE.fullmatch(node):
            raise _plan_error(f"节点编码 {node!r} 无效", f"node code {node!r} is invalid")
        breaks = data.get("breaks", [])
        if not isinstance(breaks, list) or not all(isinstance(b, list | tuple) and len(b) == 2 for b in breaks):
            raise _plan_error("breaks 应为 [开始, 结束] 的列表", "breaks must be a list of [start, end] pairs")
        groups = data.get("groups")
        if not isinstance(groups, list) or len(groups) > 32:
            raise _plan_error("groups 应为窗口组列表（最多32个）", "groups must be a list of at most 32 window groups")
        day = 24 * 60
        return cls(
            node=node,
            opens=_parse_time(data.get("opens"), "opens"),
            closes=_parse_time(data.get("closes"), "closes"),
            breaks=tuple((_parse_time(a, "break"), _parse_time(b, "break")) for a, b in breaks),
            slot_minutes=_positive_int(data.get("slot_minutes"), "slot_minutes", MAX_SLOT_MINUTES),
            groups=tuple(WindowGroup.from_dict(g) for g in groups),
            min_lead_minutes=_positive_int(data.get("min_lead_minutes", 60), "min_lead_minutes", 7 * day),
            max_lead_days=_positive_int(data.get("max_lead_days", 14), "max_lead_days", MAX_HORIZON_DAYS),
            cancel_minutes=_positive_int(data.get("cancel_minutes", 120), "cancel_minutes", 7 * day),
            grace_minutes=_positive_int(data.get("grace_minutes", 15), "grace_minutes", 240),
        )


def _at(day: date, minutes: int) -> datetime:
    return datetime.combine(day, time(minutes // 60, minutes % 60))


# ---------------------------------------------------------------------------------------------------------------------
# Slots and booking rules


@dataclass(frozen=True)
class SlotRef:
    """A bookable slot of one window group."""

    node: str
    group: str
    start: datetime
    end: datetime


def _bookable(plan: WorkingPlan, start: datetime, now: datetime) -> bool:
    return (
        start - now >= timedelta(minutes=plan.min_lead_minutes)
        and start.date() <= (now + timedelta(days=plan.max_lead_days)).date()
    )


def slots(
    plan: WorkingPlan,
    calendar: WorkingDayCalendar,
    day: date,
    now: datetime,
    taken: Mapping[tuple[str, datetime], int],
    matter_code: str | None = None,
) -> list[dict[str, Any]]:
    """The slots of ``day`` as ``{"start", "end", "free"}`` (ISO times), for one matter's group or all groups.

    ``taken`` counts the places held per (group code, slot start): confirmed bookings and requests
    this node knows of. A slot that can no longer or not yet be booked (lead time, horizon) shows
    ``free: 0``. A day off has no slots.
    """
    groups = [plan.group_for(matter_code)] if matter_code is not None else list(plan.groups)
    result = []
    for start, end in plan.slot_times(day, calendar):
        free = 0
        if _bookable(plan, start, now):
            free = sum(max(0, g.capacity - taken.get((g.code, start), 0)) for g in groups)
        result.append(
            {"start": start.isoformat(timespec="minutes"), "end": end.isoformat(timespec="minutes"), "free": free}
        )
    return result


def parse_day(value: object) -> date:
    """A day from a request (``YYYY-MM-DD``), for the slots query."""
    try:
        if not isinstance(value, str) or len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(
            "appointment_day_format",
            f"日期格式错误：{str(value)[:20]!r}（应为 YYYY-MM-DD）",
            f"Bad date {str(value)[:20]!r} (expected YYYY-MM-DD)",
        ) from None


def parse_start(value: object) -> datetime:
    """A slot start from a request: ``YYYY-MM-DDTHH:MM`` local time."""
    try:
        if not isinstance(value, str) or not 16 <= len(value) <= 19:
            raise ValueError
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is not None or parsed.second or parsed.microsecond:
            raise ValueError
        return parsed
    except ValueError:
        raise _bad_start(value) from None


def _bad_start(value: object) -> DomainError:
    return _invalid(
        "appointment_start_format",
        f"预约时间格式错误：{str(value)[:40]!r}（应为 YYYY-MM-DDTHH:MM，当地时间）",
        f"Bad appointment time {str(value)[:40]!r} (expected YYYY-MM-DDTHH:MM, local time)",
    )


def check_booking(
    plan: WorkingPlan, calendar: WorkingDayCalendar, matter_code: str, start: datetime, now: datetime
) -> SlotRef:
    """The slot a booking for ``matter_code`` at ``start`` would take, or the bilingual reason it cannot.

    Capacity and the same person's second booking are checked by the store, in the same transaction
    as the insert.
    """
    group = plan.group_for(matter_code)
    if start <= now:
        raise _invalid("appointment_in_past", "不能预约已经过去的时间", "An appointment cannot be booked in the past")
    if start.date() > (now + timedelta(days=plan.max_lead_days)).date():
        raise _invalid(
            "appointment_beyond_horizon",
            f"最多只能提前{plan.max_lead_days}天预约",
            f"Appointments can be booked at most {plan.max_lead_days} days ahead",
        )
    for slot_start, slot_end in plan.slot_times(start.date(), calendar):
        if slot_start == start:
            if start - now < timedelta(minutes=plan.min_lead_minutes):
                raise _invalid(
                    "appointment_too_soon",
                    f"须至少提前{plan.min_lead_minutes}分钟预约；请直接到现场取号",
                    f"Book at least {plan.min_lead_minutes} minutes ahead; otherwise take a number at the hall",
                )
            return SlotRef(plan.node, group.code, slot_start, slot_end)
    if not calendar.is_working_day(start.date()):
        raise _invalid(
            "appointment_day_off",
            f"{start.date().isoformat()} 不是工作日，不办理预约",
            f"{start.date().isoformat()} is not a working day",
        )
    raise _invalid(
        "appointment_not_a_slot",
        f"{start:%H:%M} 不是可预约时段的开始时间（办公时间 {plan.opens:%H:%M}-{plan.closes:%H:%M}，"
        f"每段{plan.slot_minutes}分钟，休息时间除外）",
        f"{start:%H:%M} is not the start of a slot (open {plan.opens:%H:%M}-{plan.closes:%H:%M}, "
        f"{plan.slot_minutes}-minute slots, breaks excluded)",
    )


class AppointmentStatus(StrEnum):
    BOOKED = "booked"  # confirmed within the booking node's share
    REQUESTED = "requested"  # made at a node without a share left; the owner decides
    REJECTED = "rejected"  # the owner had no place left for the request
    CANCELLED = "cancelled"
    ARRIVED = "arrived"  # took a number
    NO_SHOW = "no_show"


@dataclass(frozen=True)
class Appointment:
    appointment_id: str
    node: str  # the window's node, authority for the slot
    group: str
    matter_code: str
    start: datetime
    end: datetime
    applicant_key: str  # a look-up key (HMAC of the ID number), never the number itself
    booked_at: str  # the node whose share holds the place (or that filed the request)
    status: AppointmentStatus
    created_at: datetime
    changed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "appointment_id": self.appointment_id,
            "node": self.node,
            "group": self.group,
            "matter_code": self.matter_code,
            "start": self.start.isoformat(timespec="minutes"),
            "end": self.end.isoformat(timespec="minutes"),
            "booked_at": self.booked_at,
            "status": str(self.status),
        }

    def to_record(self) -> dict[str, Any]:
        """The full record another node receives (the applicant key is a pseudonym, not the ID number)."""
        return {
            **self.to_dict(),
            "applicant_key": self.applicant_key,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "changed_at": self.changed_at.isoformat(timespec="seconds") if self.changed_at else None,
        }

    @classmethod
    def from_record(cls, data: object) -> Appointment:
        """Read another node's copy, bounded and validated; a bad one is refused with the reason."""
        try:
            if not isinstance(data, Mapping):
                raise ValueError("not an object")
            texts = {}
            for key, limit in _RECORD_TEXT_FIELDS.items():
                value = data.get(key)
                if not isinstance(value, str) or not 0 < len(value) <= limit:
                    raise ValueError(key)
                texts[key] = value
            changed = data.get("changed_at")
            appointment = cls(
                appointment_id=texts["appointment_id"],
                node=texts["node"],
                group=texts["group"],
                matter_code=texts["matter_code"],
                start=_record_time(data.get("start"), "start"),
                end=_record_time(data.get("end"), "end"),
                applicant_key=texts["applicant_key"],
                booked_at=texts["booked_at"],
                status=AppointmentStatus(data.get("status")),
                created_at=_record_time(data.get("created_at"), "created_at"),
                changed_at=None if changed is None else _record_time(changed, "changed_at"),
            )
            if appointment.end <= appointment.start:
                raise ValueError("end")
        except ValueError as problem:
            raise _invalid(
                "appointment_record_invalid",
                f"收到的预约记录无效（{str(problem)[:40]}）",
                f"The appointment record received is invalid ({str(problem)[:40]})",
            ) from None
        return appointment


_RECORD_TEXT_FIELDS = {
    "appointment_id": 64,
    "node": 32,
    "group": 32,
    "matter_code": 64,
    "applicant_key": 128,
    "booked_at": 32,
}


def _record_time(value: object, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 25:
        raise ValueError(what)
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        raise ValueError(what)
    return parsed


# How copies of one appointment converge when nodes exchange them: the higher rank wins, so the
# merge is the same whatever order copies arrive in. Only the window's node decides a request
# (booked or rejected), so those two never meet; a person standing at the window (arrived) beats a
# cancellation made elsewhere while the link was down.
_STATUS_RANK = {
    AppointmentStatus.REQUESTED: 0,
    AppointmentStatus.BOOKED: 1,
    AppointmentStatus.REJECTED: 2,
    AppointmentStatus.CANCELLED: 3,
    AppointmentStatus.NO_SHOW: 3,
    AppointmentStatus.ARRIVED: 4,
}


def merge(local: Appointment, incoming: Appointment) -> Appointment:
    """The converged copy of one appointment (same id) from two nodes' copies; commutative and idempotent."""
    if local.appointment_id != incoming.appointment_id:
        raise ValueError("merge needs two copies of the same appointment")
    a, b = _STATUS_RANK[local.status], _STATUS_RANK[incoming.status]
    if a != b:
        return local if a > b else incoming
    # Same rank (cancelled vs no-show): the earlier change happened first and stands.
    return min(local, incoming, key=lambda x: (x.changed_at or datetime.max, str(x.status)))


def reminder_due(appointment: Appointment, now: datetime) -> bool:
    """Remind the day before: a confirmed booking whose slot is tomorrow (local date)."""
    return appointment.status == AppointmentStatus.BOOKED and appointment.start.date() == now.date() + timedelta(days=1)


def booking_share(plan: WorkingPlan, slot: SlotRef, holder: str) -> int:
    """Places of ``slot`` that ``holder`` may confirm by itself: 0 means file a request with the window's node."""
    return plan.group(slot.group).share(plan.node, holder)


def slot_full_error(slot: SlotRef) -> DomainError:
    return _conflict(
        "slot_full",
        f"{slot.start:%m月%d日 %H:%M} 的时段已约满，请选择其他时段",
        f"The {slot.start:%Y-%m-%d %H:%M} slot is full; choose another one",
    )


def duplicate_booking_error(slot: SlotRef) -> DomainError:
    return _conflict(
        "appointment_duplicate",
        f"您已预约了 {slot.start:%m月%d日 %H:%M} 的时段，不能重复预约",
        f"You already hold a booking for the {slot.start:%Y-%m-%d %H:%M} slot",
    )


def not_found_error(appointment_id: object) -> DomainError:
    return DomainError(
        "appointment_not_found",
        "没有找到该预约",
        f"No appointment {str(appointment_id)[:40]!r}",
        ErrorKind.NOT_FOUND,
    )


def check_cancel(appointment: Appointment, applicant_key: str, now: datetime, plan: WorkingPlan) -> None:
    """May ``applicant_key`` cancel ``appointment`` now? Raises the bilingual reason if not."""
    if appointment.applicant_key != applicant_key:
        # Same answer as for a booking that does not exist would leak less, but the issue asks for a
        # clear answer; it names no one either way.
        raise DomainError(
            "appointment_not_yours",
            "只能取消本人的预约",
            "You can only cancel your own appointment",
            ErrorKind.FORBIDDEN,
        )
    if appointment.status not in (AppointmentStatus.BOOKED, AppointmentStatus.REQUESTED):
        raise _conflict(
            "appointment_not_active",
            f"该预约已{_STATUS_ZH[appointment.status]}，不能取消",
            f"The appointment is already {appointment.status}; it cannot be cancelled",
        )
    if appointment.start - now < timedelta(minutes=plan.cancel_minutes):
        raise _conflict(
            "appointment_cancel_too_late",
            f"须在预约时段开始前{plan.cancel_minutes}分钟以前取消",
            f"An appointment can be cancelled until {plan.cancel_minutes} minutes before it starts",
        )


_STATUS_ZH = {
    AppointmentStatus.BOOKED: "预约成功",
    AppointmentStatus.REQUESTED: "提交待确认",
    AppointmentStatus.REJECTED: "被拒绝",
    AppointmentStatus.CANCELLED: "取消",
    AppointmentStatus.ARRIVED: "到场取号",
    AppointmentStatus.NO_SHOW: "记为爽约",
}


def check_arrival(appointment: Appointment, applicant_key: str, node: str, now: datetime, plan: WorkingPlan) -> None:
    """May this person take a number on this appointment here and now? (Else: a walk-in number.)"""
    if appointment.applicant_key != applicant_key:
        raise DomainError(
            "appointment_not_yours", "这不是您本人的预约", "This appointment is not yours", ErrorKind.FORBIDDEN
        )
    if appointment.node != node:
        raise _conflict(
            "appointment_other_node",
            "该预约不在本大厅办理，请到预约的服务中心取号",
            "This appointment is for another service centre; take the number there",
        )
    if appointment.status != AppointmentStatus.BOOKED:
        raise _conflict(
            "appointment_not_active",
            f"该预约已{_STATUS_ZH[appointment.status]}，请取普通号",
            f"The appointment is {appointment.status}; take an ordinary number",
        )
    if appointment.start.date() != now.date():
        raise _conflict(
            "appointment_other_day",
            f"您的预约在 {appointment.start:%m月%d日}，不是今天；请取普通号",
            f"Your appointment is on {appointment.start:%Y-%m-%d}, not today; take an ordinary number",
        )
    if now > appointment.start + timedelta(minutes=plan.grace_minutes):
        raise _conflict(
            "appointment_missed",
            f"已超过预约时间{plan.grace_minutes}分钟，预约失效；请取普通号",
            f"More than {plan.grace_minutes} minutes late: the appointment lapsed; take an ordinary number",
        )


def is_no_show(appointment: Appointment, now: datetime, plan: WorkingPlan) -> bool:
    """A confirmed booking whose holder had not taken a number by the end of the grace period."""
    return appointment.status == AppointmentStatus.BOOKED and now > appointment.start + timedelta(
        minutes=plan.grace_minutes
    )


# ---------------------------------------------------------------------------------------------------------------------
# Queue numbers


class TicketStatus(StrEnum):
    WAITING = "waiting"
    CALLED = "called"
    SERVED = "served"
    NO_SHOW = "no_show"  # called and did not come to the window


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    node: str
    day: date
    group: str
    number: str  # what the screen shows and staff call: A001
    issued_at: datetime
    status: TicketStatus = TicketStatus.WAITING
    appointment_id: str | None = None
    appointment_start: datetime | None = None
    window: str | None = None
    called_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "number": self.number,
            "group": self.group,
            "status": str(self.status),
            "appointment": self.appointment_id is not None,
            "window": self.window,
            "issued_at": self.issued_at.isoformat(timespec="seconds"),
        }


def ticket_number(prefix: str, sequence: int) -> str:
    """A001 … A999, then A1000: the day's numbers never repeat."""
    if sequence < 1:
        raise ValueError(f"sequence must be >= 1, got {sequence}")
    return f"{prefix}{sequence:03d}"


# An appointment holder goes first once their slot is this close (they booked to avoid queueing).
APPOINTMENT_CALL_AHEAD = timedelta(minutes=10)


def next_ticket(waiting: Iterable[Ticket], now: datetime) -> Ticket | None:
    """The ticket staff call next in a group: holders of an appointment due now, else the earliest number.

    Among appointment holders the earlier slot first, then the earlier ticket; a holder who came
    early waits like everyone until APPOINTMENT_CALL_AHEAD before their slot.
    """
    candidates = [t for t in waiting if t.status == TicketStatus.WAITING]
    due = [
        t for t in candidates if t.appointment_start is not None and t.appointment_start - APPOINTMENT_CALL_AHEAD <= now
    ]
    if due:
        return min(due, key=lambda t: (t.appointment_start, t.issued_at, t.number))
    if not candidates:
        return None
    return min(candidates, key=lambda t: (t.issued_at, t.number))


def check_ticket_transition(ticket: Ticket, to: TicketStatus) -> None:
    allowed = {
        TicketStatus.CALLED: (TicketStatus.WAITING, TicketStatus.CALLED),  # calling again is a recall
        TicketStatus.SERVED: (TicketStatus.CALLED,),
        TicketStatus.NO_SHOW: (TicketStatus.CALLED,),
    }
    if ticket.status not in allowed.get(to, ()):
        raise _conflict(
            "ticket_state",
            f"号码 {ticket.number} 当前为「{_TICKET_ZH[ticket.status]}」，不能改为「{_TICKET_ZH[to]}」",
            f"Ticket {ticket.number} is {ticket.status}; it cannot become {to}",
        )


_TICKET_ZH = {
    TicketStatus.WAITING: "等候中",
    TicketStatus.CALLED: "已叫号",
    TicketStatus.SERVED: "已办理",
    TicketStatus.NO_SHOW: "过号未到",
}


def queue_view(tickets: Sequence[Ticket]) -> dict[str, Any]:
    """What the inbox and the hall screen show: waiting count per group and the numbers being called."""
    groups: dict[str, dict[str, Any]] = {}
    for ticket in tickets:
        view = groups.setdefault(ticket.group, {"waiting": 0, "called": []})
        if ticket.status == TicketStatus.WAITING:
            view["waiting"] += 1
        elif ticket.status == TicketStatus.CALLED:
            view["called"].append({"number": ticket.number, "window": ticket.window})
    return {"groups": groups}
