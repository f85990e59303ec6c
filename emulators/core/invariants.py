"""Checkers for the product's invariants over what the emulators recorded (dev and test only).

- **I2, consumers never read a dead key** (`check_i2`): replays the change journal
  (`GET /_emulator/changes`) and reports every point after which the newest enabled Key Vault version
  of a target's secret was not a key the target accepted. The journal holds fingerprints, never values,
  so the check compares fingerprints. Acceptance follows the emulator's key-cache model: a key opens
  the target at `t` iff `acceptedFrom <= t < acceptedUntil`; a window closing between two requests is
  a point of its own, so a key that dies while Key Vault still serves it is caught even if no request
  arrives then.
- **I1, no secret values in flight** (`secret_values`, `scan`): the values the emulators generated
  and stored (from `GET /_emulator/state`) searched for in files (read as bytes) and texts, in the
  encodings a leak usually takes (raw, URL-encoded, base64 at any alignment inside a larger blob).
  Findings name the place and which value (a label), never the value itself.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

ScopeKind = Literal["host", "function", "masterKey"]

# ------------------------------------------------------------------------------------------------
# I2
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetRef:
    """Where a target's key lives on the emulated ARM and where its copy lives in Key Vault."""

    target_id: str
    site_id: str  # /subscriptions/.../providers/Microsoft.Web/sites/{name}
    scope: ScopeKind
    secret_name: str
    function: str | None = None
    slot: str | None = None

    @classmethod
    def from_target(cls, target: Any) -> TargetRef:
        """From a `rotation.policy.Target` (duck-typed: the emulators do not import the app)."""
        app = target.function_app
        return cls(
            target_id=target.id,
            site_id=app.site_id,
            scope=target.key_scope.kind,
            secret_name=target.key_vault.secret_name,
            function=target.key_scope.function,
            slot=app.slot,
        )

    def accepts_scope(self, scope: str, function: str | None) -> bool:
        """Which key kinds open the target: the host checks the master key, then host function keys,
        then the function's own keys; system keys never open a function."""
        if scope == "masterKey":
            return True
        if scope == "functionKeys":
            return self.scope in ("host", "function")
        if scope == "function":
            return self.scope == "function" and (function or "").lower() == (self.function or "").lower()
        return False


@dataclass
class _KeyRow:
    name: str
    scope: str
    function: str | None
    fingerprint: str
    accepted_from: datetime
    accepted_until: datetime | None = None

    def accepted(self, at: datetime) -> bool:
        return self.accepted_from <= at and (self.accepted_until is None or at < self.accepted_until)


@dataclass
class _Version:
    version: str
    fingerprint: str
    enabled: bool


@dataclass
class _Secret:
    versions: list[_Version] = field(default_factory=list)  # creation order
    deleted: bool = False
    ever_had_version: bool = False


@dataclass(frozen=True)
class I2Violation:
    """After request `request_seq` (None: a background change or a key-cache window closing with no
    request of its own), at `at`, consumers reading the target's secret got a key it refused."""

    target_id: str
    request_seq: int | None
    at: str
    secret_name: str
    version: str | None
    reason: str

    def __str__(self) -> str:
        after = f"after request #{self.request_seq}" if self.request_seq is not None else "between requests"
        version = f" version {self.version}" if self.version else ""
        return f"I2 {self.target_id}: {after} ({self.at}): {self.secret_name}{version}: {self.reason}"


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def format_instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _norm(value: str | None) -> str:
    return (value or "").lower()


