"""好差评: who rates, never overwritten, rectification with deadlines and contact, appeals, anonymous figures."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime

import pytest

from node.domain.errors import DomainError, ErrorKind
from node.domain.evaluation import (
    STAFF_MIN_FOR_BREAKDOWN,
    Channel,
    Level,
    RatedService,
    RectificationPolicy,
    RectificationState,
    appeal,
    current_ratings,
    decide_appeal,
    figures,
    open_rectification,
    parse_level,
    rate,
    record_contact,
    record_outcome,
)
from node.domain.workdays import WorkingDayCalendar

CALENDAR = WorkingDayCalendar(holidays=[date(2026, 12, 14)])
NOW = datetime(2026, 12, 4, 10, 0)  # a Friday
TOWNSHIP = "430902101000"
CASE = RatedService(Channel.ONLINE, "TB-20261204-0001", "applicant-1", TOWNSHIP, "430900-QR-0001", staff="clerk-wang")
VISIT = RatedService(Channel.WINDOW, "ticket-17", "applicant-2", TOWNSHIP, "430900-QR-0001", "window-3", "clerk-li")


def refused(code: str, kind: ErrorKind, call, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code and caught.value.kind is kind
    assert caught.value.message_zh and caught.value.message_en
    return caught.value


def test_the_five_levels_by_number_or_label() -> None:
    assert [level.label_zh for level in Level] == ["非常不满意", "不满意", "基本满意", "满意", "非常满意"]
    assert parse_level(5) is Level.VERY_SATISFIED and parse_level("不满意") is Level.DISSATISFIED
    assert [level.is_poor for level in Level] == [True, True, False, False, False]


@pytest.mark.parametrize("value", [0, 6, -1, "5", "很好", None, True, 3.0])
def test_a_rating_outside_one_to_five_is_refused(value: object) -> None:
    refused("rating_level_invalid", ErrorKind.INVALID, rate, CASE, "applicant-1", value, "", NOW)


def test_only_the_applicant_rates() -> None:
    error = refused("rating_not_yours", ErrorKind.FORBIDDEN, rate, CASE, "someone-else", 1, "", NOW)
    assert "申请人" in error.message_zh
    refused("rating_not_yours", ErrorKind.FORBIDDEN, rate, VISIT, "applicant-1", 5, "", NOW)


def test_a_long_comment_is_refused() -> None:
    refused("rating_comment_invalid", ErrorKind.INVALID, rate, CASE, "applicant-1", 4, "差" * 501, NOW)


def test_a_later_rating_is_a_new_record_and_the_earlier_stays() -> None:
    first = rate(CASE, "applicant-1", 2, "等了很久", NOW)
    second = rate(CASE, "applicant-1", 4, "整改后满意", datetime(2026, 12, 10, 9, 0), earlier=[first])
    assert (first.sequence, second.sequence) == (1, 2)
    assert second.supersedes == first.rating_id and second.rating_id != first.rating_id
    assert first.level is Level.DISSATISFIED and first.comment == "等了很久"  # untouched
    assert current_ratings([first, second]) == [second]
    third = rate(CASE, "applicant-1", 5, "", NOW, earlier=[first, second])
    refused("rating_limit", ErrorKind.CONFLICT, rate, CASE, "applicant-1", 5, "", NOW, earlier=[first, second, third])


def test_case_and_visit_ratings_are_separate_services() -> None:
    online = rate(CASE, "applicant-1", 5, "", NOW)
    window = rate(VISIT, "applicant-2", 3, "", NOW, earlier=[online])
    assert window.sequence == 1 and window.channel is Channel.WINDOW and window.window == "window-3"
    assert len(current_ratings([online, window])) == 2


def test_a_good_rating_opens_no_ticket_and_a_poor_one_opens_one_at_the_handling_node() -> None:
    policy = RectificationPolicy(deadline_days=5)
    assert open_rectification(rate(CASE, "applicant-1", 3, "", NOW), CALENDAR, policy, NOW.date()) is None
    poor = rate(CASE, "applicant-1", 1, "态度差", NOW)
    ticket = open_rectification(poor, CALENDAR, policy, NOW.date())
    assert ticket.node == TOWNSHIP and ticket.rating_id == poor.rating_id and ticket.state is RectificationState.OPEN
    # Fri 4 Dec + 5 working days: Mon 7 … Fri 11 (the 14th is a declared holiday, not reached)
    assert ticket.deadline == date(2026, 12, 11)
    longer = open_rectification(poor, CALENDAR, RectificationPolicy(deadline_days=6), NOW.date())
    assert longer.deadline == date(2026, 12, 15)  # skips the weekend and the holiday on the 14th
    assert not ticket.is_overdue(date(2026, 12, 11)) and ticket.is_overdue(date(2026, 12, 12))
    assert "applicant_key" not in poor.for_rectification()


@pytest.mark.parametrize("days", [0, 61, "15"])
def test_the_deadline_policy_is_bounded(days: object) -> None:
    refused("rectification_policy_invalid", ErrorKind.INVALID, RectificationPolicy, days)


def test_rectification_needs_a_contact_before_the_outcome_and_not_by_the_rated_staff() -> None:
    poor = rate(CASE, "applicant-1", 2, "", NOW)
    ticket = open_rectification(poor, CALENDAR, RectificationPolicy(), NOW.date())
    refused("rectification_contact_first", ErrorKind.CONFLICT, record_outcome, ticket, "head-zhao", "已改进", NOW)
    refused("rectification_rated_staff", ErrorKind.FORBIDDEN, record_contact, ticket, "clerk-wang", "打过电话", NOW)
    refused("rectification_note_invalid", ErrorKind.INVALID, record_contact, ticket, "head-zhao", "  ", NOW)
    contacted = record_contact(ticket, "head-zhao", "电话回访，申请人反映等候时间长", NOW)
    assert contacted.state is RectificationState.CONTACTED and len(contacted.contacts) == 1
    done = record_outcome(contacted, "head-zhao", "增设午间窗口", datetime(2026, 12, 7, 16, 0))
    assert done.state is RectificationState.RECTIFIED and done.outcome == "增设午间窗口"
    assert not done.is_overdue(date(2027, 1, 30))
    refused("rectification_state", ErrorKind.CONFLICT, record_contact, done, "head-zhao", "再次回访", NOW)
    assert ticket.state is RectificationState.OPEN  # values, never changed in place


def test_an_appeal_is_decided_by_a_supervisor_only() -> None:
    poor = rate(CASE, "applicant-1", 1, "乱评", NOW)
    ticket = open_rectification(poor, CALENDAR, RectificationPolicy(), NOW.date())
    appealed = appeal(ticket, "head-zhao", "申请人误评：该事项当场办结", NOW)
    assert appealed.state is RectificationState.APPEALED
    refused("appeal_once", ErrorKind.CONFLICT, appeal, replace(appealed, state=RectificationState.OPEN), "x", "y", NOW)
    forbidden = ErrorKind.FORBIDDEN
    refused("appeal_supervisor_only", forbidden, decide_appeal, appealed, "head-zhao", "approver", True, "同意", NOW)
    refused("appeal_own", ErrorKind.FORBIDDEN, decide_appeal, appealed, "head-zhao", "supervisor", True, "同意", NOW)
    invalid = ErrorKind.INVALID
    refused("appeal_decision_invalid", invalid, decide_appeal, appealed, "sup-chen", "supervisor", "yes", "x", NOW)
    voided = decide_appeal(appealed, "sup-chen", "supervisor", True, "经核实为误评", NOW)
    assert voided.state is RectificationState.VOIDED and voided.appeal.upheld is True
    rejected = decide_appeal(appealed, "sup-chen", "supervisor", False, "评价属实，继续整改", NOW)
    assert rejected.state is RectificationState.OPEN and rejected.deadline == ticket.deadline
    refused(
        "rectification_state", ErrorKind.CONFLICT, decide_appeal, rejected, "sup-chen", "supervisor", True, "x", NOW
    )


def test_figures_count_current_ratings_leave_out_voided_ones_and_name_nobody() -> None:
    ratings = []
    for i, level in enumerate([5, 5, 4, 3, 1, 2]):
        service = RatedService(Channel.WINDOW, f"t{i}", f"a{i}", TOWNSHIP, "430900-QR-0001", "window-3", "clerk-li")
        ratings.append(rate(service, f"a{i}", level, "", NOW))
    # a re-rating of t5 (2 → 4) replaces it in the figures; a second staff member has only two ratings
    ratings.append(rate(RatedService(Channel.WINDOW, "t5", "a5", TOWNSHIP, "430900-QR-0001", "window-3", "clerk-li"),
                        "a5", 4, "", NOW, earlier=ratings))  # fmt: skip
    for i in range(2):
        service = RatedService(Channel.ONLINE, f"c{i}", f"b{i}", TOWNSHIP, "430900-XK-0001", None, "clerk-wang")
        ratings.append(rate(service, f"b{i}", 1, "", NOW))
    voided = [ratings[4].rating_id]  # the 非常不满意 of t4 was found malicious
    tickets = [open_rectification(ratings[7], CALENDAR, RectificationPolicy(), NOW.date())]

    by_window = figures(ratings, "window", voided)
    assert by_window == {
        "window-3": {
            "count": 5,
            "levels": {"非常满意": 2, "满意": 2, "基本满意": 1, "不满意": 0, "非常不满意": 0},
            "satisfaction": 1.0,
            "poor": 0,
            "rectification": {},
        }
    }
    by_staff = figures(ratings, "staff", voided, tickets)
    assert by_staff["clerk-li"]["count"] == 5 and "levels" in by_staff["clerk-li"]
    assert by_staff["clerk-wang"] == {"count": 2}  # too few to break down without revealing who rated
    assert STAFF_MIN_FOR_BREAKDOWN > 2
    by_matter = figures(ratings, "matter_code", voided, tickets)
    assert by_matter["430900-XK-0001"]["poor"] == 2
    assert by_matter["430900-XK-0001"]["rectification"] == {"open": 1}
    assert figures(ratings, "node", voided)[TOWNSHIP]["count"] == 7
    text = repr(figures(ratings, "staff")) + repr(figures(ratings, "node"))
    assert not any(secret in text for secret in ("a0", "b1", "t3", "c0"))
    refused("figures_dimension_invalid", ErrorKind.INVALID, figures, ratings, "applicant_key")
