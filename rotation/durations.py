"""ISO 8601 durations as the policy writes them (`P30D`, `PT12H`, `P1DT6H`), and UTC timestamps.

Only fixed-length units are accepted: weeks, days, hours, minutes, seconds. Months and years have no
fixed length, so an interval of `P1M` would make "when is this key due" depend on the calendar.
Nothing longer than 100 years (MAX_DURATION) is a duration here: `timedelta` cannot hold
`PT99999999999999999999S` (OverflowError), and a date plus anything much longer leaves `datetime`'s range.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

DURATION_PATTERN = r"^P(?!$)(?:\d+W)?(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$"
_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_CALENDAR_UNITS = re.compile(r"^P(?:\d+Y)|^P(?:\d+Y)?\d+M")


MAX_DURATION = timedelta(days=36500)
MAX_DURATION_TEXT = "P36500D"


class DurationError(ValueError):
    """Not an ISO 8601 duration this product accepts; the message says what is allowed."""


def parse_duration(text: str) -> timedelta:
    """`P1DT6H` -> timedelta(days=1, hours=6). Raises DurationError for anything else."""
    if not isinstance(text, str):
        raise DurationError("must be an ISO 8601 duration string such as P30D or PT12H")
    match = _DURATION.match(text)
    if not match:
        if _CALENDAR_UNITS.match(text):
            raise DurationError(f"{text!r}: months and years have no fixed length; use days (e.g. P30D)")
        raise DurationError(f"{text!r} is not an ISO 8601 duration such as P30D, PT12H or P1DT6H")
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    try:
        value = timedelta(**parts)
    except OverflowError:  # never repeat the text: it can be 16 KiB of digits
        raise DurationError(f"must be at most {MAX_DURATION_TEXT} (100 years)") from None
    if value > MAX_DURATION:
        raise DurationError(f"must be at most {MAX_DURATION_TEXT} (100 years)")
    return value


def format_duration(value: timedelta) -> str:
    """The canonical ISO 8601 text of a duration (days, hours, minutes, seconds): P1DT6H, PT0S."""
    if value < timedelta(0):
        raise DurationError("durations are never negative")
    total = value.total_seconds()
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    date = f"{int(days)}D" if days else ""
    time = ""
    if hours:
        time += f"{int(hours)}H"
    if minutes:
        time += f"{int(minutes)}M"
    if seconds:
        time += f"{seconds:g}S"
    if not date and not time:
        return "PT0S"
    return f"P{date}" + (f"T{time}" if time else "")


def describe(value: timedelta) -> str:
    """A duration for people, in error messages: '30 days', '6 hours', '90 minutes', '0 seconds'."""
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def as_utc(value: datetime) -> datetime:
    """Timestamps are UTC everywhere. A naive datetime is taken as UTC (the Durable SDK's clock is)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z`: what events, tags and statuses carry."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(value: str) -> datetime:
    """The inverse of format_timestamp (any RFC 3339 instant; naive ones are UTC)."""
    return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
