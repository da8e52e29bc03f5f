"""Working-day calendar for time limits: Chinese public holidays and adjusted working days (调休).

This module owns deciding whether a date is a working day, counting working days for deadlines,
moving a deadline after a 补正 (supplement) pause, and the deadline warning levels (预警 / 黄牌 / 红牌).
Official tables come from ``chinese_calendar``; an override table lets operators add or correct a
year (the State Council publishes each year's arrangement in late autumn) without a package release.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import chinese_calendar

from node.domain.errors import DomainError

__all__ = [
    "RED",
    "WARNING",
    "YELLOW",
    "WorkingDayCalendar",
    "warning_level",
]

WARNING = "warning"  # 预警
YELLOW = "yellow"  # 黄牌
RED = "red"  # 红牌

_ONE_DAY = timedelta(days=1)


def _as_date(d: date) -> date:
    # A datetime is a date subclass but never equals a date, so set lookups would silently miss.
    return d.date() if isinstance(d, datetime) else d


@lru_cache(maxsize=8192)
def _official_is_workday(d: date) -> bool | None:
    # Cached: chinese_calendar rescans its whole table for the supported year range on every call,
    # and deadline scans ask about the same few hundred days over and over.
    try:
        return bool(chinese_calendar.is_workday(d))
    except NotImplementedError:
        return None


def _parse_day(text: Any) -> date:
    try:
        if not isinstance(text, str) or len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise DomainError(
            "workday_table_format",
            f"工作日调整表中的日期格式错误：{text!r}（应为YYYY-MM-DD）",
            f"Bad date in the working-day table: {text!r} (expected YYYY-MM-DD)",
        ) from None


class WorkingDayCalendar:
    """Official holiday tables plus operator overrides; Monday to Friday where no table covers the year.

    An override wins over the official table: ``holidays`` are days off, ``workdays`` are extra
    (adjusted) working days, typically a weekend day worked to bridge a holiday.
    """

    def __init__(self, holidays: Iterable[date] = (), workdays: Iterable[date] = ()) -> None:
        self.holidays: frozenset[date] = frozenset(_as_date(d) for d in holidays)
        self.workdays: frozenset[date] = frozenset(_as_date(d) for d in workdays)
        both = self.holidays & self.workdays
        if both:
            listed = ", ".join(d.isoformat() for d in sorted(both))
            raise DomainError(
                "workday_table_conflict",
                f"同一日期不能既是节假日又是调休工作日：{listed}",
                f"A date cannot be both a holiday and a working day: {listed}",
            )

    # --- the override table ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> WorkingDayCalendar:
        if not isinstance(table, Mapping) or set(table) - {"holidays", "workdays"}:
            raise DomainError(
                "workday_table_format",
                "工作日调整表只能包含 holidays 和 workdays 两个日期列表",
                'The working-day table may only hold two date lists, "holidays" and "workdays"',
            )
        lists = {key: table.get(key, []) for key in ("holidays", "workdays")}
        for key, days in lists.items():
            if not isinstance(days, list):
                raise DomainError(
                    "workday_table_format",
                    f"工作日调整表中的 {key} 应为日期列表",
                    f'"{key}" in the working-day table must be a list of dates',
                )
        return cls(
            holidays=[_parse_day(d) for d in lists["holidays"]],
            workdays=[_parse_day(d) for d in lists["workdays"]],
        )

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "holidays": [d.isoformat() for d in sorted(self.holidays)],
            "workdays": [d.isoformat() for d in sorted(self.workdays)],
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> WorkingDayCalendar:
        """Load an override table file: {"holidays": ["2027-01-01", ...], "workdays": [...]}."""
        try:
            table = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DomainError(
                "workday_table_format",
                f"工作日调整表不是有效的JSON：{exc}",
                f"The working-day table is not valid JSON: {exc}",
            ) from None
        return cls.from_dict(table)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the overrides (not the official tables) in the format ``from_json`` reads."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @staticmethod
    def covered_years() -> tuple[int, ...]:
        """Years for which ``chinese_calendar`` has an official table; other years use overrides or Mon-Fri."""
        years = [d.year for d in chinese_calendar.holidays]
        return tuple(range(min(years), max(years) + 1))

    # --- questions --------------------------------------------------------------------------------------

    def is_working_day(self, d: date) -> bool:
        d = _as_date(d)
        if d in self.holidays:
            return False
        if d in self.workdays:
            return True
        official = _official_is_workday(d)
        return d.weekday() < 5 if official is None else official

    def add_working_days(self, start: date, n: int) -> date:
        """The deadline: the n-th working day after ``start`` (``start`` itself does not count; n=0 is ``start``)."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        d = _as_date(start)
        while n > 0:
            d += _ONE_DAY
            if self.is_working_day(d):
                n -= 1
        return d

    def working_days_between(self, a: date, b: date) -> int:
        """Working days in (a, b]; if b < a, minus the working days in (b, a]."""
        a, b = _as_date(a), _as_date(b)
        if b < a:
            return -self.working_days_between(b, a)
        count = 0
        d = a
        while d < b:
            d += _ONE_DAY
            count += self.is_working_day(d)
        return count

    def remaining_after_pause(self, deadline: date, paused_on: date, resumed_on: date) -> date:
        """The deadline after the clock was stopped for 补正 from ``paused_on`` to ``resumed_on``.

        The working days left at the pause, those in (paused_on, deadline], are granted again from
        ``resumed_on``. Equivalently the deadline moves later by the working days in
        (paused_on, resumed_on], which is how it is computed: that form also holds when no working
        day was left (paused on the deadline itself), and a pause spanning no working day changes
        nothing. A pause that starts after the deadline does not cure the lateness: the deadline stays.
        """
        deadline, paused_on, resumed_on = _as_date(deadline), _as_date(paused_on), _as_date(resumed_on)
        if resumed_on < paused_on:
            raise DomainError(
                "pause_resumed_before_paused",
                "恢复计时的日期早于暂停计时的日期",
                "The clock cannot resume before it was paused",
            )
        if paused_on > deadline:
            return deadline
        return self.add_working_days(deadline, self.working_days_between(paused_on, resumed_on))


def warning_level(
    deadline: date,
    today: date,
    calendar: WorkingDayCalendar,
    warn_days: int = 2,
    red_after: int = 5,
) -> str | None:
    """The supervision level of a case with this deadline, as seen on ``today``.

    - ``None``: more than ``warn_days`` working days remain after today.
    - ``"warning"`` (预警): not yet late, at most ``warn_days`` working days remain after today
      (the deadline day itself included; on the deadline day 0 remain).
    - ``"yellow"`` (黄牌): late, overdue by fewer than ``red_after`` working days, i.e. 1 to
      red_after−1 working days in (deadline, today] — or 0, when only rest days have passed since
      a missed deadline: the deadline was still missed.
    - ``"red"`` (红牌): overdue by ``red_after`` working days or more.
    """
    if warn_days < 0 or red_after < 1:
        raise ValueError(f"need warn_days >= 0 and red_after >= 1, got {warn_days}, {red_after}")
    deadline, today = _as_date(deadline), _as_date(today)
    if today > deadline:
        overdue = calendar.working_days_between(deadline, today)
        return RED if overdue >= red_after else YELLOW
    if calendar.working_days_between(today, deadline) <= warn_days:
        return WARNING
    return None
