"""`ConsumerKit`: everything a service needs to call a rotated Functions key and never keep a dead one.

- `key()` hands out a snapshot of the current key (read from Key Vault on first use);
- `handle_event()` follows the rotation app's CloudEvents (NewKeyAvailable, DriftDetected, OldKeyRevoked);
- a jittered periodic read of "latest" catches up when events are lost (`start()`);
- `call()` (and the requests/httpx adapters) retry a 401/403 once: with the newest version after one
  single-flight refresh, or with the previous version while an overlap may still accept it;
- the first call that succeeds with a rotation's key acknowledges it (`POST /api/rotations/{id}/ack`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

from keyrotation_kit.ack import RETRY_DELAYS, ROTATION_ID, Acknowledger, AckSender
from keyrotation_kit.events import (
    ACTED_ON,
    DRIFT_DETECTED,
    OLD_KEY_REVOKED,
    Incoming,
    older_than,
    rotation_stamp,
)
from keyrotation_kit.holder import HeldKey, KeyHolder, utc_now
from keyrotation_kit.refresh import MAX_BACKOFF, MIN_GAP, Backoff, PeriodicRefresh, Refresher
from keyrotation_kit.settings import ConsumerSettings, load_settings
from keyrotation_kit.vault import KeyVaultSource, SecretIdError, SecretSource, SecretVersion, parse_secret_id

log = logging.getLogger("keyrotation_kit")
Outcome = Literal["switched", "reloaded", "revoked", "duplicate", "stale", "ignored", "invalid"]
REFUSED = (401, 403)
R = TypeVar("R")


class NoKeyError(RuntimeError):
    """No key is held and Key Vault could not be read (yet): the message says why, never a value."""


def accepted(status: int) -> bool:
    """The target let the key through: anything but a refusal or a server error (a 404 still passed auth)."""
    return status not in REFUSED and status < 500


class ConsumerKit:
    def __init__(
        self,
        settings: ConsumerSettings,
        *,
        source: SecretSource | None = None,
        acknowledger: Acknowledger | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        ack_delays: tuple[float, ...] = RETRY_DELAYS,
        min_refresh_gap: float = MIN_GAP,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.settings = settings
        self.holder = KeyHolder()
        self.source: SecretSource = source or KeyVaultSource(settings)
        self.acks = AckSender(acknowledger or Acknowledger(settings), self.holder, delays=ack_delays, clock=clock)
        backoff = Backoff(min_refresh_gap, max_backoff, rng)
        self.refresher = Refresher(
            self.source, self._install_latest, count=self.holder.count, clock=clock, backoff=backoff,
            min_gap=min_refresh_gap,
        )  # fmt: skip
        self.periodic = PeriodicRefresh(self.refresher, settings.refresh_seconds, rng=rng)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> ConsumerKit:
        """Settings from CONSUMER_* / KEYROTATION_* variables (see the kit's README)."""
        return cls(load_settings(environ), **options)

    def __repr__(self) -> str:
        held = self.holder.current()
        shown = f"{held.version} ({held.fingerprint})" if held else None
        return f"ConsumerKit(target_id={self.settings.target_id!r}, version={shown})"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> ConsumerKit:
        """Start the periodic refresh (the fallback for lost events)."""
        self.periodic.start()
        return self

    def close(self) -> None:
        self.periodic.stop()
        self.acks.close()

    def __enter__(self) -> ConsumerKit:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- calling the target ------------------------------------------------------------------------
    def key(self) -> HeldKey:
        """The key to call with now; use this one snapshot for the whole call."""
        held = self.holder.current()
        if held is None:
            self.refresher.refresh("first use")
            held = self.holder.current()
        if held is None:
            raise NoKeyError(f"no key held yet: {self.refresher.last_error or 'Key Vault reads are backing off'}")
        return held

    def on_refused(self, used: HeldKey) -> HeldKey | None:
        """The target answered 401/403 to `used`: the key to retry with once, or None (no better one).
        Refreshes at most once for everyone refused at the same moment, and backs off after that."""
        self.holder.count("rejections")
        current = self.holder.current()
        if current is None or current.version == used.version:
            self.refresher.refresh("refused by the target", refused=True)
            current = self.holder.current()
        if current is not None and current.version != used.version:
            self.holder.mark_dead(used.version)  # an older key, refused: never a fallback again
            return current
        fallback = self.holder.previous()
        return fallback if fallback is not None and fallback.version != used.version else None

    def on_accepted(self, used: HeldKey) -> None:
        """A call went through with `used`: the first one with a rotation's key acknowledges it."""
        current = self.holder.current()
        if current is not None and current.version == used.version:
            self.acks.after_success(used)

    def call(self, send: Callable[[str], R], status: Callable[[R], int] | None = None) -> R:
        """`send(key_value)` performs the request; one retry on 401/403 with a better key, if there is one."""
        status_of = status or (lambda response: _status_code(response))
        key = self.key()
        self.holder.count("calls")
        response = send(key.value)
        if accepted(status_of(response)):
            self.on_accepted(key)
            return response
        if status_of(response) not in REFUSED:
            return response
        retry = self.on_refused(key)
        if retry is None:
            return response
        self.holder.count("retries")
        response = send(retry.value)
        if accepted(status_of(response)):
            self.on_accepted(retry)
        return response

    # -- events ------------------------------------------------------------------------------------
    def handle_event(self, event: Incoming | Mapping[str, Any]) -> Outcome:
        """Act on one delivered event. Raises KeyVaultError when the announced version could not be read,
        so a Functions trigger fails and Event Grid delivers it again."""
        incoming = event if isinstance(event, Incoming) else Incoming.from_json(event)
        with self.holder.handling:
            self.holder.count("events")
            if incoming.type not in ACTED_ON:
                return self._ignore(incoming, f"type {incoming.type}")
            target = incoming.data.get("targetId")
            wanted = self.settings.target_id
            if target != wanted or incoming.subject != f"targets/{wanted}":
                return self._ignore(incoming, f"target {target!r} is not {wanted}")
            if self.holder.seen(incoming.id):
                self.holder.count("duplicates")
                log.info("Event %s: duplicate (same event id), nothing to do", incoming.id)
                return "duplicate"
            try:
                if incoming.type == DRIFT_DETECTED:
                    outcome = self._drift(incoming)
                elif incoming.type == OLD_KEY_REVOKED:
                    outcome = self._revoked(incoming)
                else:
                    outcome = self._new_key(incoming)
            except SecretIdError as exc:
                log.error("Event %s not used: %s", incoming.id, exc)
                outcome = "invalid"
            self.holder.remember(incoming.id)
            held = self.holder.current()
            read_latest = outcome == "revoked" and held is not None and self.holder.is_dead(held.version)
        if read_latest:  # outside the lock: a refresh in flight on another thread may be waiting for it
            log.warning("Event %s: the key held was revoked; reading the latest", incoming.id)
            self.refresher.refresh("held key revoked")
        return outcome

    def _new_key(self, event: Incoming) -> Outcome:
        ref = parse_secret_id(event.data.get("secretId"), self.settings)
        rotation_id = str(event.data.get("rotationId", ""))
        if not ROTATION_ID.match(rotation_id):
            log.error("Event %s not used: data.rotationId is not a rotation id", event.id)
            return "invalid"
        held = self.holder.current()
        if held and held.version == ref.version:
            self.holder.count("duplicates")
            log.info("Event %s: version %s already held, no Key Vault read", event.id, ref.version)
            return "duplicate"
        available_at = event.data.get("availableAt")
        if held and older_than(rotation_id, available_at, held.rotation_id, held.available_at):
            log.info("Event %s: stale (rotation %s is older than the key held), ignored", event.id, rotation_id)
            self.holder.count("ignored")
            return "stale"
        key = self._read(ref.version, rotation_id, available_at if isinstance(available_at, str) else None)
        previous = self.holder.swap(key)
        log.info("Switched to version %s (fingerprint %s) for rotation %s; previous version %s",
                 ref.version, key.fingerprint, rotation_id, previous.version if previous else None)  # fmt: skip
        return "switched"

    def _drift(self, event: Incoming) -> Outcome:
        """Reload the restored version if the key held is the one that drifted (or none is held yet).
        A consumer already on a newer rotation's key keeps it; nothing to acknowledge."""
        if event.data.get("repair") != "restored":
            return self._ignore(event, f"drift {event.data.get('drift')}: a rotation follows with NewKeyAvailable")
        ref = parse_secret_id(event.data.get("secretId"), self.settings)
        drifted = parse_secret_id(event.data.get("previousSecretId"), self.settings)
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
        rotation_id = event.data.get("rotationId")
        rid = rotation_id if isinstance(rotation_id, str) and ROTATION_ID.match(rotation_id) else None
        # Still the same generation: later announcements compare with the held key's availableAt.
        key = self._read(ref.version, rid, held.available_at if held else None)
        self.holder.swap(key)
        self.holder.mark_dead(drifted.version)  # disabled by the repair
        log.warning("Reloaded version %s (fingerprint %s): the target's keys drifted from version %s",
                    ref.version, key.fingerprint, drifted.version)  # fmt: skip
        return "reloaded"

    def _revoked(self, event: Incoming) -> Outcome:
        """The versions listed are dead: never a fallback again (handle_event reads latest if the held one is)."""
        revoked = event.data.get("revokedSecretIds")
        versions = [parse_secret_id(s, self.settings).version for s in revoked] if isinstance(revoked, list) else []
        for version in versions:
            self.holder.mark_dead(version)
        return "revoked"

    def _ignore(self, event: Incoming, why: str) -> Outcome:
        self.holder.count("ignored")
        log.info("Event %s (%s, %s) ignored: %s", event.id, event.type, event.subject, why)
        return "ignored"

    # -- reading and installing keys ---------------------------------------------------------------
    def _read(self, version: str, rotation_id: str | None, available_at: str | None) -> HeldKey:
        cached = self.holder.cached(version)
        if cached is not None:
            return HeldKey(cached.value, cached.secret_id, version, rotation_id or cached.rotation_id,
                           available_at, utc_now())  # fmt: skip
        try:
            got = self.source.read(version)
        except Exception:
            self.holder.count("keyVaultFailures")
            raise
        self.holder.count("keyVaultReads")
        return HeldKey(got.value, got.secret_id, got.version, rotation_id or got.rotation_id, available_at, utc_now())

    def _install_latest(self, got: SecretVersion) -> bool:
        """Put Key Vault's latest version in service, unless it is the one held or one already left behind
        (a read that started before an event switched us to a newer version)."""
        with self.holder.handling:
            held = self.holder.current()
            if held is not None and held.version == got.version:
                return False
            if held is not None and self.holder.cached(got.version) is not None:
                return False
            theirs, mine = rotation_stamp(got.rotation_id), rotation_stamp(held.rotation_id if held else None)
            if theirs and mine and theirs < mine:
                return False
            key = HeldKey(got.value, got.secret_id, got.version, got.rotation_id, None, utc_now())
            previous = self.holder.swap(key)
            log.info("Switched to the latest version %s (fingerprint %s, rotation %s); previous version %s",
                     got.version, key.fingerprint, got.rotation_id, previous.version if previous else None)  # fmt: skip
            return True

    # -- state -------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Versions, fingerprints, the ack and counters — never a value. Fit for a status route."""
        return {
            "targetId": self.settings.target_id,
            **self.holder.snapshot(),
            "lastRefreshError": self.refresher.last_error,
        }


def _status_code(response: object) -> int:
    code = getattr(response, "status_code", None)
    if not isinstance(code, int):
        raise TypeError("call(): pass status= for responses without an int status_code")
    return code
