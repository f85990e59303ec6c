"""The rotation policy: which keys are rotated, where they are stored, how long keys overlap.

The JSON file is validated against `config/rotation-policy.schema.json` (the operators' contract) and
then by the cross-field rules a schema cannot say (bounds of durations, overlap < interval, unique
targets and secrets). Every problem is reported at once, each naming the target and the field, e.g.
`targets[2] (id "orders-api"): overlap: must be at most 30 days`.

Loading order: `%SETTING%` references resolved from the environment -> JSON Schema -> defaults merged
into each target (built-in defaults <- policy `defaults` <- target) -> semantic rules -> frozen model.
jsonschema is imported only when a policy is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from rotation.durations import DurationError, as_utc, describe, format_duration, parse_duration

APP_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = APP_ROOT / "config" / "rotation-policy.schema.json"
POLICY_PATH_SETTING = "ROTATION_POLICY_PATH"
DEFAULT_POLICY_PATH = "config/rotation-policy.json"
MAX_POLICY_BYTES = 4 * 1024 * 1024

KeyScopeKind = Literal["host", "function", "masterKey"]
Signal = Literal["consumer-dependencies", "target-http-logs", "target-requests", "kql"]
HoldAction = Literal["approve", "abort"]

SIGNALS: tuple[str, ...] = ("consumer-dependencies", "target-http-logs", "target-requests", "kql")
KQL_PLACEHOLDERS: tuple[str, ...] = ("targetId", "appName", "hostName", "functionName", "slot")
MASTER_KEY_NAME = "_master"
SYSTEM_KEYS_REFUSED = (
    "systemKeys cannot be rotated: they belong to extensions (durabletask_extension, eventgrid_extension), "
    "are embedded in webhook URLs such as Event Grid subscriptions and Durable status URLs, and their values "
    "cannot be set; use host, function or masterKey"
)
MASTER_KEY_NEEDS_FLAG = (
    "must be true to rotate the master key (emergency rotation only: the master key cannot be revoked, only "
    "renewed in place, so there is no overlap)"
)

# Bounds: (minimum, maximum) of each duration field.
BOUNDS: dict[str, tuple[timedelta, timedelta]] = {
    "interval": (timedelta(days=1), timedelta(days=365)),
    "overlap": (timedelta(hours=1), timedelta(days=30)),
    "probe.delay": (timedelta(seconds=1), timedelta(minutes=5)),
    "probe.timeout": (timedelta(seconds=1), timedelta(minutes=1)),
    "probe.revokedWithin": (timedelta(minutes=1), timedelta(hours=1)),
    "monitoring.watch": (timedelta(0), timedelta(days=1)),
    "hold.deadline": (timedelta(hours=1), timedelta(days=14)),
    "emergency.maxOverlap": (timedelta(0), timedelta(days=1)),
    "calls.connectTimeout": (timedelta(seconds=1), timedelta(minutes=2)),
    "calls.readTimeout": (timedelta(seconds=1), timedelta(minutes=5)),
    "calls.callTimeout": (timedelta(seconds=1), timedelta(minutes=8)),
    "calls.maxRetryAfter": (timedelta(0), timedelta(minutes=10)),
    "calls.step.firstInterval": (timedelta(seconds=1), timedelta(hours=1)),
    "calls.step.maxInterval": (timedelta(seconds=1), timedelta(days=1)),
}

# The bottom layer of the merge: what a field is when neither the target nor `defaults` sets it.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "interval": "P90D",
    "overlap": "P3D",
    "monitoring": {"threshold": {"maxFailures": 10, "maxRatio": 2.0}, "watch": "PT30M"},
    "hold": {"deadline": "P2D", "defaultAction": "abort"},
    "emergency": {"maxOverlap": "PT1H"},
    "calls": {
        "connectTimeout": "PT10S",
        "readTimeout": "PT30S",
        "callTimeout": "PT90S",
        "retries": 3,
        "maxRetryAfter": "PT60S",
        "step": {"attempts": 5, "firstInterval": "PT15S", "backoff": 2.0, "maxInterval": "PT2M"},
    },
    "consumers": [],
}
BUILTIN_PROBE: dict[str, Any] = {
    "method": "GET",
    "expectStatus": [200],
    "attempts": 12,
    "delay": "PT10S",
    "timeout": "PT10S",
    "revokedWithin": "PT5M",
}

_SETTING_REF = re.compile(r"%%|%([A-Za-z_][A-Za-z0-9_]*)%")
_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9]*)\}")
_SITE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.web/sites/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_GENERATION_SUFFIX = re.compile(r"-\d{8}t\d{6}z-[a-z]$")
APP_SERVICE_SUFFIX = ".azurewebsites.net"
# A secure unique default host name's labels after `{app}[-{slot}]`: `-{hash}.{region}-NN`
# (e.g. myapp-ds27dh7271aah175.westus-01.azurewebsites.net; docs/configuration.md cites the source).
_UNIQUE_HOST_TAIL = re.compile(r"^-[a-z0-9]{16}\.[a-z0-9]+-\d{2}$")


# -- problems ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyIssue:
    """One problem: where (`targets[2] (id "orders-api")`, `defaults`, or '' for the document), which
    field (dotted, e.g. `keyVault.secretName`), and what is wrong."""

    location: str
    field: str
    message: str

    def __str__(self) -> str:
        parts = [p for p in (self.location, self.field) if p]
        return ": ".join([*parts, self.message])


class PolicyError(ValueError):
    """The policy cannot be used. `issues` lists every problem found; str() has one per line."""

    def __init__(self, issues: Iterable[PolicyIssue], source: str | None = None) -> None:
        self.issues: tuple[PolicyIssue, ...] = tuple(issues)
        self.source = source
        head = f"invalid rotation policy{f' {source}' if source else ''}"
        super().__init__("\n".join([f"{head} ({len(self.issues)} problem(s)):", *(f"  {i}" for i in self.issues)]))


# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionApp:
    """The target app (Microsoft.Web/sites) and, when set, its deployment slot (slots have their own keys)."""

    subscription_id: str
    resource_group: str
    name: str
    slot: str | None = None

    @property
    def site_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Web/sites/{self.name}"
        )

    @property
    def resource_id(self) -> str:
        """The ARM id whose keys are rotated: the site, or the slot under it."""
        return f"{self.site_id}/slots/{self.slot}" if self.slot else self.site_id

    @property
    def host_label(self) -> str:
        """`{app}[-{slot}]`, lower case: how App Service's host names for this app or slot begin."""
        return (f"{self.name}-{self.slot}" if self.slot else self.name).lower()

    @property
    def default_host_name(self) -> str:
        """`{app}[-{slot}].azurewebsites.net`, the global form. Not where the probe goes: that is ARM's
        `defaultHostName` (activities/site_hosts.py), which differs for a secure unique default host name."""
        return self.host_label + APP_SERVICE_SUFFIX

    def host_name_problem(self, host: str) -> str | None:
        """Why `host` cannot be one of the host names App Service gives this app or slot, or None. Only
        `{app}[-{slot}].azurewebsites.net` and `{app}[-{slot}]-{hash}.{region}-NN.azurewebsites.net` can be;
        ARM's list decides at run time which one this app has."""
        host = host.lower().rstrip(".")
        label = host.removesuffix(APP_SERVICE_SUFFIX)
        if label != host and (
            label == self.host_label
            or (label.startswith(self.host_label) and _UNIQUE_HOST_TAIL.match(label[len(self.host_label) :]))
        ):
            return None
        forms = f"{self.host_label}{APP_SERVICE_SUFFIX} or {self.host_label}-<hash>.<region>-01{APP_SERVICE_SUFFIX}"
        return f"host {host} is not one of the host names App Service gives {self.resource_id} ({forms})"


