"""The Durable engine of devhost: schedules orchestration episodes, activities and durable timers.

One scheduler coroutine on the host's loop drives everything from SQLite (``store.py``):

- an instance with ready messages gets an episode (``episode.py``, run on a small thread pool);
  episodes of one instance never overlap, and each commits its new history plus the work it
  schedules in one transaction;
- queued activities run on a bounded ``ThreadPoolExecutor``; a completion is committed together
  with the removal of its work item, so after a crash an activity runs again only if its result
  was not recorded (at-least-once, as on Azure);
- durable timers are messages that become visible at their fire time.

Virtual clock: when nothing can run (no ready message, no activity queued or running, no episode
in flight) for ``idle_grace`` seconds of real time, the clock jumps to the earliest pending timer
(or an external wake-up source) and the timer fires. The grace gives an HTTP caller that just saw
a state change (e.g. "waiting for approval") a moment to act before a deadline timer wins; tests
that must not race switch auto-advance off and move the clock explicitly. Status reads never
count as activity, so a poller cannot hold the clock still. A test driver in the host's own process
can end the grace early (``skip_permit``) once it has read the idle state and only waits for time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from devhost.app_loader import LoadedApp
from devhost.durable import events as ev
from devhost.durable.activities import run_activity
from devhost.durable.clock import EngineClock
from devhost.durable.episode import (
    EpisodeResult,
    is_orchestrator,
    new_execution_id,
    run_episode,
    unknown_orchestrator_message,
)
from devhost.durable.events import RUNNING_STATUSES, TERMINAL_STATUSES
from devhost.durable.store import ActivityWork, Instance, Store

if TYPE_CHECKING:
    from devhost.durable.rpc_listener import RpcListener

log = logging.getLogger("devhost.durable.engine")

DEFAULT_IDLE_GRACE = 0.25
MAX_POLL_SECONDS = 1.0
PERMIT_POLL_SECONDS = 0.01  # how soon an idle engine with a skip permit hook looks at it again


class EngineError(Exception):
    """A client request the engine refuses; the HTTP layer maps it to the host's status code."""


class UnknownOrchestrator(EngineError):
    pass


class InstanceExists(EngineError):
    def __init__(self, status: str) -> None:
        super().__init__(f"An Orchestration instance with the status {status} already exists.")
        self.status = status


class InstanceNotFound(EngineError):
    pass


class InstanceGone(EngineError):
    pass


