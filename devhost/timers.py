"""Timer triggers fired from the engine's clock (virtual or real), with the host's schedule monitor.

Timers only poll ``clock.now()``: they never register a wake-up, so they are no reason for the
virtual clock to skip ahead. When the clock has moved past more than one occurrence (a skip, or a
host that was down), the function runs once with ``IsPastDue`` true, as the real host does.
Schedule status (Last/Next) is kept in ``<state>/timers.json`` like the host's schedule monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from devhost.app_loader import FunctionInfo
from devhost.invoke import Invoker
from devhost.keys import write_private
from devhost.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, parse_schedule
from devhost.worker.protos import protos

log = logging.getLogger("devhost.timers")
NEVER = "0001-01-01T00:00:00"


class Clock(Protocol):
    def now(self) -> datetime: ...


class RealClock:
    """Used only when no durable engine is available."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment else NEVER


def timer_payload(past_due: bool, last: datetime | None, nxt: datetime, updated: datetime) -> str:
    """The JSON the host sends for a timer trigger."""
    return json.dumps(
        {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {"Last": _iso(last), "Next": _iso(nxt), "LastUpdated": _iso(updated)},
            "IsPastDue": past_due,
        }
    )


def to_timer_request(payload: str) -> Any:
    """The trigger payload on the wire (``TypedData.json``); the worker's converter makes the TimerRequest."""
    return protos.TypedData(json=payload)


@dataclass
class TimerState:
    fn: FunctionInfo
    schedule: CronSchedule | IntervalSchedule
    monitor: bool
    next: datetime | None = None
    last: datetime | None = None


def load_timers(functions: list[FunctionInfo]) -> list[TimerState]:
    """Parse every timer schedule up front so a bad schedule or missing setting stops startup."""
    timers = []
    for fn in functions:
        raw = fn.schedule
        try:
            schedule = parse_schedule(raw)
            schedule.next_after(datetime.now(UTC))  # "0 0 0 31 FEB *" parses but never fires
        except ScheduleError as exc:
            raise ScheduleError(f"timer function '{fn.name}': {exc}") from None
        monitor = fn.use_monitor
        timers.append(TimerState(fn, schedule, monitor is not False))
    return timers


class TimerRunner:
    def __init__(
        self,
        functions: list[FunctionInfo],
        clock: Clock,
        invoker: Invoker,
        state_dir: Path,
        enabled: bool = True,
        poll_seconds: float = 0.2,
    ) -> None:
        self.timers = {t.fn.name.lower(): t for t in load_timers(functions)}
        self.clock = clock
        self.invoker = invoker
        self.status_path = state_dir / "timers.json"
        self.enabled = enabled
        self.poll_seconds = poll_seconds
        self._tasks: list[asyncio.Task] = []

    def _load_status(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.status_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_status(self) -> None:
        status = {
            t.fn.name: {"Last": _iso(t.last), "Next": _iso(t.next), "LastUpdated": _iso(self.clock.now())}
            for t in self.timers.values()
            if t.monitor and t.next
        }
        write_private(self.status_path, json.dumps(status, indent=2))

    async def start(self) -> None:
        if not self.enabled:
            return
        now = self.clock.now()
        saved = self._load_status()
        for timer in self.timers.values():
            natural = timer.schedule.next_after(now)
            timer.next = natural
            record = saved.get(timer.fn.name) if timer.monitor else None
            if record:
                with contextlib.suppress(ValueError, KeyError):
                    stored_next = datetime.fromisoformat(record["Next"])
                    timer.last = None if record.get("Last") == NEVER else datetime.fromisoformat(record["Last"])
                    if stored_next <= natural:  # a later stored value means the schedule changed
                        timer.next = stored_next
            if timer.fn.run_on_startup:
                timer.next = now
        self._save_status()
        for timer in self.timers.values():
            self._tasks.append(asyncio.create_task(self._run(timer), name=f"timer:{timer.fn.name}"))
        for timer in self.timers.values():
            log.info("Timer '%s' (%s): next occurrence %s", timer.fn.name, timer.schedule.expression, _iso(timer.next))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, timer: TimerState) -> None:
        """One loop per function: invocations of one timer never overlap (the host's singleton lock)."""
        while True:
            now = self.clock.now()
            assert timer.next is not None
            if now < timer.next:
                await asyncio.sleep(self.poll_seconds)
                continue
            due = timer.next
            past_due = timer.schedule.next_after(due) <= now
            timer.next = timer.schedule.next_after(now)
            payload = timer_payload(past_due, timer.last, due, now)  # the status as it was, like the host
            timer.last = due
            if timer.monitor:
                self._save_status()
            if past_due:
                log.info("Timer '%s' is past due (scheduled %s, now %s)", timer.fn.name, _iso(due), _iso(now))
            with contextlib.suppress(Exception):  # already logged by the invoker; keep the schedule going
                await self.invoker.call(timer.fn, to_timer_request(payload), reason=f"Timer fired at {_iso(now)}")

    def manual_payload(self, fn: FunctionInfo) -> str:
        """What ``POST /admin/functions/{name}`` passes: not past due, current schedule status."""
        now = self.clock.now()
        timer = self.timers.get(fn.name.lower())
        nxt = timer.next if timer and timer.next else (timer.schedule.next_after(now) if timer else now)
        return timer_payload(False, timer.last if timer else None, nxt, now)