class _Replay:
    """The state the journal describes, for the targets of interest only."""

    def __init__(self, targets: Sequence[TargetRef]) -> None:
        self.targets = list(targets)
        self.keys: dict[tuple[str, str], list[_KeyRow]] = {}  # (site, slot) -> every row ever held
        self.secrets: dict[str, _Secret] = {}

    # -- applying changes --
    def apply(self, change: Mapping[str, Any]) -> None:
        kind, detail = change.get("kind", ""), change.get("detail") or {}
        if kind in ("arm.key_set", "arm.key_deleted"):
            self._apply_key(kind, detail)
        elif kind.startswith("keyvault."):
            self._apply_secret(kind, str(change.get("subject", "")), detail)

    def _rows(self, detail: Mapping[str, Any]) -> list[_KeyRow]:
        return self.keys.setdefault((_norm(detail.get("site")), _norm(detail.get("slot"))), [])

    def _live(self, rows: list[_KeyRow], detail: Mapping[str, Any]) -> _KeyRow | None:
        for row in reversed(rows):
            same = (row.scope, _norm(row.function), _norm(row.name)) == (
                detail.get("scope"),
                _norm(detail.get("function")),
                _norm(detail.get("key")),
            )
            if same:
                return row if row.accepted_until is None else None
        return None

    def _apply_key(self, kind: str, detail: Mapping[str, Any]) -> None:
        rows = self._rows(detail)
        live = self._live(rows, detail)
        if kind == "arm.key_deleted":
            if live is not None:
                live.accepted_until = parse_instant(detail.get("acceptedUntil") or detail["at"])
            return
        accepted_from = parse_instant(detail.get("acceptedFrom") or detail["at"])
        if live is not None:  # renewed in place: the old value stops when the cache lets go of it
            live.accepted_until = parse_instant(detail.get("previousAcceptedUntil") or detail["at"])
        rows.append(
            _KeyRow(
                name=str(detail.get("key")),
                scope=str(detail.get("scope")),
                function=detail.get("function"),
                fingerprint=str(detail.get("fingerprint")),
                accepted_from=accepted_from,
            )
        )

    def _apply_secret(self, kind: str, subject: str, detail: Mapping[str, Any]) -> None:
        name = _norm(detail.get("name") or subject.rsplit("/", 1)[-1])
        secret = self.secrets.setdefault(name, _Secret())
        if kind == "keyvault.version_set":
            secret.versions.append(
                _Version(
                    str(detail["version"]), str(detail.get("value_fingerprint")), bool(detail.get("enabled", True))
                )
            )
            secret.ever_had_version = True
        elif kind == "keyvault.version_updated":
            for version in secret.versions:
                if version.version == detail.get("version") and "enabled" in detail:
                    version.enabled = bool(detail["enabled"])
        elif kind == "keyvault.secret_deleted":
            secret.deleted = True
        elif kind == "keyvault.secret_recovered":
            secret.deleted = False
        elif kind == "keyvault.secret_purged":
            secret.versions.clear()
            secret.deleted = False

    # -- boundaries: instants where acceptance changes without a change of its own --
    def boundaries(self, change: Mapping[str, Any]) -> list[datetime]:
        detail = change.get("detail") or {}
        if change.get("kind") not in ("arm.key_set", "arm.key_deleted"):
            return []
        return [
            parse_instant(detail[k])
            for k in ("acceptedFrom", "acceptedUntil", "previousAcceptedUntil")
            if detail.get(k)
        ]

    # -- the check --
    def verdict(self, target: TargetRef, at: datetime) -> tuple[str | None, str] | None:
        """None when fine or nothing to check yet; else (version, reason)."""
        secret = self.secrets.get(_norm(target.secret_name))
        if secret is None or not secret.ever_had_version:
            return None
        if secret.deleted:
            return None, "the secret is deleted: consumers can read no key"
        newest = next((v for v in reversed(secret.versions) if v.enabled), None)
        if newest is None:
            count = len(secret.versions)
            return None, f"no enabled version ({count} version(s), all disabled or purged): consumers can read no key"
        rows = [
            row
            for row in self.keys.get((_norm(target.site_id), _norm(target.slot)), [])
            if row.fingerprint == newest.fingerprint and target.accepts_scope(row.scope, row.function)
        ]
        if any(row.accepted(at) for row in rows):
            return None
        if not rows:
            return newest.version, "its value is none of the keys the target accepts (no such key in scope)"
        row = rows[-1]
        if at < row.accepted_from:
            when = format_instant(row.accepted_from)
            return newest.version, f"key {row.name!r} is not accepted by the target until {when} (key cache)"
        until = format_instant(row.accepted_until) if row.accepted_until else "?"
        return newest.version, f"key {row.name!r} stopped being accepted by the target at {until}"