class DurableEngine:
    def __init__(
        self,
        app: LoadedApp,
        state_dir: Path,
        *,
        clock: str = "virtual",
        max_activity_workers: int = 8,
        task_hub: str = "KeyRotationHub",
        max_orchestrator_workers: int = 4,
        idle_grace: float | None = None,
    ) -> None:
        self.app = app
        self.state_dir = Path(state_dir)
        self.task_hub = task_hub
        self.clock = EngineClock(clock)
        self.max_activity_workers = max(1, int(max_activity_workers))
        self.max_orchestrator_workers = max(1, int(max_orchestrator_workers))
        env_grace = os.environ.get("DEVHOST_CLOCK_IDLE_GRACE")
        self.idle_grace = idle_grace if idle_grace is not None else float(env_grace or DEFAULT_IDLE_GRACE)
        self.store: Store | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._scheduler_task: asyncio.Task[None] | None = None
        self._episodes: dict[str, asyncio.Task[None]] = {}
        self._activities: dict[int, asyncio.Task[None]] = {}
        self._activity_pool: ThreadPoolExecutor | None = None
        self._orchestrator_pool: ThreadPoolExecutor | None = None
        self._last_busy = time.monotonic()
        self._stopping = False
        # A test driver in the host's own process may let the clock skip before the grace ends: called with
        # the moment the engine was last busy, it answers whether the driver has read the state since and
        # has nothing to do until time passes (tests/inprocess_stack.py, ClockPermit).
        self.skip_permit: Callable[[float], bool] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the state, restore the clock, resume in-flight work (queued messages and activities)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.store = Store(self.state_dir / "durable.sqlite3", on_commit=self._persist_clock)
        persisted = self.store.get_meta("clock_now")
        auto = self.store.get_meta("clock_auto_advance")
        self.clock.restore(ev.parse_time(persisted) if persisted else None, None if auto is None else auto == "1")
        self.clock.on_advance(self._on_clock_advance)
        with self.store.transaction():
            pass  # persists the clock's starting point
        self._activity_pool = ThreadPoolExecutor(self.max_activity_workers, thread_name_prefix="devhost-activity")
        self._orchestrator_pool = ThreadPoolExecutor(
            self.max_orchestrator_workers, thread_name_prefix="devhost-orchestrator"
        )
        self._stopping = False
        queued = self.store.count_activities()
        pending = len(self.store.ready_instance_ids(ev.fmt_time(self.clock.now())))
        log.info(
            "Durable engine started (hub %s, clock %s at %s, %d queued activities, %d instances with work)",
            self.task_hub,
            self.clock.mode,
            ev.fmt_time(self.clock.now()),
            queued,
            pending,
        )
        self._scheduler_task = asyncio.create_task(self._scheduler(), name="devhost-durable-scheduler")

    async def stop(self) -> None:
        self._stopping = True
        self._kick()
        if self._scheduler_task:
            self._scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
        if self._episodes:
            await asyncio.wait(list(self._episodes.values()), timeout=10)
        for task in list(self._activities.values()):
            task.cancel()  # their results are not recorded: they run again after a restart
        if self._activities:
            await asyncio.wait(list(self._activities.values()), timeout=1)
        for pool in (self._activity_pool, self._orchestrator_pool):
            if pool:
                pool.shutdown(wait=False, cancel_futures=True)
        if self.store:
            with self.store.transaction():
                pass
            self.store.close()
            self.store = None
        log.info("Durable engine stopped")

    def _persist_clock(self, store: Store) -> None:
        if self.clock.virtual:
            store.set_meta("clock_now", ev.fmt_time(self.clock.now()))
        store.set_meta("clock_auto_advance", "1" if self.clock.auto_advance else "0")

    def _on_clock_advance(self) -> None:
        if self.store is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._after_clock_change)

    def _after_clock_change(self) -> None:
        if self.store is not None:
            with self.store.transaction():
                pass
        self._kick()

    def set_auto_advance(self, enabled: bool) -> None:
        self.clock.auto_advance = enabled
        self._last_busy = time.monotonic()
        self._after_clock_change()

    def _kick(self, busy: bool = False) -> None:
        if busy:
            self._last_busy = time.monotonic()
        if self._wake is not None:
            self._wake.set()

    @property
    def _db(self) -> Store:
        if self.store is None:
            raise RuntimeError("the durable engine is not started")
        return self.store

    # -- client operations (the HTTP API calls these) -------------------------------------------
    def start_new(self, name: str, instance_id: str | None, input_text: str | None) -> str:
        info = self.app.get(name)
        if info is None or info.trigger_type != "orchestrationTrigger":
            raise UnknownOrchestrator(unknown_orchestrator_message(name))
        instance_id = instance_id or new_execution_id()
        now = self.clock.now()
        store = self._db
        with store.transaction():
            existing = store.get_instance(instance_id)
            if existing is not None and existing.status in RUNNING_STATUSES:
                raise InstanceExists(existing.status)
            execution_id = new_execution_id()
            stamp = ev.fmt_time(now)
            store.put_instance(
                Instance(
                    instance_id=instance_id,
                    name=info.name,
                    execution_id=execution_id,
                    status="Pending",
                    input=input_text,
                    output=None,
                    custom_status=None,
                    created_time=stamp,
                    last_updated_time=stamp,
                )
            )
            start = ev.execution_started(
                now, name=info.name, instance_id=instance_id, execution_id=execution_id, input_text=input_text
            )
            store.add_message(instance_id, execution_id, "start", start)
        log.info(
            "Scheduled orchestration %s (instance %s)%s", info.name, instance_id, " (replaced)" if existing else ""
        )
        self._kick(busy=True)
        return instance_id

    def raise_event(self, instance_id: str, event_name: str, input_text: str | None) -> None:
        store = self._db
        with store.transaction():
            instance = store.get_instance(instance_id)
            if instance is None:
                raise InstanceNotFound(instance_id)
            if instance.status in TERMINAL_STATUSES:
                raise InstanceGone(instance.status)
            store.add_message(instance_id, None, "event", ev.event_raised(self.clock.now(), event_name, input_text))
        log.info("Raised event %s for instance %s", event_name, instance_id)
        self._kick(busy=True)

    def terminate(self, instance_id: str, reason: str | None) -> None:
        store = self._db
        with store.transaction():
            instance = store.get_instance(instance_id)
            if instance is None:
                raise InstanceNotFound(instance_id)
            if instance.status in TERMINAL_STATUSES:
                raise InstanceGone(instance.status)
            store.add_message(instance_id, None, "terminate", {"reason": reason})
        log.info("Terminate requested for instance %s", instance_id)
        self._kick(busy=True)

    def purge(self, instance_id: str) -> int:
        """Delete a finished instance and its history. Running instances are not purged (0)."""
        store = self._db
        with store.transaction():
            instance = store.get_instance(instance_id)
            if instance is None or instance.status not in TERMINAL_STATUSES:
                return 0
            store.purge_instance(instance_id)
        log.info("Purged instance %s", instance_id)
        return 1

    def purge_where(self, created_from: str, created_to: str | None, statuses: list[str] | None) -> int:
        store = self._db
        count = 0
        with store.transaction():
            for instance in store.list_instances(created_from=created_from, created_to=created_to, statuses=statuses):
                if instance.status in TERMINAL_STATUSES:
                    store.purge_instance(instance.instance_id)
                    count += 1
        log.info("Purged %d instances", count)
        return count

    def get_instance(self, instance_id: str) -> Instance | None:
        return self._db.get_instance(instance_id)

    def list_instances(self, **filters: Any) -> list[Instance]:
        return self._db.list_instances(**filters)

    def get_history(self, instance_id: str) -> list[dict[str, Any]]:
        """The raw stored history of the current execution (DTFx shape, EventType integers)."""
        return self._db.get_history(instance_id)

    def is_idle(self) -> bool:
        store = self._db
        return (
            not self._episodes
            and not self._activities
            and store.count_activities() == 0
            and not store.ready_instance_ids(ev.fmt_time(self.clock.now()))
        )

    async def wait_for_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_idle():
            if time.monotonic() > deadline:
                raise TimeoutError("the durable engine did not go idle")
            await asyncio.sleep(0.01)

    # -- HTTP -------------------------------------------------------------------------------------
    def client_binding_json(self, host_base_url: str, system_key: str, rpc_base_url: str) -> str:
        from devhost.durable.http_api import client_binding

        return json.dumps(client_binding(host_base_url, system_key, self.task_hub, rpc_base_url))

    def add_routes(self, app: web.Application, *, master_key: str, system_key: str) -> None:
        """The public port's durable routes (the rpc API is not among them: see ``rpc_listener``)."""
        from devhost.durable.http_api import DurableHttpApi

        DurableHttpApi(self, master_key=master_key, system_key=system_key).add_routes(app)

    def rpc_listener(self, *, system_key: str, first_port: int | None = None) -> RpcListener:
        """The loopback listener for ``rpcBaseUrl``; the caller starts and stops it."""
        from devhost.durable.http_api import DurableHttpApi
        from devhost.durable.rpc_listener import DEFAULT_PORT, RpcListener

        api = DurableHttpApi(self, master_key="", system_key=system_key)
        return RpcListener(api.add_rpc_routes, DEFAULT_PORT if first_port is None else first_port)

    # -- scheduler --------------------------------------------------------------------------------
    async def _scheduler(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            delay = MAX_POLL_SECONDS
            try:
                self._dispatch()
                self._maybe_skip()
                delay = self._next_delay()
            except Exception:
                log.exception("durable scheduler iteration failed")
            if self._wake.is_set():
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _dispatch(self) -> None:
        store = self._db
        now = ev.fmt_time(self.clock.now())
        for instance_id in store.ready_instance_ids(now):
            if len(self._episodes) >= self.max_orchestrator_workers:
                break
            if instance_id in self._episodes:
                continue
            self._last_busy = time.monotonic()
            task = asyncio.create_task(self._episode(instance_id), name=f"episode:{instance_id}")
            self._episodes[instance_id] = task
        free = self.max_activity_workers - len(self._activities)
        for work in store.queued_activities(list(self._activities), free):
            self._last_busy = time.monotonic()
            self._activities[work.id] = asyncio.create_task(self._activity(work), name=f"activity:{work.id}")

    def _next_delay(self) -> float:
        now = self.clock.now()
        delay = MAX_POLL_SECONDS
        upcoming = self._db.next_visible_at(ev.fmt_time(now))
        if upcoming:
            delay = min(delay, (ev.parse_time(upcoming) - now).total_seconds())
        if self._may_skip() and (upcoming or self.clock.next_external_wakeup() is not None):
            # Wake when the grace ends only if there is something to skip to; otherwise idle polling
            # would spin at the floor below.
            delay = min(delay, self.idle_grace - (time.monotonic() - self._last_busy))
            if self.skip_permit is not None:
                delay = min(delay, PERMIT_POLL_SECONDS)
        return max(delay, 0.005)

    def _may_skip(self) -> bool:
        return self.clock.virtual and self.clock.auto_advance and self.is_idle()

    def _maybe_skip(self) -> None:
        if not self._may_skip():
            return
        permitted = self.skip_permit is not None and self.skip_permit(self._last_busy)
        if time.monotonic() - self._last_busy < self.idle_grace and not permitted:
            return
        now = self.clock.now()
        candidates = [ev.parse_time(t) for t in [self._db.next_visible_at(ev.fmt_time(now))] if t]
        external = self.clock.next_external_wakeup()
        if external is not None and external > now:
            candidates.append(external)
        if not candidates:
            return
        target = min(candidates)
        self.clock.advance_to(target)
        log.info("Virtual clock skipped %.0f s to %s", (target - now).total_seconds(), ev.fmt_time(target))
        self._last_busy = time.monotonic()

    # -- episodes ---------------------------------------------------------------------------------
    async def _episode(self, instance_id: str) -> None:
        try:
            store = self._db
            now = self.clock.now()
            messages = store.ready_messages(instance_id, ev.fmt_time(now))
            instance = store.get_instance(instance_id)
            if not messages:
                return
            if instance is None:
                with store.transaction():
                    store.delete_messages([m.id for m in messages])
                return
            history = store.get_history(instance_id) if instance.status == "Running" else []
            assert self._loop is not None
            result = await self._loop.run_in_executor(
                self._orchestrator_pool, run_episode, self.app, instance, history, messages, now
            )
            self._commit_episode(instance, result, now)
        except Exception:
            log.exception("episode of instance %s failed inside devhost", instance_id)
            await asyncio.sleep(0.5)  # do not spin on a poisoned message
        finally:
            self._episodes.pop(instance_id, None)
            self._kick(busy=True)

    def _commit_episode(self, loaded: Instance, result: EpisodeResult, now: datetime) -> None:
        store = self._db
        instance_id = loaded.instance_id
        with store.transaction():
            current = store.get_instance(instance_id)
            if current is None or current.execution_id != loaded.execution_id:
                store.delete_messages(result.consumed)
                return  # replaced or purged while the episode ran
            store.delete_messages(result.consumed)
            if result.reset_history:
                store.replace_history(instance_id, result.new_events)
            elif result.new_events:
                store.append_history(instance_id, result.new_events)
            if result.instance_fields:
                store.update_instance(instance_id, **result.instance_fields)
            if result.clear_timers:
                store.delete_all_timers(instance_id)
            if result.canceled_timers:
                store.delete_timers(instance_id, loaded.execution_id, result.canceled_timers)
            for task_id, name, input_text in result.activities:
                store.add_activity(instance_id, loaded.execution_id, task_id, name, input_text)
            for msg in result.messages:
                store.add_message(
                    msg.instance_id,
                    msg.execution_id,
                    msg.kind,
                    msg.body,
                    visible_at=msg.visible_at,
                    timer_id=msg.timer_id,
                )
            for child in result.children:
                existing = store.get_instance(child.instance.instance_id)
                if existing is not None and existing.status in RUNNING_STATUSES:
                    # DTFx drops a second ExecutionStarted for an instance that has one ("dupe execution
                    # started event, swallow this one": DurableTask.Core TaskOrchestrationDispatcher,
                    # ReconcileMessagesWithState). Nothing reaches the parent: its task never completes.
                    log.warning(
                        "Sub-orchestration %s of %s dropped: instance %s is %s (duplicate ExecutionStarted)",
                        child.instance.name,
                        instance_id,
                        child.instance.instance_id,
                        existing.status,
                    )
                    continue
                store.put_instance(child.instance)
                store.add_message(child.instance.instance_id, child.instance.execution_id, "start", child.start_event)
        if result.ran:
            log.info(
                "Orchestration %s (instance %s) episode: %s; replayed %d history events; "
                "scheduled %d activities, %d timers, %d sub-orchestrations",
                loaded.name,
                instance_id,
                result.outcome,
                result.replayed,
                len(result.activities),
                sum(1 for m in result.messages if m.timer_id is not None),
                len(result.children),
            )
        elif result.outcome:
            log.info("Orchestration %s (instance %s): %s", loaded.name, instance_id, result.outcome)

    # -- activities -------------------------------------------------------------------------------
    async def _activity(self, work: ActivityWork) -> None:
        try:
            info = self.app.get(work.name)
            assert self._loop is not None
            started = time.monotonic()
            outcome = await self._loop.run_in_executor(
                self._activity_pool, run_activity, self.app, info, work.name, work.input
            )
            elapsed = time.monotonic() - started
            now = self.clock.now()
            store = self._db
            with store.transaction():
                if not store.delete_activity(work.id):
                    return
                instance = store.get_instance(work.instance_id)
                if instance is None or instance.execution_id != work.execution_id:
                    return  # the instance was replaced or purged: the result has nowhere to go
                if outcome.succeeded:
                    event = ev.task_completed(now, work.task_id, outcome.result)
                else:
                    event = ev.task_failed(now, work.task_id, outcome.reason, outcome.details)
                store.add_message(work.instance_id, work.execution_id, "event", event)
            if outcome.succeeded:
                log.info(
                    "Activity %s (instance %s, task %d) completed in %.3f s",
                    work.name,
                    work.instance_id,
                    work.task_id,
                    elapsed,
                )
            else:
                log.warning(
                    "Activity %s (instance %s, task %d) failed with %s",
                    work.name,
                    work.instance_id,
                    work.task_id,
                    outcome.error_type,
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("activity %s (instance %s) could not be run by devhost", work.name, work.instance_id)
            await asyncio.sleep(0.5)
        finally:
            self._activities.pop(work.id, None)
            self._kick(busy=True)

    def is_known_orchestrator(self, name: str) -> bool:
        return is_orchestrator(self.app, name)
