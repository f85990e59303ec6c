"""How fast a tick may start rotations, from the published limits of the services a rotation calls.

A rotation's calls come in phases that follow its start (provision and announce at once; gate queries
and revoke an overlap later), so rotations started at most `r` per second call each service at about `r`
times their calls per phase, whatever the overlap. The tick therefore paces its starts with one token
bucket (`StartBucket`) whose rate and burst keep every phase under `SHARE` of each limit below: a tick of
1,000 due targets with a wide window slows down instead of meeting a storm of 429s, and leaves the rest
of each limit to whatever else uses the same identity, subscription and vault. Pure functions of virtual
time, so the orchestrator stays deterministic.

The limits and where they are published:
- ARM, per subscription and principal, token bucket per region (Azure Resource Manager "Understand how
  Azure Resource Manager throttles requests", request-limits-and-throttling): writes 200 burst, 10/s;
  deletes 200, 10/s; reads 250, 25/s. The `listkeys` POSTs are counted as writes (the page names only
  reads, writes and deletes; counting a POST as a write is the cautious reading).
- Key Vault, per vault per region ("Azure Key Vault service limits", service-limits): secret CREATE
  300 per 10 s; all other transactions 4,000 per 10 s.
- Log Analytics query API, per user ("Azure Monitor service limits", log queries): 200 queries per
  30 s, 5 concurrent (the rest queue, a 429 after 3 minutes queued).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotation.durations import format_timestamp, parse_timestamp

SHARE = 0.5  # of each limit, for one tick


@dataclass(frozen=True)
class Limit:
    """One published limit and how many of its calls one rotation makes in its busiest phase."""

    name: str
    burst: float
    per_second: float
    calls_per_rotation: int

    @property
    def starts_per_second(self) -> float:
        return SHARE * self.per_second / self.calls_per_rotation

    @property
    def start_burst(self) -> float:
        return SHARE * self.burst / self.calls_per_rotation


# Calls per rotation, over all its phases, as the benchmark counts them for a host-key rotation
# (`operations_per_key`, docs/performance.md): ARM 3 `listkeys` POSTs and 1 key PUT (writes), 1 DELETE,
# 1 site GET; Key Vault 1 new version, 5 reads; 4 Log Analytics queries.
LIMITS = (
    Limit("ARM writes per subscription and principal", 200, 10, 4),
    Limit("ARM deletes per subscription and principal", 200, 10, 1),
    Limit("ARM reads per subscription and principal", 250, 25, 1),
    Limit("Key Vault secret creates per vault", 300, 30, 1),
    Limit("Key Vault other transactions per vault", 4000, 400, 6),
    Limit("Log Analytics queries per user", 200, 200 / 30, 4),
)
JITTER = 0.2  # a paced start waits up to 20 % longer, by a fraction fixed per target


MIN_STARTS_PER_MINUTE, MAX_STARTS_PER_MINUTE = 1, 6000


@dataclass(frozen=True)
class Pace:
    per_second: float
    burst: float


def default_pace() -> Pace:
    """The tightest of the limits: what one tick may start without crowding any of them."""
    return Pace(
        per_second=min(limit.starts_per_second for limit in LIMITS),
        burst=max(1.0, min(limit.start_burst for limit in LIMITS)),
    )


def pace(starts_per_minute: object = None) -> Pace:
    """The default pace, or an operator's rate (`ROTATION_MAX_STARTS_PER_MINUTE`, from 1 to 6,000, for
    an identity and workspace the tick has to itself) with the default burst; anything else means the
    default."""
    base = default_pace()
    try:
        wanted = float(str(starts_per_minute))
    except ValueError:
        return base
    if not MIN_STARTS_PER_MINUTE <= wanted <= MAX_STARTS_PER_MINUTE:
        return base
    return Pace(wanted / 60, base.burst)


def jitter(key: str) -> float:
    """A fraction in [0, JITTER) fixed by `key`: the same on every replay, different across targets."""
    digest = hashlib.sha256(key.encode()).digest()
    return JITTER * int.from_bytes(digest[:4], "big") / 2**32


@dataclass(frozen=True)
class StartBucket:
    """Tokens left at a moment; carried in the tick's state as plain JSON (`to_json`)."""

    tokens: float
    at: datetime

    def refilled(self, pace: Pace, now: datetime) -> StartBucket:
        gained = max((now - self.at).total_seconds(), 0.0) * pace.per_second
        return StartBucket(min(pace.burst, self.tokens + gained), max(now, self.at))

    def wait(self, pace: Pace, key: str) -> timedelta:
        """How long until a start may take a token (zero when one is there), jittered by `key`."""
        if self.tokens >= 1:
            return timedelta(0)
        seconds = (1 - self.tokens) / pace.per_second
        return timedelta(seconds=seconds * (1 + jitter(key)))

    def take(self) -> StartBucket:
        return StartBucket(self.tokens - 1, self.at)

    def to_json(self) -> dict[str, object]:
        return {"tokens": round(self.tokens, 6), "at": format_timestamp(self.at)}

    @staticmethod
    def from_json(data: object, pace: Pace, now: datetime) -> StartBucket:
        """The carried bucket, or a full one (the tick's first start)."""
        if isinstance(data, dict) and isinstance(data.get("tokens"), int | float) and isinstance(data.get("at"), str):
            return StartBucket(float(data["tokens"]), parse_timestamp(data["at"]))
        return StartBucket(pace.burst, now)
