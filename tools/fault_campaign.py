"""`make test-faults`: run fault schedules (tools/fault_matrix.py) against the real app on devhost and the
emulators, and check after each run what must hold (tools/fault_checks.py).

    python -m tools.fault_campaign --schedules 500 --seed 7      # the coverage sample, then random runs
    python -m tools.fault_campaign --seed 7 --only 12 --keep      # replay one schedule, keep its state

Each run starts a fresh stack (devhost on a virtual clock + emulators) in its own folder, seeds two
targets (a host key and a function key, each with a current Key Vault version that expires soon, so the
timer's tick rotates both), installs the schedule's faults, fires the tick, kills the host where the
schedule says, and waits for both rotations to end. A run's folder is deleted unless it found a
violation (or --keep): the folder is the reproduction.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from emulators.core.invariants import Place, scan, secret_values, state_files
from rotation import naming
from rotation.durations import format_timestamp
from rotation.policy import Policy, Target, load_policy
from tools import fault_checks
from tools.demo_seed import OPERATOR, create_operator_keys, seed_sites
from tools.devhost_launcher import POLICY, ROOT, DemoStack
from tools.fault_matrix import (
    CALL_SITES,
    CLIENT_TIMEOUT_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    SITES,
    STALL_LATENCY_MS,
    TARGETS,
    Fault,
    Schedule,
    combos,
    coverage_sample,
    random_schedule,
)
from tools.fault_matrix import campaign as make_campaign

STAGE_ORDER = ("provisioning", "verifying", "overlap", "gate", "held", "revoking", "watching")
RUN_TIMEOUT = 150.0
CALL_RETRIES = 2  # the campaign policy's calls.retries: a call makes at most this many + 1 tries
POLL = 0.02


@dataclass
class RunResult:
    schedule: Schedule
    violations: list[str] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # why a rotation did not complete
    crashed: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # crash points or faults the run never reached
    fired: set[tuple[str, str]] = field(default_factory=set)  # (call site, kind) that hit a call
    seconds: float = 0.0
    folder: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        outcome = ", ".join(f"{t}={o}" for t, o in self.outcomes.items())
        verdict = "ok" if self.ok else f"{len(self.violations)} VIOLATION(S)"
        return f"{self.schedule.name}: {verdict} in {self.seconds:.1f} s [{outcome}] crashed at {self.crashed or '-'}"


class CampaignStack(DemoStack):
    """The demo stack with the campaign's policy (short client timeouts) and a quicker virtual clock."""

    def __init__(self, state_dir: Path, policy_path: Path) -> None:
        super().__init__(state_dir)
        self.policy_path = policy_path

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["ROTATION_POLICY_PATH"] = str(self.policy_path)
        # Long enough for the campaign to see a rotation waiting in its overlap (and install the faults
        # meant for after it) before the clock jumps, even with other stacks and tests on the machine.
        env["DEVHOST_CLOCK_IDLE_GRACE"] = "0.4"
        return env


def write_policy(folder: Path) -> Path:
    """The local demo policy for the two campaign targets, with budgets that make faults cheap to wait
    out: quick probe retries and short client timeouts."""
    data = json.loads((ROOT / POLICY).read_text())
    data["$schema"] = str((ROOT / "config" / "rotation-policy.schema.json").as_uri())
    data["targets"] = [t for t in data["targets"] if t["id"] in TARGETS]
    defaults = data["defaults"]
    defaults["probe"] = {"attempts": 4, "delay": "PT1S"}
    defaults["calls"] = {
        "connectTimeout": f"PT{CLIENT_TIMEOUT_SECONDS}S",
        "readTimeout": f"PT{CLIENT_TIMEOUT_SECONDS}S",
        "retries": CALL_RETRIES,
        "maxRetryAfter": f"PT{MAX_RETRY_AFTER_SECONDS}S",
    }
    path = folder / "rotation-policy.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def campaign_policy(stack: CampaignStack) -> Policy:
    env = {"KEY_VAULT_URL": stack.emulator["keyVault"], **stack.app_settings()}
    return load_policy(stack.policy_path, env)