@dataclass(frozen=True)
class KeyScope:
    kind: KeyScopeKind
    function: str | None = None

    @property
    def host_key_type(self) -> str | None:
        """The ARM `keyType` path segment for host keys (functionKeys / masterKey); None for a function's keys."""
        return {"host": "functionKeys", "masterKey": "masterKey"}.get(self.kind)

    def describe(self) -> str:
        if self.kind == "function":
            return f"keys of function {self.function}"
        return "the master key" if self.kind == "masterKey" else "host function keys"


# Where the vault's diagnostic setting sends its audit: the resource-specific table (logAnalyticsDestinationType
# "Dedicated", what infra/modules/keyvault.bicep sets) or the shared AzureDiagnostics table (the default mode).
AUDIT_TABLES = ("AZKVAuditLogs", "AzureDiagnostics")
DEFAULT_AUDIT_TABLE = "AZKVAuditLogs"


@dataclass(frozen=True)
class KeyVaultRef:
    vault_url: str  # normalized: https://host[:port], lowercase host, no trailing slash
    secret_name: str
    audit_table: str = DEFAULT_AUDIT_TABLE  # the Log Analytics table holding this vault's audit (adoption)

    @property
    def vault_name(self) -> str:
        """The first label of the vault host: what Key Vault's Event Grid events call `VaultName`."""
        return self.vault_url.split("://", 1)[1].split(":", 1)[0].split(".", 1)[0]

    def secret_id(self, version: str | None = None) -> str:
        base = f"{self.vault_url}/secrets/{self.secret_name}"
        return f"{base}/{version}" if version else base


