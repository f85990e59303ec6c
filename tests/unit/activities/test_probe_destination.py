"""Where the probe may send a new key, without Azure: the policy refuses a `probe.baseUrl` that cannot be one
of the app's host names, naming the target and the field; the run-time check refuses a host ARM does not list;
ARM's answer is cached per app and slot for a bounded time."""

from __future__ import annotations

from typing import Any

import pytest

from activities import site_hosts
from activities.site_hosts import HostNameCache, ProbeDestinationRefused, SiteHosts
from rotation.policy import FunctionApp, PolicyError, Target, parse_policy, parse_target
from tests.unit.rotation.test_policy import policy, problems, target

REGIONAL = "orders-ds27dh7271aah175.westus-01.azurewebsites.net"  # the docs' example form, for app "orders"


def probe(base_url: str) -> dict[str, Any]:
    return {"probe": {"path": "/api/ping", "baseUrl": base_url}}


@pytest.mark.parametrize(
    ("base_url", "slot"),
    [
        ("https://attacker.example.net", None),  # any host of the editor's choosing
        ("https://127.0.0.1:8443/_targets/orders.azurewebsites.net", None),  # the old emulator route
        ("https://orders.contoso.com", None),  # a custom domain: its DNS is not App Service's
        ("https://billing.azurewebsites.net", None),  # another app
        ("https://orders.scm.azurewebsites.net", None),  # Kudu, not the app
        ("https://orders.azurewebsites.net.attacker.example", None),
        ("https://orders-staging.azurewebsites.net", None),  # a slot's host for the production target
        ("https://orders.azurewebsites.net", "staging"),  # production's host for the slot's target
        ("https://orders-xyz.westus-01.azurewebsites.net", None),  # not a unique host name's hash
        ("https://orders.azurewebsites.net:8443", None),
    ],
)
def test_policy_refuses_a_base_url_that_cannot_be_the_apps_host(base_url: str, slot: str | None) -> None:
    found = problems(policy(target(**probe(base_url), slot=slot)))
    assert found and all(p.startswith('targets[0] (id "orders-api"): probe.baseUrl: ') for p in found), found
    assert any("refused" in p or "port" in p for p in found), found


@pytest.mark.parametrize(
    ("base_url", "slot"),
    [
        ("https://orders.azurewebsites.net", None),
        ("https://Orders.AzureWebsites.net/prefix", None),
        (f"https://{REGIONAL}", None),
        ("https://orders-staging.azurewebsites.net", "staging"),
        ("https://orders-staging-ds27dh7271aah175.westus-01.azurewebsites.net", "staging"),
    ],
)
def test_policy_accepts_the_app_service_host_name_forms(base_url: str, slot: str | None) -> None:
    loaded = parse_policy(policy(target(**probe(base_url), slot=slot)), {})
    (only,) = loaded.targets
    assert only.probe is not None and only.probe.base_host == base_url.split("/")[2].lower()


def test_the_message_says_what_to_do() -> None:
    (message,) = problems(policy(target(**probe("https://orders.contoso.com"))))
    assert "host orders.contoso.com is not one of the host names App Service gives" in message
    assert "orders.azurewebsites.net or orders-<hash>.<region>-01.azurewebsites.net" in message
    assert "omit baseUrl to probe the default host name ARM reports" in message


def test_a_forged_target_with_a_foreign_base_url_is_refused_before_any_activity_work() -> None:
    """Activities parse the target they are given with the policy's rules (today's orchestration input)."""
    forged = parse_policy(policy(target(**probe("https://orders.azurewebsites.net"))), {}).targets[0].to_json()
    forged["probe"]["baseUrl"] = "https://attacker.example.net"
    with pytest.raises(PolicyError, match=r"probe\.baseUrl: host attacker\.example\.net"):
        parse_target(forged)