def seed_current_versions(stack: DemoStack, targets: Iterable[Target], soft_deleted: Sequence[str]) -> None:
    """Each target's operator key stored as this product's current version, expiring within the overlap
    (so it is due now, with a previous version to re-tag and revoke). Secrets listed in `soft_deleted`
    are then deleted: Key Vault keeps the name and answers 409 to the next write until it is recovered."""
    now = datetime.now(UTC)
    for target in targets:
        with stack.web_client_as(OPERATOR, target.function_app.subscription_id) as web:
            app = target.function_app
            if target.key_scope.kind == "function":
                keys = dict(web.web_apps.list_function_keys(app.resource_group, app.name, target.key_scope.function))
                keys = keys.get("properties") if isinstance(keys.get("properties"), dict) else keys
            else:
                keys = web.web_apps.list_host_keys(app.resource_group, app.name).function_keys or {}
        value = next(v for k, v in keys.items() if k.lower() == target.base_key_name.lower())
        rotation_id = naming.rotation_id(target.id, "scheduled", now - timedelta(days=20))
        tags = naming.secret_tags(target.id, rotation_id, target.base_key_name, "current")
        client = stack.secret_client_as(OPERATOR, target.key_vault.vault_url)
        with client:
            client.set_secret(target.key_vault.secret_name, value, tags=tags, expires_on=now + timedelta(hours=1))
            if target.id in soft_deleted:
                client.begin_delete_secret(target.key_vault.secret_name).wait()


