"""好差评 (GB/T 39734-2020): ratings, rectification of poor ratings, appeals, and the figures.

This module owns the five rating levels, who may rate what (the applicant only: online one rating
per case, 一事一评; at a window one per visit, 一次一评), keeping every rating as a record that is
never overwritten (a later rating of the same case or visit is a new record that supersedes the
earlier one in the figures), opening a rectification ticket for 不满意/非常不满意 at the node that
handled the service (谁办理谁负责) with a deadline in working days, the follow-up contact and the
outcome, appeals against mistaken or malicious ratings decided by a supervisor, and the figures
per node, window, staff member and matter, which never say who rated.

What public sources confirm and what is assumed is in docs/evaluation.md. Everything here is pure:
records come in and go out as values; the caller stores them as events.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import IntEnum, StrEnum
from typing import Any

from node.domain.errors import DomainError, ErrorKind
from node.domain.workdays import WorkingDayCalendar

__all__ = [
    "Appeal",
    "Channel",
    "Contact",
    "Level",
    "RatedService",
    "Rating",
    "Rectification",
    "RectificationPolicy",
    "RectificationState",
    "appeal",
    "current_ratings",
    "decide_appeal",
    "figures",
    "open_rectification",
    "parse_level",
    "rate",
    "record_contact",
    "record_outcome",
]

SUPERVISOR = "supervisor"  # the project's supervisor role name (督查)
MAX_COMMENT_CHARS = 500
MAX_NOTE_CHARS = 1000
# A case or visit may be rated again (追评, e.g. after rectification); each is a new record. The
# cap keeps one person from flooding a window's figures through one visit.
MAX_RATINGS_PER_SERVICE = 3
# Below this many ratings a staff member's figures show only the count: with one or two ratings a
# breakdown would tell them which applicant rated how.
STAFF_MIN_FOR_BREAKDOWN = 5


def _invalid(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.INVALID)


def _conflict(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.CONFLICT)


def _forbidden(code: str, zh: str, en: str) -> DomainError:
    return DomainError(code, zh, en, ErrorKind.FORBIDDEN)


class Level(IntEnum):
    """The five levels of GB/T 39734; the value is the number of stars."""

    VERY_DISSATISFIED = 1
    DISSATISFIED = 2
    BASICALLY_SATISFIED = 3
    SATISFIED = 4
    VERY_SATISFIED = 5

    @property
    def label_zh(self) -> str:
        return ("非常不满意", "不满意", "基本满意", "满意", "非常满意")[self.value - 1]

    @property
    def label_en(self) -> str:
        return ("very dissatisfied", "dissatisfied", "basically satisfied", "satisfied", "very satisfied")[
            self.value - 1
        ]

    @property
    def is_poor(self) -> bool:
        """差评: 不满意 and 非常不满意 open a rectification ticket."""
        return self.value <= 2


def parse_level(value: object) -> Level:
    """A level from 1–5 or its Chinese label; anything else (0, 6, "5", True) is refused bilingually."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return Level(value)
    if isinstance(value, str):
        for level in Level:
            if value == level.label_zh:
                return level
    raise _invalid(
        "rating_level_invalid",
        "评价等级应为1至5（非常不满意、不满意、基本满意、满意、非常满意）",
        "The rating must be 1 to 5 (very dissatisfied, dissatisfied, basically satisfied, satisfied, very satisfied)",
    )


class Channel(StrEnum):
    ONLINE = "online"  # 一事一评: the service is a case
    WINDOW = "window"  # 一次一评: the service is one visit to a window (its queue ticket)


@dataclass(frozen=True)
class RatedService:
    """What can be rated: a case (online) or a visit (window), with who served and who may rate.

    ``node`` is the node that handled it, responsible for rectification (谁办理谁负责).
    ``applicant_key`` is the applicant's look-up key (HMAC of the ID number), never the number.
    """

    channel: Channel
    service_id: str  # case number, or the visit's ticket id
    applicant_key: str
    node: str
    matter_code: str
    window: str | None = None
    staff: str | None = None


