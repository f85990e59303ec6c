"""Timer-trigger schedules as the Functions host reads them: NCRONTAB (6 or 5 fields) or a TimeSpan.

The host evaluates schedules in UTC (no WEBSITE_TIME_ZONE here). NCRONTAB matches day-of-month
AND day-of-week when both are restricted, unlike classic cron's OR; we follow NCRONTAB.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, start=1)}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_SETTING_REF = re.compile(r"%([^%]+)%")
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?$")
_SEARCH_LIMIT = timedelta(days=366 * 5)  # NCRONTAB gives up after a few years too


class ScheduleError(ValueError):
    """A schedule that cannot be parsed, or names an app setting that is not set."""


class Schedule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (aware UTC)."""
        ...


def resolve_settings(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace ``%NAME%`` with the app setting NAME, as the host does anywhere in a schedule."""
    env = os.environ if environ is None else environ

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        value = env.get(name)
        if value is None or not value.strip():
            raise ScheduleError(f"schedule refers to app setting '{name}', which is not set")
        return value.strip()

    return _SETTING_REF.sub(lookup, text)


def _parse_value(token: str, names: dict[str, int], field: str) -> int:
    upper = token.upper()
    if upper in names:
        return names[upper]
    if not token.isdigit():
        raise ScheduleError(f"invalid {field} value '{token}'")
    return int(token)


def _parse_field(text: str, low: int, high: int, field: str, names: dict[str, int] | None = None) -> frozenset:
    names = names or {}
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"empty item in {field} field '{text}'")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"invalid step '{step_text}' in {field} field")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _parse_value(first, names, field), _parse_value(last, names, field)
        else:
            start = _parse_value(base, names, field)
            end = high if step_text else start  # NCRONTAB: "a/n" runs from a to the field's maximum
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ScheduleError(f"{field} value out of range in '{part}' (allowed {low}-{high})")
        values.update(range(start, end + 1, step))
    if field == "day-of-week" and 7 in values:  # some writers use 7 for Sunday
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression with seconds: second minute hour day month day-of-week."""

    expression: str
    seconds: frozenset
    minutes: frozenset
    hours: frozenset
    days: frozenset
    months: frozenset
    weekdays: frozenset  # 0 = Sunday

    def _day_matches(self, day: date) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python: Monday = 0; NCRONTAB: Sunday = 0
        return day.month in self.months and day.day in self.days and weekday in self.weekdays

    def next_after(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC).replace(microsecond=0)
        day = moment.date()
        limit = day + _SEARCH_LIMIT
        hours, minutes, seconds = sorted(self.hours), sorted(self.minutes), sorted(self.seconds)
        while day <= limit:
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        for s in seconds:
                            candidate = datetime(day.year, day.month, day.day, h, m, s, tzinfo=UTC)
                            if candidate > moment:
                                return candidate
            day += timedelta(days=1)
        raise ScheduleError(f"schedule '{self.expression}' never occurs")


@dataclass(frozen=True)
class IntervalSchedule:
    """A TimeSpan schedule (``hh:mm:ss``): fires every interval, counted from the last run."""

    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment.astimezone(UTC) + self.interval


def parse_schedule(text: str, environ: dict[str, str] | None = None) -> CronSchedule | IntervalSchedule:
    """Parse a timer-trigger schedule after resolving ``%SETTING%`` references."""
    expression = resolve_settings(text, environ).strip()
    span = _TIMESPAN.match(expression)
    if span:
        d, h, m, s = (int(g) if g else 0 for g in span.groups())
        if h > 23 or m > 59 or s > 59:
            raise ScheduleError(f"invalid TimeSpan schedule '{expression}'")
        interval = timedelta(days=d, hours=h, minutes=m, seconds=s)
        if interval <= timedelta(0):
            raise ScheduleError(f"TimeSpan schedule '{expression}' must be positive")
        return IntervalSchedule(expression, interval)
    fields = expression.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"schedule '{expression}' must have 6 NCRONTAB fields (second minute hour day month "
            "day-of-week), 5 fields, or be a TimeSpan hh:mm:ss"
        )
    sec, minute, hour, day, month, dow = fields
    return CronSchedule(
        expression=expression,
        seconds=_parse_field(sec, 0, 59, "second"),
        minutes=_parse_field(minute, 0, 59, "minute"),
        hours=_parse_field(hour, 0, 23, "hour"),
        days=_parse_field(day, 1, 31, "day"),
        months=_parse_field(month, 1, 12, "month", _MONTHS),
        weekdays=_parse_field(dow, 0, 7, "day-of-week", _DAYS),
    )