class Run:
    """One schedule against one fresh stack."""

    def __init__(self, schedule: Schedule, folder: Path) -> None:
        self.schedule = schedule
        self.folder = folder
        self.stack = CampaignStack(folder / "state", write_policy(folder))
        self.result = RunResult(schedule, folder=folder)
        self.installed: set[int] = set()  # indexes of schedule faults installed
        self.stalls: dict[str, str] = {}  # call site -> "installed" / "spent"
        self.rule_ids: dict[int, Fault] = {}  # emulator rule id -> the schedule's fault
        self.kills: list[float] = []  # when the host was killed (epoch seconds)
        self.statuses: dict[str, dict[str, Any] | None] = {t: None for t in TARGETS}

    # -- faults and kills ---------------------------------------------------------------------------
    def install(self, fault: Fault) -> None:
        response = self.stack.control("POST", "faults", json=fault.rule())
        response.raise_for_status()
        self.rule_ids[int(response.json()["ids"][0])] = fault

    def install_stall(self, site_name: str) -> None:
        """A call of this site that never answers in time: the host is killed while it waits."""
        operation = SITES[site_name].operation
        rule = {"operation": operation, "mode": "latency", "latency_ms": STALL_LATENCY_MS, "times": 1}
        self.stack.control("POST", "faults", json=rule).raise_for_status()
        self.stalls[site_name] = "installed"

    def stall_hit(self) -> str | None:
        """The installed stall a call is waiting in now, if any."""
        by_operation = {SITES[site].operation: site for site, state in self.stalls.items() if state == "installed"}
        for rule in self.stack.control_json("faults")["value"]:
            site = by_operation.get(rule["operation"])
            if site and rule["latency_ms"] == STALL_LATENCY_MS and rule["hits"]:
                return site
        return None

    def kill_and_restart(self, point: str) -> None:
        assert self.stack.process is not None
        self.stack.process.kill()  # SIGKILL: in-flight work (and the emulator's answer) is lost
        self.stack.process.wait()
        self.kills.append(time.time())
        self.result.crashed.append(point)
        self.stack.start()

    # -- the run -------------------------------------------------------------------------------------
    def reached(self, target_id: str, stage: str) -> bool:
        status = self.statuses.get(target_id)
        if status is None:
            return False
        if status.get("runtimeStatus") in fault_checks.TERMINAL:
            return True
        now = (status.get("customStatus") or {}).get("stage")
        return now in STAGE_ORDER and STAGE_ORDER.index(now) >= STAGE_ORDER.index(stage)

    def poll(self) -> None:
        for target_id in TARGETS:
            self.statuses[target_id] = self.stack.status(naming.rotation_instance_id(target_id))

    def done(self) -> bool:
        """Both rotations ended, or the tick's scheduler ended and skipped the one that never started."""
        schedulers = self.stack.instances(naming.SCHEDULER_INSTANCE_PREFIX)
        if not schedulers or any(s.get("runtimeStatus") not in fault_checks.TERMINAL for s in schedulers):
            return False
        skipped = self.skipped_by_scheduler()
        return all(
            (s and s.get("runtimeStatus") in fault_checks.TERMINAL) or (s is None and t in skipped)
            for t, s in self.statuses.items()
        )

    def execute(self) -> RunResult:
        started = time.monotonic()
        schedule = self.schedule
        stage_crash = next((c.removeprefix("stage:") for c in schedule.crashes if c.startswith("stage:")), None)
        calls = [c.removeprefix("call:").split("@") for c in schedule.crashes if c.startswith("call:")]
        self.stack.start()
        try:
            policy = campaign_policy(self.stack)
            targets = [t for t in policy if t.id in TARGETS]
            seed_sites(self.stack, targets)
            create_operator_keys(self.stack, targets)
            seed_current_versions(self.stack, targets, schedule.soft_deleted)
            for i, fault in enumerate(schedule.faults):
                if fault.phase == "start":
                    self.install(fault)
                    self.installed.add(i)
            for site, phase in calls:
                if phase == "start":
                    self.install_stall(site)
            if self.stack.run_function("rotation_timer") != 202:
                self.result.violations.append("the timer function did not start")
                return self.result
            deadline = time.monotonic() + RUN_TIMEOUT
            while time.monotonic() < deadline:
                self.poll()
                if self.done():
                    break
                in_overlap = {t for t in TARGETS if self.reached(t, "overlap")}
                for i, fault in enumerate(schedule.faults):
                    if i not in self.installed and fault.target in in_overlap:
                        self.install(fault)
                        self.installed.add(i)
                for site, phase in calls:
                    if phase == "overlap" and site not in self.stalls and in_overlap:
                        self.install_stall(site)
                if stage_crash and self.reached(TARGETS[0], stage_crash):
                    seen = (self.statuses[TARGETS[0]] or {}).get("customStatus", {}) or {}
                    self.kill_and_restart(f"stage:{stage_crash} (seen {seen.get('stage')})")
                    stage_crash = None
                    continue
                stalled = self.stall_hit()
                if stalled:
                    phase = next(p for s, p in calls if s == stalled)
                    self.stalls[stalled] = "spent"  # the rule fired its one time
                    self.kill_and_restart(f"call:{stalled}@{phase}")
                    continue
                time.sleep(POLL)
            unreached = [f"{s}@{p}" for s, p in calls if self.stalls.get(s) != "spent"]
            self.finish(targets, stage_crash, unreached)
        except Exception as exc:  # a broken run is a finding, reported with its schedule
            self.result.violations.append(f"campaign error: {type(exc).__name__}: {exc}")
        finally:
            self.stack.stop()
            self.result.seconds = time.monotonic() - started
        return self.result

    def finish(self, targets: list[Target], stage_crash: str | None, unreached: list[str]) -> None:
        result = self.result
        if stage_crash:
            result.missed.append(f"stage:{stage_crash}")
        result.missed += [f"call:{point}" for point in unreached]
        self.poll()
        skipped = self.skipped_by_scheduler()
        for target_id, status in self.statuses.items():
            output = (status or {}).get("output") or {}
            if status is None:
                result.outcomes[target_id] = "skipped" if target_id in skipped else "never started"
            else:
                result.outcomes[target_id] = str(output.get("outcome") or status.get("runtimeStatus"))
            if output.get("error"):
                result.errors[target_id] = str(output["error"])
        result.errors.update({t: f"skipped by the scheduler: {why}" for t, why in skipped.items()})
        rules = self.stack.control_json("faults")["value"]
        state = self.stack.control_json("state")
        changes = self.stack.control_json("changes")["value"]
        requests = self.stack.control_json("requests")["value"]
        self.stack.control("DELETE", "faults")
        for rule in rules:
            fault = self.rule_ids.get(int(rule["id"]))
            if fault is not None and rule["hits"]:
                result.fired.add((fault.site, fault.kind))
            elif fault is not None:
                result.missed.append(f"fault never fired: {fault.label}")
        violations = result.violations
        violations += fault_checks.check_finished(self.statuses, skipped)
        violations += fault_checks.check_loud(self.statuses, state)
        violations += fault_checks.check_one_rotation_at_a_time(state, TARGETS)
        violations += fault_checks.check_i2_journal(changes, requests, targets, self.schedule.soft_deleted)
        violations += fault_checks.check_end_state(state, targets, self.schedule.soft_deleted)
        violations += fault_checks.check_completed_cleanly(self.statuses, state, targets)
        waits = self.retry_after_by_operation(requests)
        violations += fault_checks.check_retry_after(requests, waits, tries_per_call=CALL_RETRIES + 1, kills=self.kills)
        self.stack.stop()
        texts = [Place.text(label, text) for text, label in self.stack.seen.items()]
        files = state_files(self.stack.state_dir, exclude=[self.stack.state_dir / "emulator"])
        violations += [f"I1: {finding}" for finding in scan(secret_values(state), [*files, *texts])[:5]]

    def skipped_by_scheduler(self) -> dict[str, str]:
        """Targets the tick's scheduler skipped, with its reason (from its output summary)."""
        found: dict[str, str] = {}
        for instance in self.stack.instances(naming.SCHEDULER_INSTANCE_PREFIX):
            output = instance.get("output") or {}
            for item in output.get("skipped") or [] if isinstance(output, dict) else []:
                found[str(item.get("targetId"))] = str(item.get("reason"))
        return {t: why for t, why in found.items() if t in TARGETS}

    def retry_after_by_operation(self, requests: Sequence[dict[str, Any]]) -> dict[str, float]:
        waits: dict[str, float] = {}
        for fault in self.schedule.faults:
            if fault.retry_after is None:
                continue
            pattern = SITES[fault.site].operation
            for row in requests:
                operation = str(row.get("operation") or "")
                if fnmatchcase(operation, pattern):
                    waits[operation] = max(waits.get(operation, 0.0), fault.retry_after)
        return waits


