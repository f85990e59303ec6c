"""The target apps' host key caches (emulators/arm/host_cache.py), driven by the emulators' shared clock.

Every time here is set by the test through `emulators.core.clock.use` (as devhost does with its engine clock),
never read from the wall clock, so the minute-long reload throttle is exercised without waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.arm.host_cache import RELOAD_THROTTLE_SECONDS, HostInstance, KeyRow
from emulators.arm.sites import Instance, KeyScope, SiteStore
from emulators.core import clock
from emulators.core.store import Store

SUB = "00000000-0000-0000-0000-0000000000c1"
HOST = KeyScope("functionKeys")


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def now() -> Iterator[Clock]:
    fake = Clock()
    clock.use(fake)
    yield fake
    clock.use(None)


def app(tmp_path: Path, **spec: object) -> tuple[SiteStore, Instance]:
    sites = SiteStore(Store(tmp_path / "arm.sqlite"))
    _, site = sites.upsert_site(SUB, "rg", "app", {"functions": ["fn"], **spec}, None)
    instance = sites.instance(site, None)
    assert instance is not None
    return sites, instance


def opens(sites: SiteStore, instance: Instance, value: str, host: int) -> bool:
    grant, served = sites.authorize(instance, "fn", value, clock.now(), host)
    assert served == host
    return grant is not None


def test_a_write_reaches_every_watching_instance_at_once(tmp_path: Path, now: Clock) -> None:
    sites, instance = app(tmp_path, hostInstances=3)
    old = sites.live_keys(instance, HOST)["default"]
    assert all(opens(sites, instance, old, i) for i in range(3))  # every instance granted and cached it
    now.advance(5)
    new = sites.set_key(instance, HOST, "next", None, None).value
    sites.delete_key(instance, HOST, "default", None)
    assert [opens(sites, instance, old, i) for i in range(3)] == [False, False, False]
    assert [opens(sites, instance, new, i) for i in range(3)] == [True, True, True]


def test_an_instance_without_the_sentinel_grants_a_cached_deleted_key_until_its_cache_clears(
    tmp_path: Path, now: Clock
) -> None:
    sites, instance = app(tmp_path, hostInstances=2, unwatchedHostInstances=[1])
    old = sites.live_keys(instance, HOST)["default"]
    assert opens(sites, instance, old, 1)
    sites.delete_key(instance, HOST, "default", None)
    now.advance(3600)  # no timeout: an hour later the cached grant still holds
    assert opens(sites, instance, old, 1) and not opens(sites, instance, old, 0)
    sites.farm(instance).instances[1].clear_on_change(True, None)  # e.g. a write it handled itself
    assert not opens(sites, instance, old, 1)


def test_a_deleted_key_never_granted_on_an_instance_goes_at_its_next_reload(tmp_path: Path, now: Clock) -> None:
    sites, instance = app(tmp_path, hostInstances=2, unwatchedHostInstances=[1])
    keys = sites.live_keys(instance, HOST)
    other = sites.set_key(instance, HOST, "other", None, None).value
    assert opens(sites, instance, other, 1)  # instance 1 loads its host secrets (both keys in them)
    now.advance(1)
    sites.delete_key(instance, HOST, "default", None)
    assert opens(sites, instance, keys["default"], 1)  # still in the loaded secrets: granted, and now cached
    deleted_unused = sites.set_key(instance, HOST, "spare", None, None).value
    now.advance(1)
    sites.delete_key(instance, HOST, "spare", None)
    assert not opens(sites, instance, deleted_unused, 1)  # never loaded there: unknown, reload, refused


def test_unknown_keys_reload_at_most_once_a_minute(now: Clock) -> None:
    """SecretManager: an unknown key drops the loaded secrets and retries, throttled to once a minute."""
    host = HostInstance(0, watches_sentinel=False)
    start = now.t
    written_later = KeyRow("functionKeys", "late", created=start + 1)
    assert host.authorize("fn", "v0", [KeyRow("functionKeys", "default", created=start - 10)], start)
    assert host.authorize("fn", "bad", [], start + 0.5) is None  # unknown: the first reload
    assert host.last_reset == start + 0.5
    now.advance(30)
    assert host.authorize("fn", "late", [written_later], now.t) is None  # within the minute: no reload
    now.advance(RELOAD_THROTTLE_SECONDS)
    grant = host.authorize("fn", "late", [written_later], now.t)  # a minute on: reloaded, granted
    assert grant is not None and grant.key_name == "late"
    assert ("late", "fn") not in host.authorizations  # the host returns the retried result uncached


def test_requests_go_round_robin_and_the_writer_is_instance_0(tmp_path: Path, now: Clock) -> None:
    sites, instance = app(tmp_path, hostInstances=3, unwatchedHostInstances=[0, 1, 2])
    old = sites.live_keys(instance, HOST)["default"]
    served = [sites.authorize(instance, "fn", old, now.t)[1] for _ in range(4)]
    assert served == [0, 1, 2, 0]
    sites.delete_key(instance, HOST, "default", None)  # instance 0 handles the write: its own cache clears
    assert [sites.authorize(instance, "fn", old, now.t)[0] is not None for _ in range(3)] == [True, True, False]


def test_the_journal_bounds_follow_the_model(tmp_path: Path, now: Clock) -> None:
    """accepted_from: by when every instance accepts a key (a minute when one misses the sentinel);
    accepted_until: when the writer stops, i.e. the deletion."""
    sites, instance = app(tmp_path, hostInstances=2, unwatchedHostInstances=[1])
    sites.set_key(instance, HOST, "next", None, None)
    sites.delete_key(instance, HOST, "next", None)
    row = sites.store.one("SELECT * FROM arm_keys WHERE name = 'next'")
    assert row["accepted_from"] == now.t + RELOAD_THROTTLE_SECONDS and row["accepted_until"] == now.t
