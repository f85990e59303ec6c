"""The external events of one rotation, as the Durable Python SDK really delivers them.

Three behaviours of the SDK (azure-functions-durable, `models/DurableOrchestrationContext.py` and
`models/TaskOrchestrationExecutor.py`) shape this:
- A task already yielded in one `task_any` is left out of the next one's actions (`CompoundTask.__init__`
  skips `_is_scheduled` children), so a waiter reused across races can fail to end a later race: every
  race gets a fresh waiter.
- An event goes to the newest *open* waiter of its name (`set_task_value` pops the last one). Between two
  races (while an activity runs) that is a waiter of an earlier race which nobody is awaiting: every
  waiter made is kept and the ones that fired are collected before each race (`arrived`).
- An event raised while no waiter of its name is open is kept in `deferred_tasks` and handed to every later
  waiter of that name (`_add_to_open_tasks` never removes it), so one forged event raised early would
  complete each fresh waiter at once. Dropping it once collected (at the same point of every replay, so
  deterministically) gives the deliver-once semantics of the Durable Task Framework's event buffer.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df


class Inbox:
    """Every waiter made for one event name; `arrived` hands each fired one out exactly once."""

    def __init__(self, context: df.DurableOrchestrationContext, name: str) -> None:
        self.ctx = context
        self.name = name
        self.waiters: list[Any] = []

    def listen(self) -> Any:
        """A fresh waiter for the next race."""
        waiter = self.ctx.wait_for_external_event(self.name)
        self.waiters.append(waiter)
        return waiter

    def arrived(self) -> list[Any]:
        """The waiters that fired since the last call, oldest first (their events in arrival order)."""
        fired = [w for w in self.waiters if w.is_completed]
        if fired:
            self.waiters = [w for w in self.waiters if not w.is_completed]
            deferred = getattr(self.ctx, "deferred_tasks", None)
            if isinstance(deferred, dict):
                deferred.pop(self.name, None)
        return fired
