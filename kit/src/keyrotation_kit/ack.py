"""Telling the rotation app this consumer switched: `POST {api}/api/rotations/{id}/ack`.

Sent once per rotation, after the first call that succeeded with that rotation's key (proof the switch
worked, not merely that an event arrived), on a background thread that retries what a retry can change.

The rotation app sits behind App Service Authentication, so the call carries a bearer token for its
Easy Auth audience: from the consumer's managed identity in Azure, or a static devhost-issued token
(`python -m devhost token --role KeyRotation.Consumer --oid <object id>`) on the local stack.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

from keyrotation_kit.credential import make_credential
from keyrotation_kit.holder import AckStatus, HeldKey, KeyHolder
from keyrotation_kit.settings import ConsumerSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

log = logging.getLogger("keyrotation_kit")
ROTATION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,46}[a-z0-9]-\d{8}t\d{6}z-[soe]$")
TIMEOUT = 10
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)  # seconds before each retry (~9 min in all)
NOT_YET_IN_OVERLAP_GRACE = 120.0  # seconds after the first attempt during which a 409 is retried


@dataclass(frozen=True)
class AckResult:
    http_status: int | None
    error: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    @property
    def final(self) -> bool:
        """No point trying again: done, or a decision a retry cannot change — a bad request (400), not a
        registered consumer of the target (403), an unknown rotation (404), not in its overlap (409).
        401 (a token that expired or was refused), 429, 5xx and network errors are worth retrying."""
        return self.acknowledged or self.http_status in (400, 403, 404, 409)


class Acknowledger:
    def __init__(self, settings: ConsumerSettings, credential: TokenCredential | None = None) -> None:
        self.settings = settings
        self._credential = credential

    def _token(self) -> str:
        if self.settings.api_token:  # local stack only (settings refuse it otherwise)
            return self.settings.api_token
        if self._credential is None:
            self._credential = make_credential(self.settings)
        audience = str(self.settings.api_audience).rstrip("/")
        return self._credential.get_token(f"{audience}/.default").token

    def ack(self, rotation_id: str) -> AckResult:
        """One attempt; never raises for HTTP or network failures, the caller decides what to retry."""
        if not ROTATION_ID.match(rotation_id):
            return AckResult(None, "not a rotation id")
        url = f"{self.settings.api_url}/api/rotations/{quote(rotation_id)}/ack"
        try:
            response = requests.post(
                url,
                headers={"Authorization": f"Bearer {self._token()}"},
                json={},
                timeout=TIMEOUT,
                allow_redirects=False,
                verify=self.settings.verify,
            )
        except requests.RequestException as exc:
            return AckResult(None, type(exc).__name__)
        except Exception as exc:  # a token that could not be obtained
            return AckResult(None, f"token: {type(exc).__name__}")
        return AckResult(response.status_code, None if response.ok else f"HTTP {response.status_code}")


class AckSender:
    """One background acknowledgement per rotation, claimed by the first successful call with its key."""

    def __init__(
        self,
        acknowledger: Acknowledger,
        holder: KeyHolder,
        *,
        delays: Sequence[float] = RETRY_DELAYS,
        grace: float = NOT_YET_IN_OVERLAP_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.acknowledger = acknowledger
        self.holder = holder
        self.delays = tuple(delays)
        self.grace = grace
        self._clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def after_success(self, key: HeldKey) -> None:
        rotation_id = key.rotation_id
        if not rotation_id or not ROTATION_ID.match(rotation_id) or not self.holder.claim_ack(rotation_id):
            return
        thread = threading.Thread(target=self.send, args=(rotation_id,), name="keyrotation-kit-ack", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def send(self, rotation_id: str) -> AckStatus:
        """Attempt, and retry on 401/429/5xx/network errors (and a 409 early on) until final or out of tries."""
        first = self._clock()
        status: AckStatus = "failed"
        for delay in (0.0, *self.delays):
            if self._stop.wait(delay):
                return status
            result = self.acknowledger.ack(rotation_id)
            status = "acknowledged" if result.acknowledged else "refused" if result.final else "failed"
            if result.http_status == 409 and self._clock() - first < self.grace:
                status = "failed"  # maybe not in its overlap *yet*: the announcement can outrun the rotation
            record = self.holder.record_ack(rotation_id, status, result.http_status, result.error)
            if status == "acknowledged":
                log.info("Acknowledged rotation %s (HTTP %s)", rotation_id, result.http_status)
                return status
            if status == "refused":
                level = logging.WARNING if result.http_status in (404, 409) else logging.ERROR
                log.log(level, "Rotation %s refused the acknowledgement (HTTP %s): not retried",
                        rotation_id, result.http_status)  # fmt: skip
                return status
            log.warning("Acknowledging rotation %s failed (attempt %d: %s); retrying",
                        rotation_id, record.attempts, result.error)  # fmt: skip
        log.error("Gave up acknowledging rotation %s; the overlap runs its full length", rotation_id)
        return status

    def flush(self, timeout: float = 30) -> None:
        """Wait for the acknowledgements under way (at shutdown, or in a test)."""
        for thread in list(self._threads):
            thread.join(timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