@dataclass(frozen=True)
class Rating:
    rating_id: str
    channel: Channel
    service_id: str
    applicant_key: str
    level: Level
    comment: str
    node: str
    matter_code: str
    window: str | None
    staff: str | None
    rated_at: datetime
    sequence: int  # 1 for the first rating of this service, 2 for the next …
    supersedes: str | None = None  # the rating_id this one follows; that record stays as it was

    def to_dict(self) -> dict[str, Any]:
        """The full record, for the event store (applicant key included: it is a pseudonym)."""
        return {
            "rating_id": self.rating_id,
            "channel": str(self.channel),
            "service_id": self.service_id,
            "applicant_key": self.applicant_key,
            "level": int(self.level),
            "comment": self.comment,
            "node": self.node,
            "matter_code": self.matter_code,
            "window": self.window,
            "staff": self.staff,
            "rated_at": self.rated_at.isoformat(timespec="seconds"),
            "sequence": self.sequence,
            "supersedes": self.supersedes,
        }

    def for_rectification(self) -> dict[str, Any]:
        """What the responsible office works with: the rating and the service, not the applicant's key."""
        data = self.to_dict()
        del data["applicant_key"]
        return data


def rate(
    service: RatedService,
    actor_key: str,
    level: object,
    comment: object,
    now: datetime,
    earlier: Sequence[Rating] = (),
    rating_id: str | None = None,
) -> Rating:
    """A new rating of ``service`` by ``actor_key``; ``earlier`` are this service's ratings so far.

    Only the applicant rates; the level and comment are validated first, so nothing is half-written.
    """
    parsed = parse_level(level)
    if comment is None:
        comment = ""
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise _invalid(
            "rating_comment_invalid",
            f"评价意见应为{MAX_COMMENT_CHARS}字以内的文字",
            f"The comment must be text of at most {MAX_COMMENT_CHARS} characters",
        )
    if actor_key != service.applicant_key:
        what_zh = "办件" if service.channel is Channel.ONLINE else "窗口服务"
        raise _forbidden(
            "rating_not_yours",
            f"只有申请人本人可以评价该{what_zh}",
            "Only the applicant can rate this service",
        )
    mine = [r for r in earlier if r.channel == service.channel and r.service_id == service.service_id]
    if len(mine) >= MAX_RATINGS_PER_SERVICE:
        raise _conflict(
            "rating_limit",
            f"同一{'办件' if service.channel is Channel.ONLINE else '次服务'}最多评价{MAX_RATINGS_PER_SERVICE}次",
            f"A service can be rated at most {MAX_RATINGS_PER_SERVICE} times",
        )
    previous = max(mine, key=lambda r: r.sequence) if mine else None
    return Rating(
        rating_id=rating_id or uuid.uuid4().hex,
        channel=service.channel,
        service_id=service.service_id,
        applicant_key=service.applicant_key,
        level=parsed,
        comment=comment.strip(),
        node=service.node,
        matter_code=service.matter_code,
        window=service.window,
        staff=service.staff,
        rated_at=now,
        sequence=previous.sequence + 1 if previous else 1,
        supersedes=previous.rating_id if previous else None,
    )


def current_ratings(ratings: Iterable[Rating]) -> list[Rating]:
    """The latest rating of each service: what the figures count (one per case, one per visit)."""
    latest: dict[tuple[Channel, str], Rating] = {}
    for rating in ratings:
        key = (rating.channel, rating.service_id)
        if key not in latest or rating.sequence > latest[key].sequence:
            latest[key] = rating
    return list(latest.values())


# ---------------------------------------------------------------------------------------------------------------------
# Rectification


@dataclass(frozen=True)
class RectificationPolicy:
    """A city's rules: working days to rectify (15 is common in local rules; the city sets its own)."""

    deadline_days: int = 15

    def __post_init__(self) -> None:
        if not isinstance(self.deadline_days, int) or not 1 <= self.deadline_days <= 60:
            raise _invalid(
                "rectification_policy_invalid",
                "整改时限应为1至60个工作日",
                "The rectification deadline must be 1 to 60 working days",
            )


class RectificationState(StrEnum):
    OPEN = "open"
    CONTACTED = "contacted"  # the applicant was contacted (回访)
    RECTIFIED = "rectified"  # outcome recorded: closed
    APPEALED = "appealed"  # the office disputes the rating; a supervisor decides
    VOIDED = "voided"  # appeal upheld: the rating was mistaken or malicious and leaves the figures


@dataclass(frozen=True)
class Contact:
    by: str
    at: datetime
    note: str


@dataclass(frozen=True)
class Appeal:
    by: str
    at: datetime
    reason: str
    decided_by: str | None = None
    decided_at: datetime | None = None
    upheld: bool | None = None
    decision: str | None = None


