"""The tick's start pacing (rotation/pacing.py): a token bucket on virtual time that keeps every phase of
the rotations it starts under half of each published limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rotation import pacing

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def test_the_default_pace_is_the_tightest_limit_log_analytics_query_rate() -> None:
    pace = pacing.default_pace()
    # 200 queries per 30 s per user, half of it, four queries per rotation: 50 starts a minute, 25 at once.
    assert round(pace.per_second * 60, 6) == 50
    assert pace.burst == 25
    for limit in pacing.LIMITS:
        assert pace.per_second * limit.calls_per_rotation <= pacing.SHARE * limit.per_second + 1e-9
        assert pace.burst * limit.calls_per_rotation <= pacing.SHARE * limit.burst


def test_an_operator_rate_is_bounded_and_anything_unreadable_means_the_default() -> None:
    assert pacing.pace("600") == pacing.Pace(10.0, 25.0)
    for bad in (None, "", "fast", "0", "-5", "nan", "inf", "6001"):
        assert pacing.pace(bad) == pacing.default_pace(), bad


def test_a_full_bucket_lets_a_burst_through_then_one_start_per_token() -> None:
    pace = pacing.Pace(per_second=0.5, burst=3)
    bucket = pacing.StartBucket.from_json(None, pace, T0)
    for _ in range(3):
        assert bucket.wait(pace, "t") == timedelta(0)
        bucket = bucket.take()
    wait = bucket.wait(pace, "t")
    assert timedelta(seconds=2) <= wait < timedelta(seconds=2 * (1 + pacing.JITTER))
    later = bucket.refilled(pace, T0 + wait)
    assert later.wait(pace, "t") == timedelta(0)


def test_a_bucket_never_holds_more_than_its_burst_and_survives_its_json() -> None:
    pace = pacing.Pace(per_second=1, burst=4)
    bucket = pacing.StartBucket(0, T0).refilled(pace, T0 + timedelta(hours=1))
    assert bucket.tokens == 4
    again = pacing.StartBucket.from_json(bucket.take().to_json(), pace, T0)
    assert again == pacing.StartBucket(3, T0 + timedelta(hours=1))


def test_jitter_is_fixed_per_target_and_differs_across_targets() -> None:
    values = {pacing.jitter(f"target-{i}") for i in range(50)}
    assert len(values) == 50 and all(0 <= v < pacing.JITTER for v in values)
    assert pacing.jitter("target-1") == pacing.jitter("target-1")