def check_i2(
    changes: Iterable[Mapping[str, Any]],
    targets: Sequence[TargetRef],
    requests: Iterable[Mapping[str, Any]] = (),
) -> list[I2Violation]:
    """Every point at which a target's newest enabled Key Vault version was a key the target refused.

    `changes`: the journal (`GET /_emulator/changes`), any order. The state is evaluated after each
    request's changes, and at each instant a key's acceptance window opens or closes. `requests`
    (`GET /_emulator/requests`), when given, adds a report for every request served while the state
    was violating, so each offending request seq is listed.
    """
    ordered = sorted(changes, key=lambda c: int(c["seq"]))
    replay = _Replay(targets)
    # (instant, order, change or None): changes keep journal order; boundaries sort after same-instant changes.
    points: list[tuple[datetime, int, Mapping[str, Any] | None]] = []
    for change in ordered:
        points.append((parse_instant(str(change["ts"])), int(change["seq"]), change))
        points.extend((b, 1 << 62, None) for b in replay.boundaries(change))
    points.sort(key=lambda p: (p[0], p[1]))

    violations: dict[tuple[str, int | None, str], I2Violation] = {}
    periods: list[tuple[datetime, datetime | None, I2Violation]] = []
    open_periods: dict[str, tuple[datetime, I2Violation]] = {}
    # A request's changes are one observable step: evaluate after its last change, never in between.
    closes_group = {
        int(c["seq"]): c.get("request_seq") is None or n.get("request_seq") != c.get("request_seq")
        for c, n in zip(ordered, [*ordered[1:], {}], strict=True)
    }
    inside_group = False
    last_seq: int | None = None
    for at, _order, change in points:
        if change is not None:
            replay.apply(change)
            last_seq = change.get("request_seq")
            inside_group = not closes_group[int(change["seq"])]
        if inside_group:
            continue
        for target in targets:
            verdict = replay.verdict(target, at)
            if target.target_id in open_periods and verdict is None:
                start, violation = open_periods.pop(target.target_id)
                periods.append((start, at, violation))
            if verdict is None:
                continue
            version, reason = verdict
            seq = last_seq if change is not None else None
            violation = I2Violation(target.target_id, seq, format_instant(at), target.secret_name, version, reason)
            violations.setdefault((target.target_id, seq, reason), violation)
            if target.target_id not in open_periods:
                open_periods[target.target_id] = (at, violation)
    periods.extend((start, None, violation) for start, violation in open_periods.values())

    for request in requests:
        end = parse_instant(str(request["ts"])) + timedelta(milliseconds=float(request.get("duration_ms") or 0))
        for start, stop, violation in periods:
            if start <= end and (stop is None or end < stop):
                key = (violation.target_id, int(request["seq"]), violation.reason)
                violations.setdefault(
                    key,
                    I2Violation(
                        violation.target_id,
                        int(request["seq"]),
                        format_instant(end),
                        violation.secret_name,
                        violation.version,
                        violation.reason,
                    ),
                )
    return sorted(violations.values(), key=lambda v: (v.at, v.target_id))


# ------------------------------------------------------------------------------------------------
# I1
# ------------------------------------------------------------------------------------------------

MIN_NEEDLE = 16  # shorter fragments would match by chance


@dataclass(frozen=True)
class Place:
    """Somewhere a value must not appear: a file (read as bytes) or a text the caller captured."""

    name: str
    data: bytes

    @classmethod
    def text(cls, name: str, text: str) -> Place:
        return cls(name, text.encode("utf-8", errors="surrogatepass"))

    @classmethod
    def file(cls, path: Path, name: str | None = None) -> Place:
        return cls(name or str(path), path.read_bytes())


