"""Timer schedules: NCRONTAB (6 and 5 fields), TimeSpan, %SETTING% references."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devhost.ncrontab import IntervalSchedule, ScheduleError, parse_schedule

T0 = datetime(2026, 3, 14, 10, 20, 30, tzinfo=UTC)  # a Saturday


def occurrences(expression: str, start: datetime, count: int) -> list[datetime]:
    schedule, found, moment = parse_schedule(expression, {}), [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        found.append(moment)
    return found


def test_six_fields_start_with_seconds() -> None:
    assert occurrences("*/15 * * * * *", T0, 3) == [
        T0.replace(second=45),
        T0.replace(minute=21, second=0),
        T0.replace(minute=21, second=15),
    ]


def test_five_fields_fire_at_second_zero() -> None:
    assert occurrences("0 */6 * * *", T0, 2) == [
        T0.replace(hour=12, minute=0, second=0),
        T0.replace(hour=18, minute=0, second=0),
    ]


def test_next_is_strictly_after_the_given_moment() -> None:
    on_the_dot = T0.replace(minute=0, second=0)
    assert parse_schedule("0 0 * * * *", {}).next_after(on_the_dot) == on_the_dot + timedelta(hours=1)


def test_lists_ranges_steps_and_names() -> None:
    # 09:30 on weekdays Monday-Friday: the Saturday start rolls to Monday
    assert occurrences("0 30 9 * * MON-FRI", T0, 2) == [
        datetime(2026, 3, 16, 9, 30, tzinfo=UTC),
        datetime(2026, 3, 17, 9, 30, tzinfo=UTC),
    ]
    assert occurrences("0 0 0 1 JAN,jul *", T0, 2) == [
        datetime(2026, 7, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    ]
    assert occurrences("0 5/20 10 * * *", T0, 2) == [T0.replace(minute=25, second=0), T0.replace(minute=45, second=0)]


def test_day_of_month_and_day_of_week_must_both_match() -> None:
    # NCRONTAB semantics (AND): the next Friday the 13th after 2026-03-14 is 2026-11-13
    assert occurrences("0 0 0 13 * FRI", T0, 1) == [datetime(2026, 11, 13, tzinfo=UTC)]


def test_sunday_is_zero_and_seven_is_refused_as_the_host_refuses_it() -> None:
    # NCrontab's day-of-week field is 0-6; croniter would take 7 for Sunday, Azure would not start
    assert occurrences("0 0 12 * * 0", T0, 1) == [datetime(2026, 3, 15, 12, tzinfo=UTC)]
    with pytest.raises(ScheduleError, match=r"day-of-week value out of range in '7' \(allowed 0-6\)"):
        parse_schedule("0 0 12 * * 7", {})


def test_names_match_by_prefix_of_the_full_name_in_any_case() -> None:
    # NCrontab: "Monday", "mon" and "Mo" are all Monday; "J" is the first month it prefixes, January
    for spelling in ("Monday", "mon", "Mo"):
        assert occurrences(f"0 0 9 * * {spelling}", T0, 1) == [datetime(2026, 3, 16, 9, tzinfo=UTC)]
    assert occurrences("0 0 0 1 J *", T0, 1) == [datetime(2027, 1, 1, tzinfo=UTC)]
    with pytest.raises(ScheduleError, match="invalid day-of-week value 'Mondays'"):
        parse_schedule("0 0 9 * * Mondays", {})


def test_an_equal_range_is_one_value_and_a_reversed_range_is_swapped() -> None:
    # croniter reads "5-5" as the whole cycle and "12-10" as wrapping past midnight; NCrontab does not
    assert occurrences("0 0 5-5 * * *", T0, 2) == [
        datetime(2026, 3, 15, 5, tzinfo=UTC),
        datetime(2026, 3, 16, 5, tzinfo=UTC),
    ]
    assert occurrences("0 0 12-10 * * *", T0, 3) == [
        T0.replace(hour=11, minute=0, second=0),
        T0.replace(hour=12, minute=0, second=0),
        datetime(2026, 3, 15, 10, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    "extension",
    ["0 0 0 L * *", "0 0 0 15W * *", "0 0 0 * * 5#2", "0 0 0 ? * MON", "H 0 0 * * *", "@daily", "0 0 0 1 1 * 2027"],
)
def test_cron_extensions_the_host_refuses_are_refused(extension: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(extension, {})


def test_timespan_schedules_count_from_the_last_run() -> None:
    schedule = parse_schedule("00:05:00", {})
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(T0) == T0 + timedelta(minutes=5)
    assert parse_schedule("1.02:00:00", {}).next_after(T0) == T0 + timedelta(days=1, hours=2)


def test_setting_references_resolve_anywhere() -> None:
    partial = parse_schedule("0 %MINUTE% %HOUR% * * *", {"MINUTE": "45", "HOUR": "10"})
    assert partial.next_after(T0) == T0.replace(minute=45, second=0)
    schedule = parse_schedule("%ROTATION_SCHEDULE%", {"ROTATION_SCHEDULE": "0 0 3 * * *"})
    assert schedule.next_after(T0) == datetime(2026, 3, 15, 3, tzinfo=UTC)


def test_missing_setting_is_named_in_the_error() -> None:
    with pytest.raises(ScheduleError, match="ROTATION_SCHEDULE"):
        parse_schedule("%ROTATION_SCHEDULE%", {})


@pytest.mark.parametrize(
    "bad", ["* * * *", "61 * * * * *", "* * 24 * * *", "0 0 0 0 * *", "*/0 * * * * *", "0 0 0 * FOO *", "25:00:00"]
)
def test_invalid_schedules_are_refused(bad: str) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(bad, {})


def test_a_date_that_never_exists_is_reported() -> None:
    with pytest.raises(ScheduleError, match="never occurs"):
        parse_schedule("0 0 0 31 FEB *", {}).next_after(T0)