def run_schedule(schedule: Schedule, root: Path, *, keep: bool = False) -> RunResult:
    folder = root / f"seed{schedule.seed}-{schedule.index:04d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "schedule.json").write_text(json.dumps(schedule.to_json(), indent=2))
    result = Run(schedule, folder).execute()
    (folder / "result.json").write_text(json.dumps({"violations": result.violations, "outcomes": result.outcomes}))
    if result.ok and not keep:
        shutil.rmtree(folder, ignore_errors=True)
        result.folder = None
    return result


def run_campaign(
    schedules: Sequence[Schedule], root: Path, *, parallel: int = 2, keep: bool = False, out: Any = print
) -> list[RunResult]:
    """Runs schedules `parallel` at a time (each stack idles most of its time on the virtual clock)."""
    results: list[RunResult] = []
    started = time.monotonic()

    def one(schedule: Schedule) -> RunResult:
        return run_schedule(schedule, root, keep=keep)

    with ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
        for done, result in enumerate(pool.map(one, schedules), start=1):
            results.append(result)
            out(f"[{done}/{len(schedules)} {time.monotonic() - started:.0f} s] {result.line()}")
            for line in result.schedule.describe() if not result.ok else []:
                out(f"      {line}")
            for target_id, error in result.errors.items():
                out(f"    {target_id}: {error}")
            for missed in result.missed:
                out(f"    (not reached: {missed})")
            for violation in result.violations:
                out(f"    ✗ {violation}")
            if result.folder is not None and not result.ok:
                out(f"    state kept in {result.folder}")
    return results


def summary(results: Sequence[RunResult]) -> list[str]:
    failed = [r for r in results if not r.ok]
    crashes = sum(len(r.crashed) for r in results)
    faults = sum(len(r.schedule.faults) for r in results)
    outcomes: dict[str, int] = {}
    for r in results:
        for outcome in r.outcomes.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    fired = set().union(*(r.fired for r in results)) if results else set()
    lines = [
        f"{len(results)} schedules, {faults} faults installed ({len(fired)} of {len(combos())} site x kind pairs "
        f"hit a call), {crashes} host kills, "
        f"{len(failed)} with violations ({sum(len(r.violations) for r in failed)} violations)",
        "rotation outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
    ]
    if failed:
        lines.append("reproduce: " + "; ".join(f"--seed {r.schedule.seed} --only {r.schedule.index}" for r in failed))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=0, help="how many (default: the coverage sample)")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--only", type=int, action="append", help="run only this schedule index (repeatable)")
    parser.add_argument("--parallel", type=int, default=2, help="stacks at once (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder, not only failing ones")
    parser.add_argument("--out", type=Path, help="where run folders go (default: a temporary folder)")
    args = parser.parse_args(argv)

    sample = coverage_sample(args.seed)
    count = args.schedules or len(sample)
    if args.only:
        schedules = [sample[i] if i < len(sample) else random_schedule(args.seed, i) for i in args.only]
    else:
        schedules = list(make_campaign(args.seed, count))
    root = args.out or Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    print(f"fault campaign: seed {args.seed}, {len(schedules)} schedules, {args.parallel} at a time, runs in {root}")
    print(f"matrix: {len(CALL_SITES)} call sites, started {format_timestamp(datetime.now(UTC))}")
    results = run_campaign(schedules, root, parallel=args.parallel, keep=args.keep)
    for line in summary(results):
        print(line)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