@dataclass(frozen=True)
class I1Finding:
    place: str
    value_label: str  # which value, e.g. "ARM demo-orders functionKeys/orders-client"
    form: str  # raw | url-encoded | base64 | base64url
    offset: int

    def __str__(self) -> str:
        return f"I1 {self.place} (byte {self.offset}): {self.value_label} ({self.form})"


def secret_values(state: Mapping[str, Any]) -> dict[str, str]:
    """label -> value for every key on every emulated site and every Key Vault version, live or not."""
    values: dict[str, str] = {}
    for site in (state.get("arm") or {}).get("sites", []):
        for instance in site.get("instances", []):
            where = site["name"] + (f"/slots/{instance['slot']}" if instance.get("slot") else "")
            for key in instance.get("keys", []):
                scope = f"functions/{key['function']}" if key.get("scope") == "function" else key.get("scope")
                label = f"ARM {where} {scope}/{key['name']} (created {key.get('created')})"
                values[label] = key["value"]
    keyvault = state.get("keyvault") or {}
    for group in ("secrets", "deleted"):
        for name, secret in (keyvault.get(group) or {}).items():
            for version in secret.get("versions", []):
                values[f"Key Vault {name}/{version['version']}"] = version["value"]
    return {label: value for label, value in values.items() if isinstance(value, str) and value}


def _b64_fragments(data: bytes, encode: Any) -> Iterator[bytes]:
    """The base64 text of `data` at each of the three alignments it can have inside a larger blob,
    minus the characters that depend on the neighbouring bytes."""
    for shift in range(3):
        encoded = encode(b"\0" * shift + data).rstrip(b"=")
        lead = (shift * 8 + 5) // 6  # characters touched by the padding bytes in front
        tail_bits = ((shift + len(data)) * 8) % 6
        trimmed = encoded[lead : len(encoded) - (1 if tail_bits else 0)]
        if len(trimmed) >= MIN_NEEDLE:
            yield trimmed


def needles(value: str) -> list[tuple[str, bytes]]:
    """The forms of a value to look for. Padding is dropped so a value with its `==` stripped or
    URL-encoded (`%3D%3D`) is still found."""
    core = value.rstrip("=")
    forms: dict[bytes, str] = {}
    if len(core) >= MIN_NEEDLE:
        forms.setdefault(core.encode(), "raw")
    for encoded in (quote(core, safe=""), quote_plus(core, safe="")):
        if len(encoded) >= MIN_NEEDLE:
            forms.setdefault(encoded.encode(), "url-encoded")
    raw = value.encode()
    for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for fragment in _b64_fragments(raw, encode):
            forms.setdefault(fragment, name)
    return [(form, needle) for needle, form in forms.items()]


def scan(values: Mapping[str, str], places: Iterable[Place]) -> list[I1Finding]:
    """Every occurrence (first per place, value and form) of any value in any place."""
    compiled = [(label, form, needle) for label, value in values.items() for form, needle in needles(value)]
    findings: list[I1Finding] = []
    for place in places:
        for label, form, needle in compiled:
            offset = place.data.find(needle)
            if offset >= 0:
                findings.append(I1Finding(place.name, label, form, offset))
    return findings


def state_files(root: Path, exclude: Iterable[Path] = ()) -> list[Place]:
    """Every regular file under `root` (history databases with their WAL, logs), except `exclude`d
    files and folders (the emulators' own state, which holds the values by design)."""
    excluded = [p.resolve() for p in exclude]
    places: list[Place] = []
    for path in sorted(root.rglob("*")):
        resolved = path.resolve()
        if not path.is_file() or any(resolved == e or e in resolved.parents for e in excluded):
            continue
        places.append(Place.file(path, str(path)))
    return places


_SAFE_LABEL = re.compile(r"[^\w ./:()-]")


def describe_findings(findings: Sequence[I1Finding], limit: int = 20) -> list[str]:
    """Readable lines, at most `limit` plus a count of the rest."""
    lines = [_SAFE_LABEL.sub("?", str(f)) for f in findings[:limit]]
    if len(findings) > limit:
        lines.append(f"... and {len(findings) - limit} more")
    return lines
