"""Present a key to the target the way a consumer would, until the target accepts it or attempts run out.

The key goes only to the target's own host: ARM's `defaultHostName` for the app or slot, or the policy's
`baseUrl` when ARM lists its host as one of the app's (activities/site_hosts.py); any other destination is
refused before a request is made.

Host instances cache keys and may pick up a new one only after a reload (at most once a minute:
azure-functions-host SecretManager; emulators/arm/host_cache.py), so one refusal right after a key is created
means "not yet", not "never": the policy's probe bounds the attempts and the delay between them. The key travels only in
the `x-functions-key` header — never in the URL, where request logs would keep it — and nothing here
logs it or puts it in a message.

Only 401/403 mean "refused". A target that never gives a verdict — timeouts, dropped connections, 5xx,
429 — is *unavailable*, not refusing: the outcome says why (`unavailable`) so the step fails and its
durable retry tries again later, instead of rolling back a key the target may well accept. A Retry-After
is honoured up to the policy's `calls.maxRetryAfter`; a longer one stops the probing at once.
"""

from __future__ import annotations

import http.cookiejar
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from rotation.credential_store import ProbeResult, SecretValue
from rotation.policy import Target
from rotation.redaction import redact, safe_error_message

if TYPE_CHECKING:
    import requests

log = logging.getLogger("keyrotation.activities.probe")

KEY_HEADER = "x-functions-key"
REFUSED = frozenset({401, 403})  # the only answers that mean the target does not take this key
_sessions = threading.local()


@dataclass(frozen=True)
class ProbeOutcome:
    """The last attempt's result and how many attempts it took (safe to return and log). `unavailable`:
    why no verdict was reached (no answer, 5xx, throttled), None when the target accepted or refused."""

    accepted: bool
    attempts: int
    last_status: int | None
    detail: str = ""
    unavailable: str | None = None


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def probe_session() -> requests.Session:
    """This thread's session for probes. A rotation probes its target several times (the new key, then the
    old one until refused), so the connection to the target's host is kept for the next probe instead of
    a TLS handshake each time (the front end still routes each request to an instance of its choosing).
    It keeps no cookies: an affinity cookie (ARRAffinity) would pin every later probe to one instance."""
    import requests  # not at import: the app's cold start imports this module

    session: requests.Session | None = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def probe_once(target: Target, value: SecretValue) -> ProbeResult:
    """One request to the target's probe route with the key in the x-functions-key header. Raises
    site_hosts.ProbeDestinationRefused, sending nothing, when the destination is not the app's own host."""
    import requests

    from activities import site_hosts

    probe = target.probe
    if probe is None:
        raise ValueError(f"target {target.id} has no probe")
    url = site_hosts.probe_url(target)
    connect = min(target.calls.connect_timeout, probe.timeout).total_seconds()
    try:
        response = probe_session().request(
            probe.method,
            url,
            headers={KEY_HEADER: value.reveal()},
            timeout=(connect, probe.timeout.total_seconds()),
            verify=True,  # the system roots, or REQUESTS_CA_BUNDLE when set (the local stack's CA)
            allow_redirects=False,  # a redirect must not carry the key to another host
        )
    except requests.RequestException as exc:
        return ProbeResult(False, None, f"{probe.method} {probe.path}: {safe_error_message(exc)}")
    with response:
        status = response.status_code
        accepted = status in probe.expect_status
        wait = None if accepted else retry_after_seconds(response.headers.get("Retry-After"))
        return ProbeResult(accepted, status, f"{probe.method} {probe.path} -> {status}", wait)


def probe_until_accepted(
    target: Target,
    value: SecretValue,
    *,
    once: Callable[[Target, SecretValue], ProbeResult] = probe_once,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbeOutcome:
    """Probe up to `probe.attempts` times, `probe.delay` apart (longer when the target asks with Retry-After),
    stopping at the first acceptance. The real clock is used only for these sleeps."""
    probe = target.probe
    if probe is None:
        return ProbeOutcome(True, 0, None, "no probe configured")
    cap = target.calls.max_retry_after.total_seconds()
    result = ProbeResult(False, None)
    for attempt in range(1, probe.attempts + 1):
        result = once(target, value)
        if result.accepted:
            log.info("target %s accepted the key on attempt %d (%s)", target.id, attempt, result.detail)
            return ProbeOutcome(True, attempt, result.status, result.detail)
        log.info(
            "target %s did not accept the key on attempt %d/%d (%s)", target.id, attempt, probe.attempts, result.detail
        )
        wait = result.retry_after
        if wait is not None and wait > cap:
            why = f"throttled: Retry-After {wait:g} s exceeds the policy's calls.maxRetryAfter ({cap:g} s)"
            return _unavailable(target, attempt, result, why)
        if attempt < probe.attempts:
            sleep(max(probe.delay.total_seconds(), wait or 0.0))
    if result.status in REFUSED:
        return ProbeOutcome(False, probe.attempts, result.status, result.detail)
    return _unavailable(target, probe.attempts, result, f"no verdict after {probe.attempts} attempt(s)")


def _unavailable(target: Target, attempts: int, result: ProbeResult, why: str) -> ProbeOutcome:
    """The target gave no verdict on the key: a value-free reason naming the probe and the last answer."""
    reason = redact(f"probe of {target.id} {why} (last: {result.detail or 'no answer'})")
    log.warning("%s", reason)
    return ProbeOutcome(False, attempts, result.status, result.detail, reason)
