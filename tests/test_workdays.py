"""Working-day calendar: official holidays, 调休, overrides, deadlines, 补正 pauses and warning levels."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.errors import DomainError
from node.domain.workdays import RED, WARNING, YELLOW, WorkingDayCalendar, warning_level

CAL = WorkingDayCalendar()


def test_2024_national_day_holidays_and_adjusted_working_days() -> None:
    for day in range(1, 8):
        assert not CAL.is_working_day(date(2024, 10, day)), f"2024-10-0{day} is a holiday"
    assert CAL.is_working_day(date(2024, 9, 29))  # Sunday, worked (调休)
    assert CAL.is_working_day(date(2024, 10, 12))  # Saturday, worked (调休)
    assert CAL.is_working_day(date(2024, 10, 8))
    assert not CAL.is_working_day(date(2024, 10, 13))  # an ordinary Sunday
    assert CAL.is_working_day(datetime(2024, 9, 29, 15, 30))


def test_add_working_days_over_2024_national_day() -> None:
    assert CAL.add_working_days(date(2024, 9, 27), 1) == date(2024, 9, 29)
    assert CAL.add_working_days(date(2024, 9, 29), 1) == date(2024, 9, 30)
    assert CAL.add_working_days(date(2024, 9, 30), 1) == date(2024, 10, 8)
    assert CAL.add_working_days(date(2024, 9, 30), 5) == date(2024, 10, 12)
    assert CAL.add_working_days(date(2024, 9, 30), 6) == date(2024, 10, 14)
    assert CAL.add_working_days(date(2024, 10, 3), 0) == date(2024, 10, 3)
    with pytest.raises(ValueError):
        CAL.add_working_days(date(2024, 9, 30), -1)


def test_working_days_between() -> None:
    assert CAL.working_days_between(date(2024, 9, 30), date(2024, 10, 12)) == 5
    assert CAL.working_days_between(date(2024, 10, 12), date(2024, 9, 30)) == -5
    assert CAL.working_days_between(date(2024, 10, 1), date(2024, 10, 7)) == 0
    assert CAL.working_days_between(date(2024, 10, 8), date(2024, 10, 8)) == 0


def test_covered_years_and_weekday_fallback() -> None:
    years = WorkingDayCalendar.covered_years()
    assert 2024 in years
    assert 2099 not in years
    assert list(years) == list(range(years[0], years[-1] + 1))
    assert CAL.is_working_day(date(2099, 1, 1))  # a Thursday; no official table → Mon-Fri
    assert not CAL.is_working_day(date(2099, 1, 3))  # Saturday
    assert CAL.add_working_days(date(2099, 1, 2), 1) == date(2099, 1, 5)


def test_overrides_take_effect() -> None:
    cal = WorkingDayCalendar(holidays=[date(2024, 10, 8), date(2099, 1, 1)], workdays=[date(2099, 1, 3)])
    assert not cal.is_working_day(date(2024, 10, 8))
    assert not cal.is_working_day(date(2099, 1, 1))
    assert cal.is_working_day(date(2099, 1, 3))
    assert cal.add_working_days(date(2024, 9, 30), 1) == date(2024, 10, 9)
    assert CAL.is_working_day(date(2024, 10, 8)), "overrides must not leak into other calendars"


def test_conflicting_override_is_rejected() -> None:
    with pytest.raises(DomainError) as info:
        WorkingDayCalendar(holidays=[date(2027, 1, 1)], workdays=[date(2027, 1, 1)])
    assert info.value.code == "workday_table_conflict"


def test_override_file_round_trips_and_takes_effect(tmp_path: Path) -> None:
    path = tmp_path / "workdays.json"
    path.write_text(
        json.dumps({"holidays": ["2099-01-01", "2099-01-02"], "workdays": ["2099-01-04"]}), encoding="utf-8"
    )
    cal = WorkingDayCalendar.from_json(path)
    assert cal.holidays == {date(2099, 1, 1), date(2099, 1, 2)}
    assert cal.workdays == {date(2099, 1, 4)}
    # 2098-12-31 (Wed) + 1: Jan 1-2 are holidays, Jan 3 Saturday, Jan 4 Sunday worked.
    assert cal.add_working_days(date(2098, 12, 31), 1) == date(2099, 1, 4)

    copy = tmp_path / "copy.json"
    cal.to_json(copy)
    assert json.loads(copy.read_text(encoding="utf-8")) == {
        "holidays": ["2099-01-01", "2099-01-02"],
        "workdays": ["2099-01-04"],
    }
    again = WorkingDayCalendar.from_json(copy)
    assert (again.holidays, again.workdays) == (cal.holidays, cal.workdays)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '["2099-01-01"]',
        '{"holidays": "2099-01-01"}',
        '{"holidays": ["2099-13-01"]}',
        '{"holidays": ["20990101"]}',
        '{"holidays": [20990101]}',
        '{"holiday": ["2099-01-01"]}',
    ],
)
def test_bad_override_file_is_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DomainError) as info:
        WorkingDayCalendar.from_json(path)
    assert info.value.code == "workday_table_format"


def test_empty_override_file_means_official_tables(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("{}", encoding="utf-8")
    cal = WorkingDayCalendar.from_json(path)
    assert cal.to_dict() == {"holidays": [], "workdays": []}
    assert not cal.is_working_day(date(2024, 10, 1))


# --- 补正 pause ----------------------------------------------------------------------------------------


def test_pause_over_national_day() -> None:
    # Deadline 2024-10-12; paused 2024-09-30 with 5 working days left (Oct 8-12); resumed Monday Oct 14.
    assert CAL.remaining_after_pause(date(2024, 10, 12), date(2024, 9, 30), date(2024, 10, 14)) == date(2024, 10, 21)
    # A pause over the holiday alone consumes no working day.
    assert CAL.remaining_after_pause(date(2024, 10, 12), date(2024, 9, 30), date(2024, 10, 7)) == date(2024, 10, 12)
    # Paused on the deadline with nothing left, resumed Wednesday: the deadline is the resumption day.
    assert CAL.remaining_after_pause(date(2024, 10, 14), date(2024, 10, 14), date(2024, 10, 16)) == date(2024, 10, 16)
    # A pause that starts after the deadline does not cure the lateness.
    assert CAL.remaining_after_pause(date(2024, 10, 8), date(2024, 10, 10), date(2024, 10, 20)) == date(2024, 10, 8)
    with pytest.raises(DomainError) as info:
        CAL.remaining_after_pause(date(2024, 10, 12), date(2024, 10, 9), date(2024, 10, 8))
    assert info.value.code == "pause_resumed_before_paused"


starts = st.dates(min_value=date(2023, 1, 1), max_value=date(2027, 12, 31))  # spans official and fallback years


@given(
    starts,
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=40),
)
def test_pause_law(start: date, limit: int, pause_offset: int, k: int) -> None:
    deadline = CAL.add_working_days(start, limit)
    paused_on = min(start + timedelta(days=pause_offset), deadline)
    resumed_on = paused_on + timedelta(days=k)
    new = CAL.remaining_after_pause(deadline, paused_on, resumed_on)

    assert new >= deadline
    spanned = CAL.working_days_between(paused_on, resumed_on)
    if spanned == 0:
        assert new == deadline
    assert CAL.working_days_between(deadline, new) == spanned
    left = CAL.working_days_between(paused_on, deadline)
    if left > 0:
        # The working days left at the pause are granted again from the resumption.
        assert new == CAL.add_working_days(resumed_on, left)
        assert CAL.working_days_between(resumed_on, new) == left


@given(starts, st.integers(min_value=0, max_value=40))
def test_working_days_between_inverts_add_working_days(start: date, n: int) -> None:
    end = CAL.add_working_days(start, n)
    assert CAL.working_days_between(start, end) == n
    assert CAL.working_days_between(end, start) == -n
    assert n == 0 or CAL.is_working_day(end)


# --- warning levels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "level"),
    [
        (date(2024, 9, 30), None),  # 5 working days left
        (date(2024, 10, 9), None),  # 3 left: Oct 10, 11, 12
        (date(2024, 10, 10), WARNING),  # 2 left
        (date(2024, 10, 12), WARNING),  # deadline day
        (date(2024, 10, 13), YELLOW),  # missed; only a Sunday has passed
        (date(2024, 10, 14), YELLOW),  # overdue 1
        (date(2024, 10, 17), YELLOW),  # overdue 4
        (date(2024, 10, 18), RED),  # overdue 5
        (date(2024, 12, 31), RED),
    ],
)
def test_warning_levels(today: date, level: str | None) -> None:
    assert warning_level(date(2024, 10, 12), today, CAL) == level


def test_warning_level_thresholds_are_parameters() -> None:
    deadline = date(2024, 10, 12)
    assert warning_level(deadline, date(2024, 10, 9), CAL, warn_days=3) == WARNING
    assert warning_level(deadline, date(2024, 10, 10), CAL, warn_days=0) is None
    assert warning_level(deadline, date(2024, 10, 12), CAL, warn_days=0) == WARNING
    assert warning_level(deadline, date(2024, 10, 14), CAL, red_after=1) == RED
    assert warning_level(deadline, date(2024, 10, 13), CAL, red_after=1) == YELLOW
