"""The fault matrix: every external call a rotation makes, every fault the cloud can throw at it, every
point where the host can die — and seeded schedules that combine them.

Pure data and a deterministic generator: a schedule is a function of (seed, index), so any failure found
by `make test-faults` is reproduced with `python -m tools.fault_campaign --seed S --only I`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

# The two demo targets cover both key scopes: a host function key and one function's key.
TARGETS = ("demo-orders", "demo-reports-export")
# A fault installed at "start" hits the first calls (provision, verify); at "overlap" it hits what comes
# after the wait (adoption checks, the gate, revoke, watch, the last publish).
PHASES = ("start", "overlap")

# Client timeout the campaign's policy sets, and the latency that goes past it.
CLIENT_TIMEOUT_SECONDS = 2
TIMEOUT_LATENCY_MS = (CLIENT_TIMEOUT_SECONDS + 1) * 1000
# The longest Retry-After the campaign's policy lets a call wait for (a longer one fails the call).
MAX_RETRY_AFTER_SECONDS = 5
LONG_RETRY_AFTER_SECONDS = 3600
# A stalled call: the host is killed while it waits for this answer.
STALL_LATENCY_MS = 60_000


@dataclass(frozen=True)
class CallSite:
    """One kind of external call, as the emulator names its operation (globs cover slots and scopes)."""

    name: str
    operation: str
    used_by: str
    kinds: tuple[str, ...]
    phases: tuple[str, ...] = PHASES  # where a rule can still find a call to hit

    def match_for(self, target_id: str) -> str | None:
        """A path substring that aims a rule at one target's calls (None: any target)."""
        return _MATCH.get(self.name, {}).get(target_id)


COMMON_KINDS = ("throttled", "throttled-long", "host-runtime-500", "unavailable-503", "timeout", "reset")
# A service down for good (until the run ends): the step must give up within the policy's budget and
# say so. Only where giving up can leave a clean state: a revoke that cannot delete or disable leaves
# what it could not remove (reported), and an Event Grid down for good cannot carry the report.
OUTAGE = "outage"
OUTAGE_SITES = ("arm.list", "arm.put", "keyvault.list", "keyvault.set", "keyvault.get", "logs.query", "probe")

CALL_SITES: tuple[CallSite, ...] = (
    CallSite("arm.list", "arm.list_*_keys", "provision (read the new value), revoke", COMMON_KINDS),
    CallSite("arm.put", "arm.put_*_secret", "provision (create the key)", COMMON_KINDS, ("start",)),
    CallSite("arm.delete", "arm.delete_*_secret", "revoke, compensation", COMMON_KINDS, ("overlap",)),
    CallSite("keyvault.list", "keyvault.list_versions", "due targets, provision", COMMON_KINDS, ("start",)),
    CallSite("keyvault.set", "keyvault.set_secret", "provision (store)", (*COMMON_KINDS, "conflict-409"), ("start",)),
    CallSite("keyvault.get", "keyvault.get_secret", "verify (read by version for the probe)", COMMON_KINDS, ("start",)),
    CallSite("keyvault.update", "keyvault.update_secret", "provision (re-tag), revoke (disable)", COMMON_KINDS),
    CallSite("eventgrid.publish", "eventgrid.publish", "every step's events", COMMON_KINDS),
    CallSite("logs.query", "logs.query", "adoption checks, gate, watch", COMMON_KINDS),
    CallSite("probe", "target.invoke", "verify (call the target with the new key)", COMMON_KINDS, ("start",)),
)
SITES = {site.name: site for site in CALL_SITES}

# Path substrings per target: app names for ARM and the probe, secret names for Key Vault.
_APPS = {"demo-orders": "/sites/demo-orders/", "demo-reports-export": "/sites/demo-reports/"}
_SECRETS = {"demo-orders": "/demo-orders-client-key", "demo-reports-export": "/demo-reports-export-key"}
_MATCH: dict[str, dict[str, str]] = {
    "arm.list": _APPS,
    "arm.put": _APPS,
    "arm.delete": _APPS,
    "keyvault.list": _SECRETS,
    "keyvault.set": _SECRETS,
    "keyvault.get": _SECRETS,
    "keyvault.update": _SECRETS,
    "probe": {"demo-orders": "/_targets/demo-orders", "demo-reports-export": "/_targets/demo-reports"},
}

