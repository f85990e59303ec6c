"""Timer-trigger schedules as the Functions host reads them: NCRONTAB (6 or 5 fields) or a TimeSpan.

The host parses schedules with NCrontab (atifaziz/NCrontab, ``CrontabSchedule`` with seconds) and
evaluates them in UTC (no WEBSITE_TIME_ZONE here). croniter does the expansion and the search for the
next occurrence; this module keeps what NCRONTAB does differently, so a schedule behaves here as it
would in Azure (docs/devhost.md, "Timer schedules"):

- seconds come first in six fields (croniter: ``second_at_beginning``); five fields fire at second 0;
- day-of-month AND day-of-week must both match when both are restricted (croniter: ``day_or=False``);
- names are matched by case-insensitive prefix of the full English name ("Mon", "Monday", "J" for
  January), where croniter knows only three-letter names: they are turned into numbers first;
- "a-a" is the single value a and "b-a" with b > a the range a-b (NCrontab swaps the bounds), where
  croniter reads both as wrapping cycles;
- day-of-week is 0-6 (Sunday = 0); NCrontab refuses 7, and so do we;
- only ``*``, lists, ranges and steps: croniter's extensions (L, W, #, ?, H, @daily, a seventh year
  field) are refused, since the host would refuse them at startup;
- ``%NAME%`` app-setting references and TimeSpan schedules (``hh:mm:ss``) are the host's, not cron's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from croniter import CroniterBadDateError, CroniterError, croniter

_MONTH_NAMES = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
# name, lowest, highest, value names (index + lowest), as NCrontab's CrontabFieldImpl declares them
_FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 6, _DAY_NAMES),
)
_ITEM = re.compile(r"^(?:\*|(\d+)(?:-(\d+))?)(?:/(\d+))?$")  # *, a, a-b, each with an optional /step
_SETTING_REF = re.compile(r"%([^%]+)%")
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?$")
_SEARCH_YEARS = 5  # NCRONTAB gives up after a few years too


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


def _name_to_number(word: str, names: tuple[str, ...], low: int, field: str) -> str:
    """NCrontab's ParseValue: the first name that ``word`` is a case-insensitive prefix of."""
    for index, name in enumerate(names):
        if name.startswith(word.lower()):
            return str(index + low)
    raise ScheduleError(f"invalid {field} value '{word}'")


def _ncrontab_item(item: str, field: str, low: int, high: int, names: tuple[str, ...]) -> str:
    """One list item in croniter's spelling with NCrontab's meaning (see the module docstring)."""
    numeric = re.sub(r"[A-Za-z]+", lambda m: _name_to_number(m.group(), names, low, field), item)
    match = _ITEM.match(numeric)
    if not match:
        raise ScheduleError(f"'{item}' in the {field} field is not NCRONTAB syntax (*, a, a-b, a/n, a-b/n)")
    first, last, step = match.groups()
    if any(v is not None and not low <= int(v) <= high for v in (first, last)):
        raise ScheduleError(f"{field} value out of range in '{item}' (allowed {low}-{high})")
    if first is not None and last is not None:
        a, b = sorted((int(first), int(last)))
        return str(a) if a == b else f"{a}-{b}" + (f"/{step}" if step else "")
    return numeric


@dataclass(frozen=True)
class CronSchedule:
    """A parsed NCRONTAB expression with seconds: second minute hour day month day-of-week."""

    expression: str
    croniter_expression: str  # the same schedule in croniter's spelling, seconds first

    def next_after(self, moment: datetime) -> datetime:
        start = moment.astimezone(UTC).replace(microsecond=0)
        try:
            found = _croniter(self.croniter_expression, start).get_next(datetime)
        except CroniterBadDateError:
            raise ScheduleError(f"schedule '{self.expression}' never occurs") from None
        return found.astimezone(UTC)


def _croniter(expression: str, start: datetime) -> croniter:
    return croniter(expression, start, second_at_beginning=True, day_or=False, max_years_between_matches=_SEARCH_YEARS)


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
    spelled = [
        ",".join(_ncrontab_item(item, name, low, high, names) for item in text_field.split(","))
        for text_field, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
    ]
    schedule = CronSchedule(expression, " ".join(spelled))
    try:
        _croniter(schedule.croniter_expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CroniterError as exc:
        raise ScheduleError(f"invalid schedule '{expression}': {exc}") from None
    return schedule
