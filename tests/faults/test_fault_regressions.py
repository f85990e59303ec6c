"""Regression tests for bugs the fault campaign found (tools/fault_campaign.py), each named after the
fault. Real orchestrator, scripted activities on devhost with a virtual clock (tests/rotation_app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.devhost.test_call_discipline_orchestration import published, retry_waits
from tests.integration.devhost.test_drift_scheduler import due, tick
from tests.integration.devhost.test_orchestration_lifecycle import (
    PROVISIONED,
    Scripted,
    run,  # noqa: F401 - the fixture
    scripted_host,
    steps,
)
from tests.rotation_harness import Host


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Host, Path, Path]]:
    """A host process, unlike the branch tests': the fault regressions keep end-to-end fidelity."""
    yield from scripted_host(tmp_path_factory, in_process=False)


EVENT_GRID_DOWN = "publish 2 event(s): HttpResponseError HTTP 503 Service Unavailable"
STEP = {"attempts": 4, "firstInterval": "PT10S", "backoff": 2, "maxInterval": "PT1M"}


def test_event_grid_503_at_the_last_publish_still_delivers_rotation_failed(run: Scripted) -> None:  # noqa: F811
    """Seed 20261122 #1: the probe never gave a verdict, the rotation failed, and Event Grid answered 503
    to every try of the last publish: RotationFailed was never sent (the last publish had no retry)."""
    run.use(
        verify_new_key=[{"raise": "probe of demo-orders no verdict after 4 attempt(s) (last: GET /api/ping -> 503)"}],
        publish_events=[{"raise": EVENT_GRID_DOWN}, {"raise": EVENT_GRID_DOWN}, {"published": []}],
    )
    instance = run.start(calls={"step": STEP})
    status = run.durable.wait(instance, timeout=60)

    assert status["output"]["outcome"] == "failed", status["output"]
    failed = [e for e in published(run) if e["type"].endswith("RotationFailed")]
    assert len(failed) == 1 and failed[0]["data"]["stage"] == "verify"
    assert len(run.calls("publish_events")) == 3
    # Retried on the target's step budget: 10 s, then 20 s (verify's own retry timers come first).
    assert retry_waits(run.durable.history(instance))[-2:] == [10, 20]


def test_event_grid_down_for_good_at_the_last_publish_ends_with_the_reason_in_the_status(
    run: Scripted,  # noqa: F811
    host: Any,
) -> None:
    """When even the retries fail, nobody can be told by event: the status and the log say so."""
    run.use(
        verify_new_key=[{"raise": "probe of demo-orders no verdict after 4 attempt(s) (last: GET /api/ping -> 503)"}],
        publish_events=[{"raise": EVENT_GRID_DOWN}],
    )
    instance = run.start(calls={"step": STEP})
    status = run.durable.wait(instance, timeout=60)

    assert status["output"]["outcome"] == "failed"
    assert len(run.calls("publish_events")) == STEP["attempts"]
    announce = [s for s in status["customStatus"]["steps"] if s["step"] == "announce"]
    assert announce and announce[-1]["status"] == "failed" and "HTTP 503" in announce[-1]["detail"]
    assert ("verify", "failed") in steps(status)


def test_keyvault_list_429_at_the_tick_reads_the_target_again_instead_of_skipping_it_for_a_day(
    run: Scripted,  # noqa: F811
) -> None:
    """Seed 20261122 #4: a throttled version listing made the scheduler skip a due target until the next
    tick. It is read again after a durable pause; only a target still unreadable stays skipped."""
    throttled = "Key Vault read failed: SafeError HTTP 429: list versions of demo-orders-client-key: throttled"
    unreadable = {"targetId": "demo-orders", "reason": throttled, "unreadable": True}
    run.use(
        find_due_targets=[
            {"due": [], "notDue": [], "skipped": [unreadable, {"targetId": "x", "reason": "disabled"}]},
            {"due": [due("demo-orders")], "notDue": [], "skipped": []},
        ],
        check_drift=[{"drift": []}],
        provision_new_key=[PROVISIONED],
    )
    summary = tick(run, "scheduler-unreadable-1")
    reads = run.calls("find_due_targets")
    assert len(reads) == 2 and reads[1]["request"]["only"] == ["demo-orders"]
    assert [c["targetId"] for c in summary["completed"]] == ["demo-orders"]
    assert summary["skipped"] == [{"targetId": "x", "reason": "disabled"}]


def test_a_target_still_unreadable_after_two_more_reads_stays_skipped_with_its_reason(run: Scripted) -> None:  # noqa: F811
    unreadable = {"targetId": "demo-orders", "reason": "Key Vault read failed: HTTP 503", "unreadable": True}
    run.use(find_due_targets=[{"due": [], "notDue": [], "skipped": [unreadable]}], check_drift=[{"drift": []}])
    summary = tick(run, "scheduler-unreadable-2")
    assert len(run.calls("find_due_targets")) == 3
    assert summary["skipped"] == [{"targetId": "demo-orders", "reason": "Key Vault read failed: HTTP 503"}]
