"""The kit on the calling side, with fakes for Key Vault, the target and the ack route: a refused call is
retried once with a better key, everyone refused at once causes one Key Vault read, an outage keeps the
cached key and backs off, and the first success with a rotation's key acknowledges it once."""

from __future__ import annotations

import threading

import pytest
from keyrotation_kit import NoKeyError
from kit_fakes import R1, R2, A, B, C, Clock, FakeAck, FakeTarget, FakeVault, announcement, make_kit


def test_a_key_killed_at_once_costs_no_failed_call_when_key_vault_has_the_new_one() -> None:
    clock = Clock()
    vault, target = FakeVault({A: R1}), FakeTarget({A})
    kit = make_kit(vault, clock=clock)
    assert kit.call(target.send, status=int) == 200
    clock.now += 60
    vault.write(B, R2)  # an emergency: the new key is stored, the old one dies, no event has arrived
    target.live = {B}
    assert kit.call(target.send, status=int) == 200
    assert target.seen == [A, A, B]  # refused once, refreshed, retried once with the newest version
    assert vault.reads == [None, None]
    assert kit.state()["version"] == B and kit.state()["counters"]["retries"] == 1


def test_during_an_overlap_a_refused_new_key_falls_back_to_the_previous_one() -> None:
    vault, target = FakeVault({A: R1}), FakeTarget({A})
    kit = make_kit(vault)
    kit.call(target.send, status=int)
    vault.write(B, R2)
    kit.handle_event(announcement(B, R2, "2026-04-01T03:00:05.000Z"))
    # The new key has not reached every instance of the target yet; the old one still works.
    assert kit.call(target.send, status=int) == 200
    assert target.seen[-2:] == [B, A]
    assert kit.state()["fallbackVersion"] == A


def test_everyone_refused_at_once_causes_one_key_vault_read() -> None:
    clock = Clock()
    vault, target = FakeVault({A: R1}), FakeTarget({A})
    kit = make_kit(vault, clock=clock)
    kit.key()
    clock.now += 60
    vault.write(B, R2)
    vault.delay = 0.05
    target.live = {B}
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(kit.call(target.send, status=int))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 20
    assert vault.reads == [None, None]  # the first read, then one refresh for all twenty


def test_a_dead_key_with_nothing_newer_backs_off_instead_of_reading_on_every_call() -> None:
    clock = Clock()
    vault, target = FakeVault({A: R1}), FakeTarget(set())
    kit = make_kit(vault, clock=clock)
    kit.key()
    clock.now += 60
    for _ in range(50):
        assert kit.call(target.send, status=int) == 401
    assert len(vault.reads) == 2  # the first read, one refresh; then the gap holds further reads back
    gaps = []
    for _ in range(6):
        gaps.append(kit.refresher.wait_hint(refused=True))
        clock.now += gaps[-1]
        kit.call(target.send, status=int)
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # it grows
    assert len(vault.reads) == 8


def test_a_key_vault_outage_keeps_the_cached_key_and_backs_off() -> None:
    clock = Clock()
    vault, target = FakeVault({A: R1}), FakeTarget({A})
    kit = make_kit(vault, clock=clock)
    kit.call(target.send, status=int)
    vault.down = True
    clock.now += 10
    assert kit.refresher.refresh("periodic") is None
    assert [kit.call(target.send, status=int) for _ in range(5)] == [200] * 5  # calls never wait on Key Vault
    first_gap = kit.refresher.wait_hint()
    assert kit.refresher.refresh("periodic") is None and len(vault.reads) == 2  # held back: no read
    clock.now += first_gap
    kit.refresher.refresh("periodic")
    assert kit.refresher.wait_hint() > first_gap
    assert "HTTP 503" in str(kit.state()["lastRefreshError"])
    vault.down = False
    vault.write(B, R2)
    clock.now += kit.refresher.wait_hint()
    kit.refresher.refresh("periodic")
    assert kit.state()["version"] == B and kit.state()["lastRefreshError"] is None


def test_a_kit_that_never_read_a_key_says_why_without_a_value() -> None:
    vault = FakeVault({A: R1}, down=True)
    kit = make_kit(vault)
    with pytest.raises(NoKeyError, match="HTTP 503"):
        kit.key()


def test_the_first_success_with_a_rotations_key_acknowledges_it_once() -> None:
    vault, target, ack = FakeVault({A: None}), FakeTarget({A}), FakeAck()  # the operator's first key
    kit = make_kit(vault, ack)
    kit.call(target.send, status=int)
    vault.write(B, R2)
    kit.handle_event(announcement(B, R2, "2026-04-01T03:00:05.000Z"))
    kit.acks.flush()
    assert ack.calls == [], "no ack before a call has worked with the new key"
    target.live = {B}
    for _ in range(5):
        kit.call(target.send, status=int)
    kit.acks.flush()
    assert ack.calls == [R2]
    assert kit.state()["ack"] | {"at": None} == {
        "rotationId": R2, "status": "acknowledged", "attempts": 1, "httpStatus": 202, "at": None, "error": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("statuses", "expected", "attempts"),
    [((503, 429, 202), "acknowledged", 3), ((403,), "refused", 1), ((401, 202), "acknowledged", 2)],
)
def test_the_ack_retries_what_a_retry_can_change(statuses: tuple[int, ...], expected: str, attempts: int) -> None:
    vault, target, ack = FakeVault({B: R2}), FakeTarget({B}), FakeAck(*statuses)
    kit = make_kit(vault, ack)
    kit.call(target.send, status=int)
    kit.acks.flush()
    record = kit.state()["ack"]
    assert (record["status"], record["attempts"], len(ack.calls)) == (expected, attempts, attempts)


def test_a_409_right_after_the_announcement_is_retried_later_ones_are_final() -> None:
    clock = Clock()
    ack = FakeAck(409, 409, 409, 409)
    kit = make_kit(FakeVault({B: R2}), ack, clock, ack_delays=(0.0, 0.0, 0.0))
    kit.acks.grace = 0.0  # as if the grace had passed: a 409 is final at once
    kit.call(FakeTarget({B}).send, status=int)
    kit.acks.flush()
    assert kit.state()["ack"]["status"] == "refused" and len(ack.calls) == 1
    early = make_kit(FakeVault({B: R2}), FakeAck(409, 409, 202), Clock())
    early.call(FakeTarget({B}).send, status=int)
    early.acks.flush()
    assert early.state()["ack"]["status"] == "acknowledged" and early.state()["ack"]["attempts"] == 3


def test_a_success_with_the_fallback_key_acknowledges_nothing() -> None:
    vault, target, ack = FakeVault({A: R1}), FakeTarget({A}), FakeAck()
    kit = make_kit(vault, ack)
    kit.call(target.send, status=int)
    kit.acks.flush()
    vault.write(C, R2)
    kit.handle_event(announcement(C, R2, "2026-04-01T03:00:05.000Z"))
    kit.call(target.send, status=int)  # C refused, A accepted: R2's key has not worked yet
    kit.acks.flush()
    assert ack.calls == [R1]