# -- the run-time check, against what ARM reported (cached) ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loaded(base_url: str | None = None, slot: str | None = None) -> Target:
    changes = probe(base_url) if base_url else {"probe": {"path": "/api/ping"}}
    return parse_policy(policy(target(**changes, slot=slot)), {}).targets[0]


def cached(t: Target, hosts: SiteHosts, clock: Clock | None = None) -> HostNameCache:
    cache = HostNameCache(ttl=60, clock=clock or Clock())
    cache.put(t.function_app, hosts)
    return cache


def test_the_probe_goes_to_arms_default_host_name() -> None:
    t = loaded()
    hosts = SiteHosts(REGIONAL, frozenset({REGIONAL}))
    assert site_hosts.probe_url(t, cached(t, hosts)) == f"https://{REGIONAL}/api/ping"


def test_a_base_url_host_arm_does_not_list_is_refused_and_names_what_arm_lists() -> None:
    t = loaded(f"https://{REGIONAL.replace('ds27dh7271aah175', 'aaaaaaaaaaaaaaaa')}")
    hosts = SiteHosts(REGIONAL, frozenset({REGIONAL}))
    with pytest.raises(ProbeDestinationRefused) as caught:
        site_hosts.probe_url(t, cached(t, hosts))
    message = str(caught.value)
    assert f"probe of {t.id} refused: probe.baseUrl host orders-aaaaaaaaaaaaaaaa" in message
    assert f"(ARM lists: {REGIONAL}); no request was sent" in message


def test_a_listed_base_url_keeps_its_path_prefix() -> None:
    t = loaded("https://orders.azurewebsites.net/v2")
    hosts = SiteHosts(REGIONAL, frozenset({REGIONAL, "orders.azurewebsites.net"}))
    assert site_hosts.probe_url(t, cached(t, hosts)) == "https://orders.azurewebsites.net/v2/api/ping"


def test_the_cache_is_per_app_and_slot_case_insensitive_and_expires() -> None:
    clock = Clock()
    production, staging = loaded(), loaded(slot="staging")
    cache = cached(production, SiteHosts("orders.azurewebsites.net", frozenset()), clock)
    assert cache.get(staging.function_app) is None
    app = production.function_app
    upper = FunctionApp(app.subscription_id.upper(), app.resource_group.upper(), app.name.upper())
    assert cache.get(upper) is not None
    clock.now += 59.9
    assert cache.get(production.function_app) is not None
    clock.now += 0.1
    assert cache.get(production.function_app) is None  # re-read from ARM after the TTL


class FakeSite:
    def __init__(self, default: str, enabled: list[str], assigned: list[str]) -> None:
        self.default_host_name, self.enabled_host_names, self.host_names = default, enabled, assigned


class FakeWebApps:
    def __init__(self, site: FakeSite) -> None:
        self.site = site
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def get(self, *args: str) -> FakeSite:
        self.calls.append(("get", args))
        return self.site

    def get_slot(self, *args: str) -> FakeSite:
        self.calls.append(("get_slot", args))
        return self.site


class FakeClient:
    def __init__(self, site: FakeSite) -> None:
        self.web_apps = FakeWebApps(site)


def test_kudu_and_disabled_host_names_are_never_probe_destinations() -> None:
    """enabledHostNames lists Kudu's name too; hostNames lists assigned ones, enabled or not: both must hold."""
    site = FakeSite(
        "Orders.azurewebsites.net",
        ["orders.azurewebsites.net", "orders.scm.azurewebsites.net"],
        ["orders.azurewebsites.net", "old.azurewebsites.net"],
    )
    client = FakeClient(site)
    hosts = site_hosts.read_site_hosts(loaded(slot="staging"), client)  # type: ignore[arg-type]
    assert client.web_apps.calls == [("get_slot", ("rg-orders", "orders", "staging"))]
    assert hosts == SiteHosts("orders.azurewebsites.net", frozenset({"orders.azurewebsites.net"}))
    assert not hosts.allows("orders.scm.azurewebsites.net") and not hosts.allows("old.azurewebsites.net")