# Where the host is killed: when a rotation's status shows a stage, or while a call is in flight.
STAGE_BOUNDARIES = ("provisioning", "verifying", "overlap", "gate", "revoking", "watching")
MID_CALL = (
    ("keyvault.list", "start"),
    ("keyvault.get", "start"),
    ("arm.list", "start"),
    ("arm.put", "start"),
    ("keyvault.set", "start"),
    ("keyvault.update", "start"),
    ("probe", "start"),
    ("eventgrid.publish", "start"),
    ("logs.query", "overlap"),
    ("arm.delete", "overlap"),
    ("keyvault.update", "overlap"),
)
CRASH_POINTS: tuple[str, ...] = (
    *(f"stage:{stage}" for stage in STAGE_BOUNDARIES),
    *(f"call:{site}@{phase}" for site, phase in MID_CALL),
)


@dataclass(frozen=True)
class Fault:
    site: str
    kind: str
    target: str
    phase: str
    times: int | None = 1
    retry_after: float | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} on {self.site} ({self.target}, {self.phase}, x{self.times or '∞'})"

    def rule(self) -> dict[str, Any]:
        """The emulator fault rule (POST /_emulator/faults)."""
        site = SITES[self.site]
        rule: dict[str, Any] = {"operation": site.operation, "times": self.times}
        match = site.match_for(self.target)
        if match:
            rule["match"] = match
        if self.kind == "throttled":
            rule.update(status=429, code="TooManyRequests", retry_after=self.retry_after or 1)
        elif self.kind == "throttled-long":  # longer than the policy lets a call wait: the call gives up
            rule.update(status=429, code="TooManyRequests", retry_after=LONG_RETRY_AFTER_SECONDS)
        elif self.kind == OUTAGE:
            rule.update(
                status=503, code="ServiceUnavailable", message=_runtime_message(self.site, "ServiceUnavailable")
            )
            rule["times"] = None
        elif self.kind == "host-runtime-500":
            rule.update(
                status=500, code="InternalServerError", message=_runtime_message(self.site, "InternalServerError")
            )
        elif self.kind == "unavailable-503":
            rule.update(
                status=503, code="ServiceUnavailable", message=_runtime_message(self.site, "ServiceUnavailable")
            )
            if self.retry_after is not None:
                rule["retry_after"] = self.retry_after
        elif self.kind == "timeout":
            rule.update(mode="latency", latency_ms=TIMEOUT_LATENCY_MS)
        elif self.kind == "reset":
            rule.update(mode="reset")
        elif self.kind == "conflict-409":
            rule.update(status=409, code="Conflict", message="There was a conflict while processing the request.")
        else:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        return rule


def _runtime_message(site: str, code: str) -> str:
    if site.startswith("arm."):
        return f"Encountered an error ({code}) from host runtime."
    return f"The service is temporarily unavailable ({code})."


@dataclass(frozen=True)
class Schedule:
    """One run: faults to install, host kills, and state the world starts in."""

    seed: int
    index: int
    faults: tuple[Fault, ...] = ()
    crashes: tuple[str, ...] = ()
    soft_deleted: tuple[str, ...] = ()  # targets whose Key Vault secret was deleted (soft delete) beforehand

    @property
    def name(self) -> str:
        return f"seed {self.seed} #{self.index}"

    def describe(self) -> list[str]:
        lines = [f"fault: {f.label}" for f in self.faults]
        lines += [f"crash: {c}" for c in self.crashes]
        lines += [f"state: Key Vault secret of {t} soft-deleted" for t in self.soft_deleted]
        return lines or ["no faults (control run)"]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


def combos() -> list[tuple[str, str]]:
    """Every (call site, fault kind) pair the matrix must cover."""
    return [(site.name, kind) for site in CALL_SITES for kind in site.kinds] + [(s, OUTAGE) for s in OUTAGE_SITES]


def _fault(rng: random.Random, site: str, kind: str, phase: str | None = None, target: str | None = None) -> Fault:
    times = (
        None
        if kind == OUTAGE
        else 1
        if kind == "throttled-long"
        else rng.choice((1, 1, 2, 3) if kind != "timeout" else (1, 2))
    )
    retry_after = float(rng.choice((1, 2))) if kind == "throttled" else None
    phase = phase or ("start" if kind == OUTAGE else None)
    if kind == "unavailable-503" and rng.random() < 0.5:
        retry_after = 1.0
    # An outage ends its rotation early; aimed at the second target, it leaves the first free to reach
    # the later crash points (kills watch the first target's stages).
    target = TARGETS[1] if kind == OUTAGE else target or rng.choice(TARGETS)
    return Fault(site, kind, target, phase or rng.choice(SITES[site].phases), times, retry_after)


