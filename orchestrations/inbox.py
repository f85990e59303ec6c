"""The external events of one rotation, as the Durable Python SDK really delivers them.

Three behaviours of the SDK (azure-functions-durable, `models/DurableOrchestrationContext.py` and
`models/TaskOrchestrationExecutor.py`) shape this:
- A task already yielded in one `task_any` is left out of the next one's actions (`CompoundTask.__init__`
  skips `_is_scheduled` children), so a waiter reused across races can fail to end a later race: every
  race gets a fresh waiter.
- An event goes to the newest *open* waiter of its name (`set_task_value` pops the last one). Between two
  races (while an activity runs) that is a waiter of an earlier race which nobody is awaiting: every
  waiter made is kept and the ones that fired are collected before each race (`arrived`).
- An event raised while no waiter of its name is open is kept in `deferred_tasks` (one per name: a later
  one replaces it) and handed to every waiter of that name yielded later (`_add_to_open_tasks` never
  removes it), so one forged event raised early would complete each fresh waiter at once. It is dropped
  once delivered (`arrived`: the deferred event seen when this race's waiters were made is the one they
  received; a newer one arrived during the race and waits for the next), at the same point of every
  replay, so deterministically: the deliver-once semantics of the Durable Task Framework's event buffer.
- Events that arrive together while the orchestrator runs an activity (two consumers acknowledging in
  the same instant, while the first ack is judged) each need an open waiter, or all but the last are
  lost in that one-per-name buffer: a race can listen with spare waiters (`listen_all`); those that
  did not fire stay open and catch the burst, and the next `arrived` hands them out.
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
        self.pending: Any = None  # the deferred event this race's waiters received when yielded

    def _deferred(self) -> dict[Any, Any]:
        deferred = getattr(self.ctx, "deferred_tasks", None)
        return deferred if isinstance(deferred, dict) else {}

    def listen(self) -> Any:
        """A fresh waiter for the next race."""
        return self.listen_all(1)[0]

    def listen_all(self, count: int) -> list[Any]:
        """`count` fresh waiters for the next race: one to end it, the rest spares for a burst."""
        self.pending = self._deferred().get(self.name)
        made = [self.ctx.wait_for_external_event(self.name) for _ in range(max(count, 1))]
        self.waiters.extend(made)
        return made

    def arrived(self) -> list[Any]:
        """The waiters that fired since the last call, oldest first (their events in arrival order)."""
        fired = [w for w in self.waiters if w.is_completed]
        if fired:
            self.waiters = [w for w in self.waiters if not w.is_completed]
        deferred = self._deferred()
        if self.pending is not None and deferred.get(self.name) is self.pending:
            deferred.pop(self.name)  # delivered to the waiters yielded after it: never again
        self.pending = None
        return fired
