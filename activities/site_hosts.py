"""Where the probe may send a new key: the host names ARM reports for the target's app or slot.

The probe carries a live key, so its destination comes from ARM (`web_apps.get` / `get_slot`: the Site's
`defaultHostName` and `enabledHostNames`), never from a name the app builds: apps created since 2024 may
have a secure unique default host name (`{app}-{hash}.{region}-01.azurewebsites.net`) that no rule can
derive. A policy `probe.baseUrl` must name one of the enabled host names that is also an assigned one
(`hostNames`: that leaves Kudu's `.scm.` name out); anything else is refused before a request is sent.

Host names barely change, and the per-key ARM budget is small (DESIGN: at most 4 ARM calls per key), so
each (app, slot)'s answer is kept in-process for `TTL_SECONDS`: provision looks them up once, verify and
drift in the same worker reuse them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rotation.policy import FunctionApp, Target
from rotation.redaction import SafeError, safe_error_message

if TYPE_CHECKING:
    from azure.mgmt.web import WebSiteManagementClient

TTL_SECONDS = 300.0
# The ARM action each WebSiteManagementClient call of this module needs; infra/modules/role-definition.bicep
# grants them (tests/unit/infra/test_infra.py checks both ways).
ARM_ACTIONS: dict[tuple[str, str | None], str] = {
    ("get", None): "Microsoft.Web/sites/read",
    ("get_slot", None): "Microsoft.Web/sites/slots/read",
}


class ProbeDestinationRefused(SafeError):
    """The probe's destination is not one of the app's own host names: nothing was sent. Value-free."""


@dataclass(frozen=True)
class SiteHosts:
    """What ARM reports for one app or slot, host names in lower case."""

    default_host_name: str
    host_names: frozenset[str]  # assigned and enabled: where the app answers (Kudu's name excluded)

    def allows(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.host_names


class HostNameCache:
    """ARM's host names per (subscription, group, app, slot), each kept for `ttl` seconds of `clock`."""

    def __init__(self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], tuple[float, SiteHosts]] = {}

    @staticmethod
    def key(app: FunctionApp) -> tuple[str, ...]:
        return (app.subscription_id.lower(), app.resource_group.lower(), app.name.lower(), (app.slot or "").lower())

    def get(self, app: FunctionApp) -> SiteHosts | None:
        with self._lock:
            entry = self._entries.get(self.key(app))
            if entry is None or self.clock() >= entry[0]:
                return None
            return entry[1]

    def put(self, app: FunctionApp, hosts: SiteHosts) -> None:
        with self._lock:
            self._entries[self.key(app)] = (self.clock() + self.ttl, hosts)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = HostNameCache()


def read_site_hosts(target: Target, client: WebSiteManagementClient | None = None) -> SiteHosts:
    """One ARM read of the app (or slot): its default and enabled host names."""
    app = target.function_app
    if client is None:
        from activities import clients

        client = clients.web_client(app.subscription_id, budget=target.calls)
    try:
        if app.slot:
            site: Any = client.web_apps.get_slot(app.resource_group, app.name, app.slot)
        else:
            site = client.web_apps.get(app.resource_group, app.name)
    except Exception as exc:
        raise SafeError(f"read host names of {app.resource_id}: {safe_error_message(exc)}") from None
    default = (site.default_host_name or "").lower()
    enabled = {h.lower() for h in site.enabled_host_names or []}
    assigned = {h.lower() for h in site.host_names or []}
    if not default:
        raise SafeError(f"ARM reports no default host name for {app.resource_id}")
    return SiteHosts(default, frozenset(enabled & assigned))


def site_hosts(target: Target, cache: HostNameCache = CACHE) -> SiteHosts:
    """ARM's host names for the target's app or slot, from the cache when fresh."""
    found = cache.get(target.function_app)
    if found is None:
        found = read_site_hosts(target)
        cache.put(target.function_app, found)
    return found


def probe_url(target: Target, cache: HostNameCache = CACHE) -> str:
    """The URL the probe may send the new key to: `https://{defaultHostName}{path}`, or the policy's
    `baseUrl` + path when its host is one of the app's host names; otherwise ProbeDestinationRefused."""
    probe = target.probe
    if probe is None:
        raise ValueError(f"target {target.id} has no probe")
    hosts = site_hosts(target, cache)
    if probe.base_url:
        host = probe.base_host or ""
        if not hosts.allows(host):
            listed = ", ".join(sorted(hosts.host_names)) or "none"
            raise ProbeDestinationRefused(
                f"probe of {target.id} refused: probe.baseUrl host {host} is not an enabled host name of "
                f"{target.function_app.resource_id} (ARM lists: {listed}); no request was sent"
            )
    return probe.url(f"https://{hosts.default_host_name}")
