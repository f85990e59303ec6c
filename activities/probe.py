"""Present a key to the target the way a consumer would, until the target accepts it or attempts run out.

Host instances cache keys and pick up a new one only after a reload (about a minute in Azure;
`keyCacheSeconds` in the emulator), so one refusal right after a key is created means "not yet", not
"never": the policy's probe bounds the attempts and the delay between them. The key travels only in
the `x-functions-key` header — never in the URL, where request logs would keep it — and nothing here
logs it or puts it in a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from rotation.credential_store import ProbeResult, SecretValue
from rotation.policy import Target
from rotation.redaction import safe_error_message

log = logging.getLogger("keyrotation.activities.probe")

KEY_HEADER = "x-functions-key"


@dataclass(frozen=True)
class ProbeOutcome:
    """The last attempt's result and how many attempts it took (safe to return and log)."""

    accepted: bool
    attempts: int
    last_status: int | None
    detail: str = ""


def host_base_url(target: Target) -> str:
    """Where the probe goes without a `baseUrl`: the app's (or slot's) default host name."""
    return f"https://{target.function_app.default_host_name}"


def probe_once(target: Target, value: SecretValue) -> ProbeResult:
    """One request to the target's probe route with the key in the x-functions-key header."""
    import requests

    from activities import clients

    probe = target.probe
    if probe is None:
        raise ValueError(f"target {target.id} has no probe")
    cfg = clients.settings()
    url = probe.url(host_base_url(target))
    try:
        response = requests.request(
            probe.method,
            url,
            headers={KEY_HEADER: value.reveal()},
            timeout=probe.timeout.total_seconds(),
            verify=cfg.ca_bundle or True,
            allow_redirects=False,  # a redirect must not carry the key to another host
        )
    except requests.RequestException as exc:
        return ProbeResult(False, None, safe_error_message(exc))
    with response:
        accepted = response.status_code in probe.expect_status
        return ProbeResult(accepted, response.status_code, f"{probe.method} {probe.path} -> {response.status_code}")


def probe_until_accepted(
    target: Target,
    value: SecretValue,
    *,
    once: Callable[[Target, SecretValue], ProbeResult] = probe_once,
    sleep: Callable[[float], None] = time.sleep,
) -> ProbeOutcome:
    """Probe up to `probe.attempts` times, `probe.delay` apart, stopping at the first acceptance. The real
    clock is used only for these sleeps (nothing reproducible depends on it)."""
    probe = target.probe
    if probe is None:
        return ProbeOutcome(True, 0, None, "no probe configured")
    result = ProbeResult(False, None)
    for attempt in range(1, probe.attempts + 1):
        result = once(target, value)
        if result.accepted:
            log.info("target %s accepted the key on attempt %d (%s)", target.id, attempt, result.detail)
            return ProbeOutcome(True, attempt, result.status, result.detail)
        log.info("target %s refused the key on attempt %d/%d (%s)", target.id, attempt, probe.attempts, result.detail)
        if attempt < probe.attempts:
            sleep(probe.delay.total_seconds())
    return ProbeOutcome(False, probe.attempts, result.status, result.detail)
