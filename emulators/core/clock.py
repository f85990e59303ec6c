"""The emulators' clock: the wall clock, or the clock of the host that runs them in its process.

devhost starts the emulators on its own event loop and hands them its durable engine's clock
(`use`), so on `--clock virtual` the emulated services stamp keys, journal entries, Key Vault
versions and audit rows with the same time the orchestrations see, and the target apps' key caches
(emulators/arm/host_cache.py) age with it: a virtual-time run sees the cache behaviour a real-time run
sees. Token lifetimes, SAS expiry and Event Grid's delivery schedule stay on the wall clock: they are
compared with times that clients and the delivery worker take from the wall clock.

The clock never runs backwards: a restarted devhost resumes its virtual time from the last state commit,
which can be a moment before the last thing the emulators stamped (an activity running at a kill), so
the emulators start from the newest time they recorded (`hold_at_least`) and never answer less than
what they answered before. The journal and request log stay in time order, which the invariant checkers
rely on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

_source: Callable[[], float] = time.time
_floor = float("-inf")
_lock = threading.Lock()


def now() -> float:
    """Seconds since the epoch on the shared clock, never less than an earlier answer."""
    global _floor
    with _lock:
        _floor = max(_source(), _floor)
        return _floor


def hold_at_least(moment: float) -> None:
    """Never answer earlier than `moment` (the newest time the emulators' store holds)."""
    global _floor
    with _lock:
        _floor = max(_floor, moment)


def utcnow() -> datetime:
    return datetime.fromtimestamp(now(), UTC)


def use(source: Callable[[], float] | None) -> None:
    """Read time from `source` (seconds since the epoch) from now on; None: the wall clock again."""
    global _source, _floor
    with _lock:
        _source = source or time.time
        if source is None:
            _floor = float("-inf")