@dataclass(frozen=True)
class Rectification:
    ticket_id: str
    rating_id: str
    node: str  # the responsible node: the one that handled the service
    matter_code: str
    rated_staff: str | None
    opened_on: date
    deadline: date
    state: RectificationState = RectificationState.OPEN
    contacts: tuple[Contact, ...] = ()
    outcome: str | None = None
    closed_at: datetime | None = None
    appeal: Appeal | None = None

    def is_overdue(self, today: date) -> bool:
        return self.state in (RectificationState.OPEN, RectificationState.CONTACTED) and today > self.deadline

    def to_dict(self) -> dict[str, Any]:
        return {
            "ticket_id": self.ticket_id,
            "rating_id": self.rating_id,
            "node": self.node,
            "matter_code": self.matter_code,
            "opened_on": self.opened_on.isoformat(),
            "deadline": self.deadline.isoformat(),
            "state": str(self.state),
            "contacts": [{"by": c.by, "at": c.at.isoformat(timespec="seconds"), "note": c.note} for c in self.contacts],
            "outcome": self.outcome,
            "appeal": None
            if self.appeal is None
            else {
                "by": self.appeal.by,
                "reason": self.appeal.reason,
                "upheld": self.appeal.upheld,
                "decision": self.appeal.decision,
            },
        }


def open_rectification(
    rating: Rating, calendar: WorkingDayCalendar, policy: RectificationPolicy, today: date, ticket_id: str | None = None
) -> Rectification | None:
    """A ticket at the node that handled the service for a poor rating; ``None`` for a good one."""
    if not rating.level.is_poor:
        return None
    return Rectification(
        ticket_id=ticket_id or uuid.uuid4().hex,
        rating_id=rating.rating_id,
        node=rating.node,
        matter_code=rating.matter_code,
        rated_staff=rating.staff,
        opened_on=today,
        deadline=calendar.add_working_days(today, policy.deadline_days),
    )


