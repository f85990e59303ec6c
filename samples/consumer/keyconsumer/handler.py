"""What the consumer does with one delivered event. Event Grid is at-least-once and unordered, so:

- an event for another target or of another type is ignored (logged, nothing read);
- an event announcing the version already held is a duplicate: no second Key Vault read, and the
  acknowledgement is sent again only if the first attempt failed;
- an announcement older than the held key (by `availableAt`) is stale and never switches back;
- a failed acknowledgement raises, so the host answers 500 and Event Grid delivers again later;
  that redelivery is a duplicate, which retries only the acknowledgement;
- a 409 ("not in its overlap") within a short grace after the first attempt counts as failed, not
  final: the announcement can reach us before the rotation has recorded that its overlap began;
- `KeyRotation.DriftDetected` with `repair: restored` (the target's keys changed behind the rotation's
  back and Key Vault now holds the target's value) reloads the new version when we hold the drifted one
  (or nothing), with no acknowledgement; any other drift waits for the rotation's NewKeyAvailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from keyconsumer.ack import ROTATION_ID, Acknowledger, AckResult
from keyconsumer.keyholder import HeldKey, KeyHolder, utc_now
from keyconsumer.settings import ConsumerSettings
from keyconsumer.vault import SecretIdError, SecretReader, SecretRef, parse_secret_id

log = logging.getLogger("keyconsumer")
NEW_KEY_AVAILABLE = "KeyRotation.NewKeyAvailable"
DRIFT_DETECTED = "KeyRotation.DriftDetected"
Outcome = Literal["switched", "reloaded", "duplicate", "stale", "ignored", "invalid"]
NOT_YET_IN_OVERLAP_GRACE = 120.0  # seconds after the first ack attempt during which a 409 is retried


class AckFailed(RuntimeError):
    """The acknowledgement did not get through; raised so Event Grid redelivers the event."""


@dataclass(frozen=True)
class Incoming:
    """The parts of a delivered event (CloudEvent or Event Grid schema) the consumer looks at."""

    id: str
    type: str
    subject: str
    data: Mapping[str, Any]

    @staticmethod
    def from_trigger(event: Any) -> Incoming:
        """`func.CloudEvent` has `.type`; `func.EventGridEvent` has `.event_type`."""
        kind = getattr(event, "type", None) or getattr(event, "event_type", "")
        data = event.get_json()
        return Incoming(str(event.id), str(kind), str(event.subject or ""), data if isinstance(data, Mapping) else {})


class KeyConsumer:
    def __init__(
        self,
        settings: ConsumerSettings,
        holder: KeyHolder | None = None,
        read: Callable[[SecretRef], str] | None = None,
        acknowledger: Acknowledger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.holder = holder or KeyHolder()
        self.reader = SecretReader(settings)
        self._read = read or self.reader.read
        self.acknowledger = acknowledger or Acknowledger(settings)
        self._clock = clock
        self._first_ack: dict[str, float] = {}  # rotation id -> first attempt (guarded by holder.handling)

    def handle(self, event: Incoming) -> Outcome:
        with self.holder.handling:
            self.holder.count("events")
            repeated = self.holder.seen(event.id)
            if event.type not in (NEW_KEY_AVAILABLE, DRIFT_DETECTED):
                return self._ignore(event, f"type {event.type}")
            target = event.data.get("targetId")
            if target != self.settings.target_id or event.subject != f"targets/{self.settings.target_id}":
                return self._ignore(event, f"target {target!r} is not {self.settings.target_id}")
            if event.type == DRIFT_DETECTED:
                return self._drift(event)
            try:
                ref = parse_secret_id(event.data.get("secretId"), self.settings)
            except SecretIdError as exc:
                log.error("Event %s not used: %s", event.id, exc)
                return "invalid"
            rotation_id = str(event.data.get("rotationId", ""))
            if not ROTATION_ID.match(rotation_id):
                log.error("Event %s not used: data.rotationId is not a rotation id", event.id)
                return "invalid"
            held = self.holder.current()
            if held and held.version == ref.version:
                self.holder.count("duplicates")
                why = "same event id" if repeated else "version already held"
                log.info("Event %s: duplicate (%s), no Key Vault read", event.id, why)
                self._ack_unless_done(rotation_id)
                return "duplicate"
            available_at = event.data.get("availableAt")
            if held and held.available_at and isinstance(available_at, str) and available_at < held.available_at:
                log.info("Event %s: stale (rotation %s is older than the key held), ignored", event.id, rotation_id)
                self.holder.count("ignored")
                return "stale"
            value = self._read(ref)
            self.holder.count("keyVaultReads")
            key = HeldKey(
                value,
                f"{ref.vault_url}/secrets/{ref.name}/{ref.version}",
                ref.version,
                rotation_id,
                available_at if isinstance(available_at, str) else None,
                utc_now(),
            )
            previous = self.holder.swap(key)
            log.info(
                "Switched to version %s (fingerprint %s) for rotation %s; previous version %s",
                ref.version,
                key.fingerprint,
                rotation_id,
                previous.version if previous else None,
            )
            self._ack_unless_done(rotation_id)
            return "switched"

    def _drift(self, event: Incoming) -> Outcome:
        """Reload the restored version if the key held is the one that drifted (or none is held yet).
        A consumer already on a newer rotation's key keeps it; nothing to acknowledge."""
        if event.data.get("repair") != "restored":
            return self._ignore(event, f"drift {event.data.get('drift')}: a rotation follows with NewKeyAvailable")
        try:
            ref = parse_secret_id(event.data.get("secretId"), self.settings)
            drifted = parse_secret_id(event.data.get("previousSecretId"), self.settings)
        except SecretIdError as exc:
            log.error("Event %s not used: %s", event.id, exc)
            return "invalid"
        held = self.holder.current()
        if held and held.version == ref.version:
            self.holder.count("duplicates")
            log.info("Event %s: drift repair to version %s already held, no Key Vault read", event.id, ref.version)
            return "duplicate"
        if held and held.version != drifted.version:
            self.holder.count("ignored")
            log.info("Event %s: drift repair of version %s, but version %s is held: kept", event.id,
                     drifted.version, held.version)  # fmt: skip
            return "stale"
        value = self._read(ref)
        self.holder.count("keyVaultReads")
        rotation_id = event.data.get("rotationId")
        key = HeldKey(
            value,
            f"{ref.vault_url}/secrets/{ref.name}/{ref.version}",
            ref.version,
            rotation_id if isinstance(rotation_id, str) and ROTATION_ID.match(rotation_id) else None,
            held.available_at if held else None,  # still the same generation: later announcements compare to it
            utc_now(),
        )
        self.holder.swap(key)
        log.warning("Reloaded version %s (fingerprint %s): the target's keys drifted from version %s",
                    ref.version, key.fingerprint, drifted.version)  # fmt: skip
        return "reloaded"

    def _ignore(self, event: Incoming, why: str) -> Outcome:
        self.holder.count("ignored")
        log.info("Event %s (%s, %s) ignored: %s", event.id, event.type, event.subject, why)
        return "ignored"

    def _ack_unless_done(self, rotation_id: str) -> None:
        before = self.holder.ack(rotation_id)
        if before and before.status in ("acknowledged", "refused"):
            return
        first = self._first_ack.setdefault(rotation_id, self._clock())
        result: AckResult = self.acknowledger.ack(rotation_id)
        status = "acknowledged" if result.acknowledged else "refused" if result.final else "failed"
        if result.http_status == 409 and self._clock() - first < NOT_YET_IN_OVERLAP_GRACE:
            status = "failed"  # maybe not in its overlap *yet*: let Event Grid redeliver a few times
        record = self.holder.record_ack(rotation_id, status, result.http_status, result.error)
        if status == "acknowledged":
            log.info("Acknowledged rotation %s (HTTP %s)", rotation_id, result.http_status)
        elif status == "refused":
            level = logging.WARNING if result.http_status in (404, 409) else logging.ERROR
            log.log(level, "Rotation %s refused the acknowledgement (HTTP %s): not retried",
                    rotation_id, result.http_status)  # fmt: skip
        else:
            log.error(
                "Acknowledging rotation %s failed (attempt %d: %s); Event Grid will redeliver",
                rotation_id,
                record.attempts,
                result.error,
            )
            raise AckFailed(f"acknowledgement of {rotation_id} failed: {result.error}")
