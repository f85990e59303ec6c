"""The engine's clock: real UTC time, or a virtual clock that can skip ahead to the next durable timer.

Virtual time flows at the real rate from an anchor, so activities and HTTP callers still see time
pass; the engine moves the anchor forward when it skips (auto-advance) or when told to
(``advance_to`` / ``advance_by``). ``now`` is persisted with every state commit, so a restarted
host resumes the virtual time where it stopped (never behind a timestamp already in history).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger("devhost.durable.clock")

WakeupSource = Callable[[], datetime | None]


class ClockError(ValueError):
    """A clock request that cannot be honoured (real clock, or a move backwards)."""


class EngineClock:
    def __init__(self, mode: str = "virtual") -> None:
        if mode not in ("real", "virtual"):
            raise ValueError(f"clock must be 'real' or 'virtual', not {mode!r}")
        self.mode = mode
        self.auto_advance = True
        self._lock = threading.Lock()
        self._anchor_time = datetime.now(UTC)
        self._anchor_mono = time.monotonic()
        self._wakeup_sources: list[WakeupSource] = []
        self._listeners: list[Callable[[], None]] = []

    @property
    def virtual(self) -> bool:
        return self.mode == "virtual"

    def now(self) -> datetime:
        """Aware UTC datetime; safe to call from any thread."""
        if not self.virtual:
            return datetime.now(UTC)
        with self._lock:
            return self._anchor_time + timedelta(seconds=time.monotonic() - self._anchor_mono)

    def restore(self, persisted_now: datetime | None, auto_advance: bool | None) -> None:
        """Resume a virtual clock from its persisted value (a real clock ignores it)."""
        if auto_advance is not None:
            self.auto_advance = auto_advance
        if self.virtual and persisted_now is not None:
            with self._lock:
                self._anchor_time = persisted_now
                self._anchor_mono = time.monotonic()

    def advance_to(self, moment: datetime) -> datetime:
        if not self.virtual:
            raise ClockError("the real clock cannot be moved; start devhost with --clock virtual")
        if moment.tzinfo is None:
            raise ClockError("advanceTo needs a timezone (use Z for UTC)")
        moment = moment.astimezone(UTC)
        with self._lock:
            current = self._anchor_time + timedelta(seconds=time.monotonic() - self._anchor_mono)
            if moment < current - timedelta(milliseconds=1):
                raise ClockError(f"the clock only moves forward (now {current.isoformat()})")
            if moment > current:
                self._anchor_time = moment
                self._anchor_mono = time.monotonic()
        self._notify()
        return self.now()

    def advance_by(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ClockError("advanceBy must not be negative")
        return self.advance_to(self.now() + timedelta(seconds=seconds))

    def add_wakeup_source(self, source: WakeupSource) -> None:
        """Let another host part (e.g. a timer trigger) name a moment the virtual clock may skip to."""
        self._wakeup_sources.append(source)

    def next_external_wakeup(self) -> datetime | None:
        moments = []
        for source in self._wakeup_sources:
            try:
                moment = source()
            except Exception:  # a broken source must not stop the engine
                log.exception("clock wake-up source failed")
                continue
            if moment is not None:
                moments.append(moment)
        return min(moments, default=None)

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def sleep_until(self, moment: datetime, *, poll: float = 0.05) -> None:
        """Sleep until the clock reads ``moment`` (returns early when a skip jumps past it)."""
        while True:
            remaining = (moment - self.now()).total_seconds()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, poll if self.virtual else remaining))