@dataclass(frozen=True)
class Probe:
    """How verify checks the target accepts the new key: `method path` with the key in x-functions-key."""

    path: str
    method: str = "GET"
    expect_status: tuple[int, ...] = (200,)
    attempts: int = 12
    delay: timedelta = timedelta(seconds=10)
    timeout: timedelta = timedelta(seconds=10)
    base_url: str | None = None  # None: https://{defaultHostName} as ARM reports it
    # After revoke: how long the old value may still be accepted before the rotation reports it degraded.
    revoked_within: timedelta = timedelta(minutes=5)

    @property
    def base_host(self) -> str | None:
        """The host `base_url` names (lower case), or None without one."""
        return (urlsplit(self.base_url).hostname or "").lower() if self.base_url else None

    def url(self, host_base_url: str) -> str:
        """`base_url` (already checked against ARM's host names) or `host_base_url`, then the path."""
        return (self.base_url or host_base_url).rstrip("/") + self.path


@dataclass(frozen=True)
class Threshold:
    """When the gate holds a rotation. Each test is optional (None = off); when both are on, both must be
    exceeded, so a noisy baseline alone or a handful of failures alone does not hold a rotation."""

    max_failures: int | None = 10
    max_ratio: float | None = 2.0

    def breached(self, failures: int, baseline: int) -> bool:
        tests: list[bool] = []
        if self.max_failures is not None:
            tests.append(failures > self.max_failures)
        if self.max_ratio is not None:
            tests.append(failures > self.max_ratio * max(baseline, 1))
        return bool(tests) and all(tests)

    def to_json(self) -> dict[str, Any]:
        return {"maxFailures": self.max_failures, "maxRatio": self.max_ratio}


@dataclass(frozen=True)
class Monitoring:
    signal: Signal
    workspace_id: str | None
    resource_id: str | None
    query: str | None
    threshold: Threshold
    watch: timedelta


@dataclass(frozen=True)
class Hold:
    deadline: timedelta
    default_action: HoldAction


@dataclass(frozen=True)
class StepRetry:
    """How the Durable runtime retries a failed step (an activity): a durable timer between attempts, so
    waiting costs nothing while the target's host restarts or a throttle passes."""

    attempts: int = 5
    first_interval: timedelta = timedelta(seconds=15)
    backoff: float = 2.0
    max_interval: timedelta = timedelta(minutes=2)

    def interval(self, retry: int) -> timedelta:
        """The durable timer after failed attempt number `retry` (1-based), as the Durable runtime computes it."""
        return min(self.first_interval * self.backoff ** (retry - 1), self.max_interval)

    def waits(self, attempts: int | None = None) -> timedelta:
        """Durable-timer time until a step that keeps failing is given up: one timer after every failed
        attempt — the last one too (DTFx checks the attempt count only when that timer fires)."""
        count = self.attempts if attempts is None else attempts
        return sum((self.interval(n) for n in range(1, count + 1)), timedelta(0))


@dataclass(frozen=True)
class CallBudget:
    """The discipline of every external call a rotation makes (ARM, Key Vault, Event Grid, Logs, the probe).

    Inside one call the SDK retries throttling, 5xx and dropped connections `retries` times, honouring a
    Retry-After of at most `max_retry_after` (a longer one fails the call at once, loudly, and the step's
    durable retry takes over) and giving up after about `call_timeout`. `step` is the durable retry of the
    whole activity. So a step gives up within about attempts x (calls x call_timeout) + step.waits()."""

    connect_timeout: timedelta = timedelta(seconds=10)
    read_timeout: timedelta = timedelta(seconds=30)
    call_timeout: timedelta = timedelta(seconds=90)
    retries: int = 3
    max_retry_after: timedelta = timedelta(seconds=60)
    step: StepRetry = field(default_factory=StepRetry)

    def to_json(self) -> dict[str, Any]:
        """Policy JSON form (what `calls` says once merged); parse_calls() of it gives this budget back."""
        return {
            "connectTimeout": format_duration(self.connect_timeout),
            "readTimeout": format_duration(self.read_timeout),
            "callTimeout": format_duration(self.call_timeout),
            "retries": self.retries,
            "maxRetryAfter": format_duration(self.max_retry_after),
            "step": {
                "attempts": self.step.attempts,
                "firstInterval": format_duration(self.step.first_interval),
                "backoff": self.step.backoff,
                "maxInterval": format_duration(self.step.max_interval),
            },
        }


@dataclass(frozen=True)
class Consumer:
    name: str
    object_id: str  # lowercase GUID