def _note(value: object, what_zh: str, what_en: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NOTE_CHARS:
        raise _invalid(
            "rectification_note_invalid",
            f"请填写{what_zh}（{MAX_NOTE_CHARS}字以内）",
            f"Please give the {what_en} (at most {MAX_NOTE_CHARS} characters)",
        )
    return value.strip()


def _not_by_rated_staff(ticket: Rectification, actor: str) -> None:
    # The rated person never handles their own ticket: it would show them who rated them.
    if ticket.rated_staff is not None and actor == ticket.rated_staff:
        raise _forbidden(
            "rectification_rated_staff",
            "被评价的工作人员不能处理针对自己的差评整改",
            "The rated staff member cannot handle the rectification of their own rating",
        )


def _require_state(
    ticket: Rectification, allowed: Iterable[RectificationState], action_zh: str, action_en: str
) -> None:
    if ticket.state not in tuple(allowed):
        raise _conflict(
            "rectification_state",
            f"整改单当前状态为「{_STATE_ZH[ticket.state]}」，不能{action_zh}",
            f"The rectification ticket is {ticket.state}; it cannot {action_en}",
        )


_STATE_ZH = {
    RectificationState.OPEN: "待整改",
    RectificationState.CONTACTED: "已回访",
    RectificationState.RECTIFIED: "已整改",
    RectificationState.APPEALED: "申诉中",
    RectificationState.VOIDED: "差评已撤销",
}
_ACTIVE = (RectificationState.OPEN, RectificationState.CONTACTED)


def record_contact(ticket: Rectification, by: str, note: object, at: datetime) -> Rectification:
    """The follow-up contact with the applicant (回访): who called, when, what was said."""
    _not_by_rated_staff(ticket, by)
    _require_state(ticket, _ACTIVE, "记录回访", "record a contact")
    contact = Contact(by, at, _note(note, "回访情况", "contact note"))
    return replace(ticket, state=RectificationState.CONTACTED, contacts=(*ticket.contacts, contact))


def record_outcome(ticket: Rectification, by: str, outcome: object, at: datetime) -> Rectification:
    """The rectification's outcome closes the ticket; the applicant must have been contacted first."""
    _not_by_rated_staff(ticket, by)
    _require_state(ticket, _ACTIVE, "办结整改", "be closed")
    if not ticket.contacts:
        raise _conflict(
            "rectification_contact_first",
            "须先回访申请人，再记录整改结果",
            "Contact the applicant before recording the outcome",
        )
    text = _note(outcome, "整改结果", "outcome")
    return replace(ticket, state=RectificationState.RECTIFIED, outcome=text, closed_at=at)


def appeal(ticket: Rectification, by: str, reason: object, at: datetime) -> Rectification:
    """The office disputes the rating as mistaken or malicious (申诉); once per ticket."""
    _require_state(ticket, _ACTIVE, "申诉", "be appealed")
    if ticket.appeal is not None:
        raise _conflict("appeal_once", "每张整改单只能申诉一次", "A rectification ticket can be appealed once")
    return replace(
        ticket, state=RectificationState.APPEALED, appeal=Appeal(by, at, _note(reason, "申诉理由", "appeal reason"))
    )


def decide_appeal(
    ticket: Rectification, by: str, role: str, upheld: object, decision: object, at: datetime
) -> Rectification:
    """A supervisor decides: upheld voids the rating from the figures; rejected sends the ticket back to work.

    A rejected appeal does not move the deadline: the time spent appealing is the office's.
    """
    if role != SUPERVISOR:
        raise _forbidden("appeal_supervisor_only", "申诉只能由督查人员裁定", "Only a supervisor decides appeals")
    if ticket.appeal is not None and ticket.appeal.by == by:
        raise _forbidden("appeal_own", "不能裁定自己提出的申诉", "You cannot decide your own appeal")
    _require_state(ticket, (RectificationState.APPEALED,), "裁定申诉", "have an appeal decided")
    if not isinstance(upheld, bool):
        raise _invalid("appeal_decision_invalid", "请选择支持或驳回申诉", "Choose to uphold or reject the appeal")
    text = _note(decision, "裁定理由", "reason for the decision")
    assert ticket.appeal is not None
    decided = replace(ticket.appeal, decided_by=by, decided_at=at, upheld=upheld, decision=text)
    if upheld:
        return replace(ticket, state=RectificationState.VOIDED, appeal=decided, closed_at=at)
    back = RectificationState.CONTACTED if ticket.contacts else RectificationState.OPEN
    return replace(ticket, state=back, appeal=decided)


# ---------------------------------------------------------------------------------------------------------------------
# Figures

DIMENSIONS = ("node", "window", "staff", "matter_code")


def figures(
    ratings: Iterable[Rating], by: str, voided: Iterable[str] = (), rectifications: Iterable[Rectification] = ()
) -> dict[str, dict[str, Any]]:
    """Per node, window, staff member or matter: counts per level, satisfaction, poor ratings, rectification.

    Counts only each service's current rating, leaves out ratings voided on appeal, and names no
    applicant and no case. For staff, the per-level breakdown is shown only from
    ``STAFF_MIN_FOR_BREAKDOWN`` ratings on (below it the rated person could tell who rated them).
    ``satisfaction`` is the share of 基本满意 or better.
    """
    if by not in DIMENSIONS:
        raise _invalid(
            "figures_dimension_invalid",
            "统计维度应为 node、window、staff 或 matter_code",
            "Figures are by node, window, staff or matter_code",
        )
    excluded = set(voided)
    tickets: Mapping[str, Rectification] = {t.rating_id: t for t in rectifications}
    groups: dict[str, Counter[int]] = {}
    extra: dict[str, Counter[str]] = {}
    for rating in current_ratings(ratings):
        if rating.rating_id in excluded:
            continue
        key = getattr(rating, by)
        if key is None:
            continue
        groups.setdefault(key, Counter())[int(rating.level)] += 1
        ticket = tickets.get(rating.rating_id)
        if ticket is not None:
            extra.setdefault(key, Counter())[str(ticket.state)] += 1
    result: dict[str, dict[str, Any]] = {}
    for key, levels in sorted(groups.items()):
        total = sum(levels.values())
        entry: dict[str, Any] = {"count": total}
        if by != "staff" or total >= STAFF_MIN_FOR_BREAKDOWN:
            entry["levels"] = {level.label_zh: levels.get(int(level), 0) for level in reversed(Level)}
            entry["satisfaction"] = round(sum(n for value, n in levels.items() if value >= 3) / total, 4)
            entry["poor"] = sum(n for value, n in levels.items() if value <= 2)
            entry["rectification"] = dict(extra.get(key, {}))
        result[key] = entry
    return result
