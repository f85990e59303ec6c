"""Reading the latest key without ever making a storm of Key Vault reads.

Many calls can be refused at once (every in-flight request after a revocation); they must cause one
read, not one each. So at most one read is in flight and the others wait for its result, and after a
read another is allowed only after a gap: short after a read that found a new version, growing (with
jitter) after failures or reads that found nothing new, so a Key Vault outage or a key nobody replaced
costs a few reads a minute, not hundreds a second.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from keyrotation_kit.vault import KeyVaultError, SecretSource, SecretVersion

log = logging.getLogger("keyrotation_kit")
MIN_GAP = 1.0  # seconds between two reads of "latest" when the last one went well
MAX_BACKOFF = 60.0


class Backoff:
    """Exponential, capped, with "equal jitter" (half fixed, half random) so instances spread out."""

    def __init__(
        self, base: float = MIN_GAP, cap: float = MAX_BACKOFF, rng: Callable[[], float] = random.random
    ) -> None:
        self.base, self.cap, self._rng = base, cap, rng
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        return delay / 2 + self._rng() * delay / 2

    def reset(self) -> None:
        self.failures = 0


class Refresher:
    """Single-flight reads of the latest version; `install` puts what was read in the holder and says
    whether that changed the key."""

    def __init__(
        self,
        source: SecretSource,
        install: Callable[[SecretVersion], bool],
        *,
        count: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
        min_gap: float = MIN_GAP,
    ) -> None:
        self._source = source
        self._install = install
        self._count = count
        self._clock = clock
        self.backoff = backoff or Backoff()  # after failed reads: every read waits
        self.refusal_backoff = Backoff(min_gap, self.backoff.cap, self.backoff._rng)  # after fruitless refusals
        self.min_gap = min_gap
        self._cond = threading.Condition()
        self._in_flight = False
        self._not_before = float("-inf")  # any read
        self._refusal_not_before = float("-inf")  # reads because the target refused a key
        self._last: SecretVersion | None = None
        self.last_error: str | None = None

    def wait_hint(self, *, refused: bool = False) -> float:
        """Seconds until another read is allowed (0 when one is)."""
        with self._cond:
            until = max(self._not_before, self._refusal_not_before) if refused else self._not_before
            return max(0.0, until - self._clock())

    def refresh(self, reason: str, *, refused: bool = False) -> SecretVersion | None:
        """Read latest once. Returns what was read, or None when a read was not allowed or failed.
        A caller arriving while a read is in flight waits for it and gets its result (no second read).
        `refused`: the target refused the key held; such reads are spaced out on their own (a periodic
        read a moment ago does not hold one back, an earlier refusal that found nothing new does)."""
        with self._cond:
            if self._in_flight:
                self._cond.wait_for(lambda: not self._in_flight)
                return self._last
            now = self._clock()
            if now < self._not_before or (refused and now < self._refusal_not_before):
                return None
            self._in_flight = True
            self._last = None
        got: SecretVersion | None = None
        failed_gap: float | None = None
        refusal_gap: float | None = None
        try:
            self._count("refreshes")
            got = self._source.read(None)
            self._count("keyVaultReads")
            changed = self._install(got)
            self.backoff.reset()
            if refused and not changed:
                refusal_gap = self.refusal_backoff.next_delay()
            elif refused or changed:
                self.refusal_backoff.reset()
                refusal_gap = self.min_gap
            self.last_error = None
        except KeyVaultError as exc:
            self._count("keyVaultFailures")
            failed_gap = self.backoff.next_delay()
            self.last_error = str(exc)
            log.warning("Key refresh (%s) failed: %s; next read in %.1f s at the earliest", reason, exc, failed_gap)
        finally:
            with self._cond:
                now = self._clock()
                if failed_gap is not None:
                    self._not_before = now + failed_gap
                if refusal_gap is not None:
                    self._refusal_not_before = now + refusal_gap
                self._last = got
                self._in_flight = False
                self._cond.notify_all()
        return got


class PeriodicRefresh:
    """The fallback for lost events: a read of latest every `interval` seconds (±`jitter`), on a daemon
    thread. A failed read pushes the next one out by the refresher's backoff."""

    def __init__(
        self,
        refresher: Refresher,
        interval: float,
        *,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._refresher = refresher
        self.interval = interval
        self.jitter = jitter
        self._rng = rng
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def next_wait(self) -> float:
        spread = self.interval * self.jitter
        return max(self.interval - spread + 2 * spread * self._rng(), self._refresher.wait_hint())

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="keyrotation-kit-refresh", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.next_wait()):
            try:
                self._refresher.refresh("periodic")
            except Exception as exc:  # never let the thread die: the next tick tries again
                log.error("Periodic key refresh failed: %s", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
