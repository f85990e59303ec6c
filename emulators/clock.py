"""The emulators' clock: the wall clock, or the clock of the host that runs them in its process.

devhost starts the emulators on its own event loop and hands them its durable engine's clock
(`use`), so on `--clock virtual` the emulated services stamp keys, journal entries, Key Vault
versions and audit rows with the same time the orchestrations see, and the target apps' key caches
(emulators/host_cache.py) age with it: a virtual-time run sees the cache behaviour a real-time run
sees. Token lifetimes, SAS expiry and Event Grid's delivery schedule stay on the wall clock: they are
compared with times that clients and the delivery worker take from the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

_source: Callable[[], float] = time.time


def now() -> float:
    """Seconds since the epoch on the shared clock."""
    return _source()


def utcnow() -> datetime:
    return datetime.fromtimestamp(_source(), UTC)


def use(source: Callable[[], float] | None) -> None:
    """Read time from `source` (seconds since the epoch) from now on; None: the wall clock again."""
    global _source
    _source = source or time.time