def coverage_sample(seed: int, faults_per_run: int = 9) -> list[Schedule]:
    """Few runs that put every fault kind on every call site once and reach every crash point once,
    shuffled by `seed`. A run holds at most one fault per call site and kills the host up to four times:
    once at a stage, in up to two calls of the first steps and in one call after the overlap (never in a
    call it also faults). The first run starts with a soft-deleted Key Vault secret."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test schedules, not secrets
    pending: dict[str, list[str]] = {}
    for site, kind in combos():
        pending.setdefault(site, []).append(kind)
    for kinds in pending.values():
        rng.shuffle(kinds)
    stages = [c for c in CRASH_POINTS if c.startswith("stage:")]
    early = [c for c in CRASH_POINTS if c.endswith("@start")]
    late = [c for c in CRASH_POINTS if c.endswith("@overlap")]
    for points in (stages, early, late):
        rng.shuffle(points)
    schedules: list[Schedule] = []
    while any(pending.values()) or stages or early or late:
        crashes = [points.pop() for points in (stages, early, early, late) if points]
        stalled = {c.removeprefix("call:").split("@")[0] for c in crashes if c.startswith("call:")}
        # The sites with the most kinds still to cover go first, so the sample stays short.
        reaches_late = any(c in LATE_STAGES or c.endswith("@overlap") for c in crashes)
        allowed = {
            site: [k for k in kinds if not (reaches_late and _ends_every_rotation(site, k))]
            for site, kinds in pending.items()
        }
        open_sites = [site for site, kinds in allowed.items() if kinds and site not in stalled]
        open_sites.sort(key=lambda site: -len(pending[site]))
        picked: list[tuple[str, str]] = []
        for site in open_sites:
            if len(picked) >= faults_per_run:
                break
            # Faults that make a step give up at once are capped per run, so the steps' retry budgets
            # still finish the rotations and the later crash points stay reachable.
            room = [k for k in allowed[site] if sum(1 for _, p in picked if p == k) < RUN_CAPS.get(k, faults_per_run)]
            if room:
                picked.append((site, room[-1]))
        for site, kind in picked:
            pending[site].remove(kind)
        # With an outage the second target's rotation ends early: the other faults go to the first, except
        # on the Key Vault listing, the tick's first call, which a give-up there would skip the first for.
        outage = any(kind == OUTAGE for _, kind in picked)
        aim = {site: (TARGETS[1] if site == "keyvault.list" else TARGETS[0]) if outage else None for site, _ in picked}
        chosen = [_fault(rng, site, kind, target=aim[site]) for site, kind in picked]
        soft = (rng.choice(TARGETS),) if not schedules else ()
        schedules.append(Schedule(seed, len(schedules), tuple(chosen), tuple(crashes), soft))
    return schedules


LATE_STAGES = ("stage:revoking", "stage:watching")
RUN_CAPS = {OUTAGE: 1, "throttled-long": 2}


def _ends_every_rotation(site: str, kind: str) -> bool:
    """An outage on a call no rule can aim at one target (a Logs query) holds every rotation: a run that
    must reach the later crash points cannot have it."""
    return kind == OUTAGE and SITES[site].match_for(TARGETS[1]) is None


def random_schedule(seed: int, index: int) -> Schedule:
    """A random run: 0 to 4 faults (any phase, 1 to 3 times), sometimes a kill, sometimes a soft-deleted secret."""
    rng = random.Random(f"{seed}/{index}")  # noqa: S311 - reproducible test schedules, not secrets
    all_combos = combos()
    count = rng.choice((0, 1, 2, 2, 3, 3, 4))
    faults: list[Fault] = []
    used: set[str] = set()
    for site, kind in rng.sample(all_combos, k=len(all_combos)):
        if len(faults) >= count:
            break
        if site not in used:
            faults.append(_fault(rng, site, kind))
            used.add(site)
    crashes = [rng.choice(CRASH_POINTS)] if rng.random() < 0.5 else []
    soft = [rng.choice(TARGETS)] if rng.random() < 0.15 else []
    return Schedule(seed, index, tuple(faults), tuple(crashes), tuple(soft))


def campaign(seed: int, count: int) -> Iterator[Schedule]:
    """`count` schedules: the coverage sample first, then random ones."""
    sample = coverage_sample(seed)
    yield from sample[:count]
    for index in range(len(sample), count):
        yield random_schedule(seed, index)


def coverage(schedules: Iterable[Schedule]) -> tuple[set[tuple[str, str]], set[str]]:
    """The (site, kind) pairs and crash points a set of schedules reaches (by construction)."""
    pairs: set[tuple[str, str]] = set()
    points: set[str] = set()
    for schedule in schedules:
        pairs.update((f.site, f.kind) for f in schedule.faults)
        points.update(schedule.crashes)
    return pairs, points