@dataclass(frozen=True)
class Target:
    id: str
    function_app: FunctionApp
    key_scope: KeyScope
    base_key_name: str  # MASTER_KEY_NAME for the master key
    key_vault: KeyVaultRef
    interval: timedelta
    overlap: timedelta
    monitoring: Monitoring
    hold: Hold
    emergency_max_overlap: timedelta
    consumers: tuple[Consumer, ...] = ()
    calls: CallBudget = field(default_factory=CallBudget)
    probe: Probe | None = None
    enabled: bool = True
    allow_master_key: bool = False
    description: str | None = None
    # The target exactly as merged and resolved, in policy JSON form: what to_json() returns.
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_master_key(self) -> bool:
        return self.key_scope.kind == "masterKey"

    @property
    def schedulable(self) -> bool:
        """Whether the scheduler may rotate it: enabled, and not the master key (emergency only)."""
        return self.enabled and not self.is_master_key

    def consumer(self, object_id: str) -> Consumer | None:
        wanted = object_id.lower()
        return next((c for c in self.consumers if c.object_id == wanted), None)

    def next_due(self, current_created: datetime) -> datetime:
        """When the key created at `current_created` is due for rotation."""
        return as_utc(current_created) + self.interval

    def secret_expiry(self, created: datetime) -> datetime:
        """Expiry of a Key Vault version created at `created`: next due + overlap (DESIGN, provision)."""
        return self.next_due(created) + self.overlap

    def kql_values(self, host_name: str | None = None) -> dict[str, str]:
        """Values for the KQL placeholders; host_name should be ARM's defaultHostName when known."""
        return {
            "targetId": self.id,
            "appName": self.function_app.name,
            "hostName": (host_name or self.function_app.default_host_name).lower(),
            "functionName": self.key_scope.function or "",
            "slot": self.function_app.slot or "",
        }

    @property
    def fingerprint(self) -> str:
        """sha256 of where this target's keys and their values go: the app (and slot), the key scope, the
        key name, the vault and secret, where and how the probe presents the new key. A rotation carries the
        fingerprint it started with and every step refuses to act once the deployed policy says otherwise;
        an edit of anything else (overlap, monitoring, consumers, budgets) leaves running rotations alone."""
        probe = self.source.get("probe")
        where = {
            "id": self.id,
            "functionApp": self.function_app.resource_id,
            "keyScope": {"kind": self.key_scope.kind, "function": self.key_scope.function},
            "allowMasterKey": self.allow_master_key,
            "baseKeyName": self.base_key_name,
            "keyVault": {"vaultUrl": self.key_vault.vault_url, "secretName": self.key_vault.secret_name},
            "probe": {k: probe.get(k) for k in ("baseUrl", "path", "method")} if isinstance(probe, Mapping) else None,
        }
        return hashlib.sha256(json.dumps(where, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The resolved, merged target in policy JSON form; parse_target() of it gives this target back.
        Safe to pass as orchestration input: a policy holds no secret values."""
        copy: dict[str, Any] = json.loads(json.dumps(self.source))
        return copy


@dataclass(frozen=True)
class Policy:
    targets: tuple[Target, ...]
    fingerprint: str  # sha256 of the resolved document: which policy a rotation ran under
    source: str | None = None

    def target(self, target_id: str) -> Target | None:
        return next((t for t in self.targets if t.id == target_id), None)

    def __iter__(self) -> Iterator[Target]:
        return iter(self.targets)

    def target_for_secret(self, secret_name: str, vault: str | None = None) -> Target | None:
        """The target storing its key in `secret_name` (Key Vault names are case-insensitive); `vault` (a
        vault name as in Key Vault events, or a vault URL) narrows it down when given."""
        for target in self.targets:
            kv = target.key_vault
            if kv.secret_name.lower() != secret_name.lower():
                continue
            if vault is None or vault.lower().rstrip("/") in (kv.vault_name.lower(), kv.vault_url.lower()):
                return target
        return None


# -- loading ----------------------------------------------------------------------------------------


def policy_path(environ: Mapping[str, str] | None = None) -> Path:
    """The policy file: app setting ROTATION_POLICY_PATH (relative paths are relative to the app root)."""
    env = os.environ if environ is None else environ
    path = Path(env.get(POLICY_PATH_SETTING, "").strip() or DEFAULT_POLICY_PATH)
    return path if path.is_absolute() else APP_ROOT / path


def load_policy(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Policy:
    """Read, resolve and validate a policy file; raises PolicyError listing every problem."""
    env = os.environ if environ is None else environ
    file = Path(path) if path is not None else policy_path(env)
    label = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise PolicyError(
            [PolicyIssue("", "", f"file not found (set {POLICY_PATH_SETTING} to the policy file)")], label
        ) from None
    except OSError as exc:
        raise PolicyError([PolicyIssue("", "", f"cannot be read: {exc.strerror}")], label) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError([PolicyIssue("", "", f"is larger than {MAX_POLICY_BYTES} bytes")], label)
    try:
        document = json.loads(raw)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise PolicyError([PolicyIssue("", "", f"is not valid JSON: {msg}{where}")], label) from None
    return parse_policy(document, env, source=label)


def current_policy() -> Policy:
    """`load_policy()` for hot paths (every API request, every Event Grid event): parsed again only when
    the file changes, so an edit still applies to the next request without re-validating on each. App
    settings cannot change under a running process (Azure restarts the app), so they are not a key."""
    file = policy_path()
    try:
        stat = file.stat()
    except OSError:
        return load_policy(file)  # raises the usual PolicyError naming the problem
    return _policy_at(str(file), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _policy_at(path: str, mtime_ns: int, size: int) -> Policy:
    return load_policy(path)


def parse_policy(
    document: Any,
    environ: Mapping[str, str] | None = None,
    source: str | None = None,
    *,
    resolve_settings: bool = True,
) -> Policy:
    """Validate a policy document (already parsed JSON); raises PolicyError listing every problem."""
    env = os.environ if environ is None else environ
    issues: list[PolicyIssue] = []
    resolved = _resolve_settings(document, env, (), document, issues) if resolve_settings else document
    if issues:
        raise PolicyError(issues, source)
    issues.extend(schema_issues(resolved))
    if issues:
        raise PolicyError(issues, source)
    targets = [_build_target(i, merge_defaults(resolved.get("defaults", {}), t), issues) for i, t in _targets(resolved)]
    issues.extend(_cross_target_issues(resolved))
    if issues:
        raise PolicyError(issues, source)
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()
    return Policy(
        targets=tuple(t for t in targets if t is not None),
        fingerprint=hashlib.sha256(canonical).hexdigest(),
        source=source,
    )


def parse_target(data: Mapping[str, Any]) -> Target:
    """One target in merged policy JSON form (Target.to_json()), validated by the same rules.

    Memoised on the canonical JSON: an orchestrator parses its target on every replay, and schema
    validation was 3 % of a rotation's CPU. A Target is frozen, so sharing one is safe."""
    return _parse_target(json.dumps(data, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=256)
def _parse_target(canonical: str) -> Target:
    policy = parse_policy({"version": 1, "targets": [json.loads(canonical)]}, environ={}, resolve_settings=False)
    return policy.targets[0]


def trusted_target(data: Mapping[str, Any]) -> Target:
    """A target the app validated already (Target.to_json() of the deployed policy's, handed on by
    resolve_target): built by the same model code without the schema pass. Internal hops trust what the
    policy load and the API boundary validated; an inconsistent document still raises PolicyError."""
    return _trusted_target(json.dumps(data, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=256)
def _trusted_target(canonical: str) -> Target:
    issues: list[PolicyIssue] = []
    target = _build_target(0, json.loads(canonical), issues)
    if target is None or issues:
        raise PolicyError(issues)
    return target


def merge_defaults(defaults: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """built-in defaults <- policy defaults <- target; objects merge field by field, everything else
    (lists, scalars, null) is replaced. A probe comes only from the target: defaults.probe only fills in
    the settings of targets that have one."""
    policy_defaults = {k: v for k, v in defaults.items() if k != "probe"}
    merged = _deep_merge(_deep_merge(BUILTIN_DEFAULTS, policy_defaults), target)
    # Alternatives, not additions: a target naming where to query (or a preset signal) replaces the default's.
    own = target.get("monitoring", {})
    for chosen, other in (("workspaceId", "resourceId"), ("resourceId", "workspaceId")):
        if chosen in own and other not in own:
            merged["monitoring"].pop(other, None)
    if own.get("signal", "kql") != "kql" and "query" not in own:
        merged["monitoring"].pop("query", None)
    if "probe" in target:
        merged["probe"] = _deep_merge(_deep_merge(BUILTIN_PROBE, defaults.get("probe", {})), target["probe"])
    return merged


def render_kql(template: str, values: Mapping[str, str]) -> str:
    """Replace the known `{placeholder}`s; anything else in braces (KQL dynamic literals) is left alone."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name in KQL_PLACEHOLDERS else match.group(0)

    return _PLACEHOLDER.sub(sub, template)


def generation_suffix_re() -> re.Pattern[str]:
    """The suffix naming.key_name() appends to a base key name (shared so the two never disagree)."""
    return _GENERATION_SUFFIX


# -- internals --------------------------------------------------------------------------------------


def _targets(document: Mapping[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    yield from enumerate(document.get("targets", []))


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def _location(document: Any, path: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """Split a JSON path into the part named for people (`targets[2] (id "x")`, `defaults`) and the rest."""
    if len(path) >= 2 and path[0] == "targets" and isinstance(path[1], int):
        label = f"targets[{path[1]}]"
        try:
            target_id = document["targets"][path[1]].get("id")
        except (KeyError, IndexError, TypeError, AttributeError):
            target_id = None
        if isinstance(target_id, str) and target_id:
            label += f" (id {json.dumps(target_id)})"
        return label, path[2:]
    if path and path[0] == "defaults":
        return "defaults", path[1:]
    return "", path


def _dotted(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _issue(document: Any, path: tuple[Any, ...], message: str) -> PolicyIssue:
    location, rest = _location(document, path)
    return PolicyIssue(location, _dotted(rest), message)


def _resolve_settings(
    value: Any, env: Mapping[str, str], path: tuple[Any, ...], document: Any, issues: list[PolicyIssue]
) -> Any:
    """Replace `%NAME%` with app setting NAME in every string (`%%` is a literal `%`)."""
    if isinstance(value, dict):
        return {k: _resolve_settings(v, env, (*path, k), document, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_settings(v, env, (*path, i), document, issues) for i, v in enumerate(value)]
    if not isinstance(value, str) or "%" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        setting = env.get(name, "").strip()
        if not setting:
            issues.append(_issue(document, path, f"refers to app setting {name} (%{name}%), which is not set"))
        return setting

    return _SETTING_REF.sub(sub, value)


@lru_cache(maxsize=1)
def _schema_validator() -> Any:
    from jsonschema import Draft202012Validator  # heavy: imported only when a policy is loaded

    schema = json.loads(SCHEMA_PATH.read_text())
    return Draft202012Validator(schema)


def schema_issues(document: Any) -> list[PolicyIssue]:
    """Problems the JSON Schema finds, in document order, phrased for people."""
    issues: list[PolicyIssue] = []
    errors = sorted(
        _schema_validator().iter_errors(document),
        key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in e.absolute_path],
    )
    for error in errors:
        path = tuple(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        messages = schema.get("x-messages", {})
        kind = error.validator
        if kind == "required":
            missing = re.match(r"^'(.+)' is a required property$", error.message)
            name = missing.group(1) if missing else "?"
            message = MASTER_KEY_NEEDS_FLAG if name == "allowMasterKey" else "is required"
            issues.append(_issue(document, (*path, name), message))
        elif kind == "additionalProperties":
            known = set(schema.get("properties", {}))
            for name in sorted(set(error.instance) - known):
                message = messages.get("additionalProperties", "is not a known field (check the spelling)")
                issues.append(_issue(document, (*path, name), message))
        elif kind == "enum" and error.instance == "systemKeys":
            issues.append(_issue(document, path, SYSTEM_KEYS_REFUSED))
        elif kind in messages:
            issues.append(_issue(document, path, messages[kind]))
        else:
            issues.append(_issue(document, path, _generic_message(error)))
    return list(dict.fromkeys(issues))


def _generic_message(error: Any) -> str:
    kind, expected = error.validator, error.validator_value
    if kind == "type":
        names = expected if isinstance(expected, list) else [expected]
        readable = {"object": "an object", "array": "a list", "string": "a string", "integer": "a whole number"}
        readable |= {"number": "a number", "boolean": "true or false", "null": "null"}
        return "must be " + " or ".join(readable.get(str(n), str(n)) for n in names)
    if kind == "enum":
        return "must be one of " + ", ".join(json.dumps(v) for v in expected)
    if kind == "const":
        return f"must be {json.dumps(expected)}"
    if kind in ("minimum", "maximum"):
        return f"must be at {'least' if kind == 'minimum' else 'most'} {expected}"
    if kind in ("minItems", "maxItems"):
        return f"must have at {'least' if kind == 'minItems' else 'most'} {expected} item(s)"
    if kind in ("minLength", "maxLength"):
        return f"must be at {'least' if kind == 'minLength' else 'most'} {expected} characters long"
    if kind == "uniqueItems":
        return "must not repeat a value"
    if kind == "pattern":
        return f"must match {expected}"
    return str(error.message)


def _duration(value: Any, name: str, where: tuple[Any, ...], document: Any, issues: list[PolicyIssue]) -> timedelta:
    """Parse a duration field and check its bounds (BOUNDS[name])."""
    try:
        parsed = parse_duration(value)
    except DurationError as exc:
        issues.append(_issue(document, (*where, *name.split(".")), str(exc)))
        return timedelta(0)
    low, high = BOUNDS[name]
    if parsed < low:
        issues.append(_issue(document, (*where, *name.split(".")), f"must be at least {describe(low)}"))
    elif parsed > high:
        issues.append(_issue(document, (*where, *name.split(".")), f"must be at most {describe(high)}"))
    return parsed


def _normalize_vault_url(url: str) -> str:
    scheme, _, rest = url.rstrip("/").partition("://")
    return f"{scheme.lower()}://{rest.lower()}"


def _build_target(index: int, merged: dict[str, Any], issues: list[PolicyIssue]) -> Target | None:
    """The semantic rules for one merged target, then the model. Issues name the raw target's location."""
    before = len(issues)
    where: tuple[Any, ...] = ("targets", index)
    doc = {"targets": [None] * index + [merged]}  # so issue labels carry the target's id

    def problem(field_path: str, message: str) -> None:
        parts = tuple(int(p) if p.isdigit() else p for p in field_path.split("."))
        issues.append(_issue(doc, (*where, *parts), message))

    site = _SITE_ID.match(merged["functionApp"])
    assert site is not None  # the schema's pattern guarantees it
    slot = merged.get("slot")
    if slot is not None and slot.lower() == "production":
        problem("slot", "omit slot for the production slot")
    scope_data = merged["keyScope"]
    scope = KeyScope(kind=scope_data["kind"], function=scope_data.get("function"))
    base = merged.get("baseKeyName", MASTER_KEY_NAME)
    if scope.kind != "masterKey" and _GENERATION_SUFFIX.search(base):
        problem("baseKeyName", "must not end like a generated key name (-<yyyymmdd>t<hhmmss>z-<mode>)")

    kv = merged["keyVault"]
    if "vaultUrl" not in kv:
        problem("keyVault.vaultUrl", "is required (on the target or in defaults.keyVault)")

    interval = _duration(merged["interval"], "interval", where, doc, issues)
    overlap = _duration(merged["overlap"], "overlap", where, doc, issues)
    if scope.kind != "masterKey" and interval and overlap and overlap >= interval:
        problem("overlap", f"must be shorter than interval ({describe(interval)})")

    probe = None
    if "probe" in merged:
        p = merged["probe"]
        if {401, 403} & set(p["expectStatus"]):
            problem("probe.expectStatus", "must not contain 401 or 403: those mean the target refused the key")
        probe = Probe(
            path=p["path"],
            method=p["method"],
            expect_status=tuple(p["expectStatus"]),
            attempts=p["attempts"],
            delay=_duration(p["delay"], "probe.delay", where, doc, issues),
            timeout=_duration(p["timeout"], "probe.timeout", where, doc, issues),
            base_url=p.get("baseUrl", "").rstrip("/") or None,
            revoked_within=_duration(p["revokedWithin"], "probe.revokedWithin", where, doc, issues),
        )
        if probe.base_url:
            why = _base_url_problem(probe.base_url, FunctionApp(site["sub"], site["rg"], site["name"], slot))
            if why:
                problem("probe.baseUrl", why)

    m = merged["monitoring"]
    signal = m.get("signal")
    if signal is None:
        problem("monitoring.signal", "is required (on the target or in defaults.monitoring)")
    if ("workspaceId" in m) == ("resourceId" in m):
        problem("monitoring", "must have exactly one of workspaceId and resourceId")
    if signal == "kql" and not m.get("query"):
        problem("monitoring.query", "is required with signal kql")
    if signal not in (None, "kql") and "query" in m:
        problem("monitoring.query", f"is only used with signal kql (signal {signal} has its own query)")
    for name in _PLACEHOLDER.findall(m.get("query") or ""):
        if name not in KQL_PLACEHOLDERS:
            problem("monitoring.query", f"unknown placeholder {{{name}}}; known: {', '.join(KQL_PLACEHOLDERS)}")
    threshold = Threshold(m["threshold"].get("maxFailures"), m["threshold"].get("maxRatio"))
    if threshold.max_failures is None and threshold.max_ratio is None:
        problem("monitoring.threshold", "must keep at least one of maxFailures and maxRatio switched on")
    watch = _duration(m["watch"], "monitoring.watch", where, doc, issues)

    deadline = _duration(merged["hold"]["deadline"], "hold.deadline", where, doc, issues)
    hold = Hold(deadline, merged["hold"]["defaultAction"])
    max_overlap = _duration(merged["emergency"]["maxOverlap"], "emergency.maxOverlap", where, doc, issues)

    consumers: list[Consumer] = []
    seen_names: set[str] = set()
    seen_ids: set[str] = set()
    for i, c in enumerate(merged["consumers"]):
        if c["name"].lower() in seen_names:
            problem(f"consumers.{i}.name", f"{c['name']!r} is listed twice")
        if c["objectId"].lower() in seen_ids:
            problem(f"consumers.{i}.objectId", f"{c['objectId']} is listed twice")
        seen_names.add(c["name"].lower())
        seen_ids.add(c["objectId"].lower())
        consumers.append(Consumer(c["name"], c["objectId"].lower()))

    calls = _build_calls(merged["calls"], where, doc, issues)

    if len(issues) > before or signal is None or "vaultUrl" not in kv:
        return None
    return Target(
        id=merged["id"],
        function_app=FunctionApp(site["sub"], site["rg"], site["name"], slot),
        key_scope=scope,
        base_key_name=base,
        key_vault=KeyVaultRef(
            _normalize_vault_url(kv["vaultUrl"]), kv["secretName"], kv.get("auditTable", DEFAULT_AUDIT_TABLE)
        ),
        interval=interval,
        overlap=overlap,
        monitoring=Monitoring(signal, m.get("workspaceId"), m.get("resourceId"), m.get("query"), threshold, watch),
        hold=hold,
        emergency_max_overlap=max_overlap,
        consumers=tuple(consumers),
        calls=calls,
        probe=probe,
        enabled=merged["enabled"],
        allow_master_key=merged.get("allowMasterKey", False),
        description=merged.get("description"),
        source=merged,
    )


def _base_url_problem(url: str, app: FunctionApp) -> str | None:
    """Why `probe.baseUrl` is refused: the probe sends the new key there, so it must be https on port 443 to
    a host App Service gives this app. Custom domains are refused too: their DNS is not App Service's."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return "must be an https:// URL"
    why = app.host_name_problem(parts.hostname)
    if why:
        return (
            f"{why}; the new key is sent there, so custom domains and other hosts are refused: omit baseUrl to "
            "probe the default host name ARM reports"
        )
    try:
        port = parts.port
    except ValueError:
        return "has an invalid port"
    if port not in (None, 443):
        return f"must not name a port other than 443 (App Service serves https on 443), got {port}"
    return None


def _build_calls(data: Mapping[str, Any], where: tuple[Any, ...], doc: Any, issues: list[PolicyIssue]) -> CallBudget:
    """The merged `calls` section (schema-checked already): durations within BOUNDS, intervals in order."""
    connect = _duration(data["connectTimeout"], "calls.connectTimeout", where, doc, issues)
    read = _duration(data["readTimeout"], "calls.readTimeout", where, doc, issues)
    call = _duration(data["callTimeout"], "calls.callTimeout", where, doc, issues)
    max_retry_after = _duration(data["maxRetryAfter"], "calls.maxRetryAfter", where, doc, issues)
    step = data["step"]
    first = _duration(step["firstInterval"], "calls.step.firstInterval", where, doc, issues)
    longest = _duration(step["maxInterval"], "calls.step.maxInterval", where, doc, issues)
    if first and longest and longest < first:
        path = (*where, "calls", "step", "maxInterval")
        issues.append(_issue(doc, path, f"must be at least calls.step.firstInterval ({describe(first)})"))
    retry = StepRetry(step["attempts"], first, float(step["backoff"]), longest)
    return CallBudget(connect, read, call, data["retries"], max_retry_after, retry)


def parse_calls(data: Mapping[str, Any] | None) -> CallBudget:
    """A `calls` section on its own (an activity request carries it where no target does): built-in
    defaults <- `data`, checked like the policy's. None -> the built-in budget."""
    document = {"version": 1, "defaults": {"calls": dict(data or {})}, "targets": []}
    issues = [PolicyIssue("", i.field, i.message) for i in schema_issues(document)]
    if issues:
        raise PolicyError(issues)
    merged = _deep_merge(BUILTIN_DEFAULTS["calls"], dict(data or {}))
    budget = _build_calls(merged, (), {}, issues)
    if issues:
        raise PolicyError(issues)
    return budget


def _cross_target_issues(document: Mapping[str, Any]) -> list[PolicyIssue]:
    """Rules across targets: unique ids, one target per secret, one target per key name family."""
    issues: list[PolicyIssue] = []
    ids: dict[str, int] = {}
    secrets: dict[tuple[str, str], int] = {}
    families: dict[tuple[str, str, str, str, str], int] = {}
    defaults = document.get("defaults", {})
    for index, target in _targets(document):
        merged = merge_defaults(defaults, target)
        here = ("targets", index)
        if merged["id"] in ids:
            issues.append(_issue(document, (*here, "id"), f"is also used by targets[{ids[merged['id']]}]"))
        ids.setdefault(merged["id"], index)
        vault = merged["keyVault"].get("vaultUrl")
        if vault:
            key = (_normalize_vault_url(vault), merged["keyVault"]["secretName"].lower())
            if key in secrets:
                other = secrets[key]
                issues.append(
                    _issue(document, (*here, "keyVault.secretName"), f"is also the secret of targets[{other}]")
                )
            secrets.setdefault(key, index)
        scope = merged["keyScope"]
        family = (
            merged["functionApp"].lower(),
            (merged.get("slot") or "").lower(),
            scope["kind"],
            scope.get("function", "").lower(),
            merged.get("baseKeyName", MASTER_KEY_NAME).lower(),
        )
        if family in families:
            issues.append(
                _issue(
                    document,
                    (*here, "baseKeyName"),
                    f"targets[{families[family]}] already rotates these keys (same app, slot, scope and base name)",
                )
            )
        families.setdefault(family, index)
    return issues


__all__ = [
    "AUDIT_TABLES",
    "BUILTIN_DEFAULTS",
    "DEFAULT_AUDIT_TABLE",
    "KQL_PLACEHOLDERS",
    "SIGNALS",
    "CallBudget",
    "Consumer",
    "FunctionApp",
    "Hold",
    "KeyScope",
    "KeyVaultRef",
    "Monitoring",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Probe",
    "StepRetry",
    "Target",
    "Threshold",
    "format_duration",
    "load_policy",
    "merge_defaults",
    "parse_calls",
    "parse_policy",
    "parse_target",
    "policy_path",
    "render_kql",
    "trusted_target",
]
