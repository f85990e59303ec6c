"""The kit on the event side: Event Grid delivers at least once and in any order, so an event for another
target or type does nothing, a repeat reads nothing, an older announcement never switches back, a failed
read is tried again on redelivery, and revoked versions stop being a fallback. Drift repairs reload the
restored version only for a consumer that holds the drifted one."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from keyrotation_kit import KeyVaultError
from kit_fakes import (
    R1,
    R2,
    TARGET,
    VAULT,
    A,
    B,
    C,
    Clock,
    D,
    FakeTarget,
    FakeVault,
    announcement,
    make_kit,
    revoked,
    secret_id,
)


def test_an_announced_version_is_read_once_even_by_concurrent_deliveries() -> None:
    vault = FakeVault({A: R1}, delay=0.05)
    kit = make_kit(vault)
    outcomes: list[str] = []
    event = announcement(A)
    threads = [threading.Thread(target=lambda: outcomes.append(kit.handle_event(event))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate"] * 7 + ["switched"]
    assert vault.reads == [A]  # exactly the announced version, never "latest"


def test_other_targets_and_types_are_ignored_with_nothing_read() -> None:
    vault = FakeVault({A: R1})
    kit = make_kit(vault)
    other = announcement(A)
    other["subject"] = f"targets/{TARGET}-admin"  # a prefix collision
    other["data"] = {**other["data"], "targetId": f"{TARGET}-admin"}
    started = {**announcement(A), "id": "started", "type": "KeyRotation.RotationStarted"}
    assert [kit.handle_event(e) for e in (other, started)] == ["ignored", "ignored"]
    assert vault.reads == [] and kit.holder.current() is None


@pytest.mark.parametrize(
    "secret",
    [
        f"https://evil.example.com/secrets/orders-api-key/{B}",
        f"{VAULT}/secrets/billing-api-key/{B}",
        f"{VAULT}/secrets/orders-api-key",
    ],
)
def test_an_announcement_naming_another_vault_or_secret_is_never_read(secret: str) -> None:
    vault = FakeVault({B: R2})
    kit = make_kit(vault)
    assert kit.handle_event(announcement(B, secretId=secret)) == "invalid"
    assert vault.reads == [] and kit.holder.current() is None


def test_a_late_announcement_of_an_older_rotation_never_switches_back() -> None:
    vault = FakeVault({A: R1, B: R2})
    kit = make_kit(vault)
    assert kit.handle_event(announcement(B, R2, "2026-04-01T03:00:05.000Z")) == "switched"
    assert kit.handle_event(announcement(A, R1, "2026-03-01T03:00:05.000Z")) == "stale"
    assert kit.state()["version"] == B and vault.reads == [B]


def test_a_key_read_as_latest_is_not_replaced_by_an_older_rotations_late_announcement() -> None:
    vault = FakeVault({A: R1, B: R2})
    kit = make_kit(vault)
    kit.key()  # latest: B, tagged with R2, no availableAt
    assert kit.handle_event(announcement(A, R1)) == "stale"
    assert kit.state()["version"] == B


def test_a_read_that_failed_is_tried_again_when_the_event_comes_again() -> None:
    vault = FakeVault({A: R1}, down=True)
    kit = make_kit(vault)
    with pytest.raises(KeyVaultError):
        kit.handle_event(announcement(A))
    vault.down = False
    assert kit.handle_event(announcement(A)) == "switched"
    assert kit.handle_event(announcement(A)) == "duplicate"
    assert vault.reads == [A, A]


def test_revoked_versions_are_no_fallback_and_a_revoked_held_key_is_replaced() -> None:
    clock = Clock()
    vault, target = FakeVault({A: R1}), FakeTarget({A})
    kit = make_kit(vault, clock=clock)
    kit.call(target.send, status=int)
    vault.write(B, R2)
    kit.handle_event(announcement(B, R2, "2026-04-01T03:00:05.000Z"))
    assert kit.state()["fallbackVersion"] == A
    assert kit.handle_event(revoked(A)) == "revoked"
    assert kit.state()["fallbackVersion"] is None
    # An emergency revoked the very key held (its event beat the announcement): read latest at once.
    clock.now += 60
    vault.write(C, "orders-api-20260402t030000z-e")
    assert kit.handle_event(revoked(B, rotation="orders-api-20260402t030000z-e")) == "revoked"
    assert kit.state()["version"] == C


def drift(repair: str = "restored", secret: str | None = secret_id(D), previous: str | None = secret_id(A)) -> Any:
    data = {
        "targetId": TARGET,
        "checkId": "drift-20260310t030000z",
        "drift": "value-mismatch" if repair == "restored" else "key-missing-on-target",
        "repair": repair,
        "keyName": "orders-client-20260301t030000z-s",
        "secretId": secret,
        "previousSecretId": previous,
        "rotationId": R1,
        "detectedAt": "2026-03-10T03:00:00.000Z",
        "detail": "...",
    }
    return {"id": f"drift-{repair}", "type": "KeyRotation.DriftDetected", "subject": f"targets/{TARGET}", "data": data}


def test_drift_repair_reloads_the_restored_version_for_the_holder_of_the_drifted_one() -> None:
    vault = FakeVault({A: R1, D: R1})
    kit = make_kit(vault)
    assert kit.handle_event(announcement(A)) == "switched"
    assert kit.handle_event(drift()) == "reloaded"
    held = kit.holder.current()
    assert held is not None and held.version == D and held.rotation_id == R1
    assert vault.reads == [A, D] and kit.state()["fallbackVersion"] is None  # the drifted version is disabled
    assert kit.handle_event(drift()) == "duplicate" and len(vault.reads) == 2
    # Still the same generation: an older announcement does not switch, the next rotation's does.
    late = {**announcement(A, available_at="2026-02-01T03:00:05.000Z"), "id": "late"}
    assert kit.handle_event(late) == "stale"
    vault.write(B, R2)
    assert kit.handle_event(announcement(B, R2, "2026-06-01T03:00:05.000Z")) == "switched"


def test_drift_repair_of_a_key_no_longer_held_or_of_a_missing_key_changes_nothing() -> None:
    vault = FakeVault({A: R1, B: R2, D: R1})
    kit = make_kit(vault)
    kit.handle_event(announcement(B, R2, "2026-06-01T03:00:05.000Z"))
    assert kit.handle_event(drift()) == "stale"
    assert kit.handle_event(drift("rotation", secret_id(A), None)) == "ignored"
    assert kit.handle_event({**drift(previous=None), "id": "other"}) == "invalid"
    assert kit.state()["version"] == B and vault.reads == [B]


def test_revoking_the_held_key_while_a_refresh_is_in_flight_does_not_deadlock() -> None:
    clock = Clock()
    vault = FakeVault({A: R1})
    kit = make_kit(vault, clock=clock)
    kit.key()
    vault.write(B, R2)
    vault.delay = 0.2
    clock.now += 60
    periodic = threading.Thread(target=kit.refresher.refresh, args=("periodic",))
    periodic.start()
    handled: list[str] = []
    event = threading.Thread(target=lambda: handled.append(kit.handle_event(revoked(A))))
    event.start()
    event.join(timeout=10)
    periodic.join(timeout=10)
    assert handled == ["revoked"] and kit.state()["version"] == B
