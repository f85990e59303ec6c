"""The invariant checkers (emulators/core/invariants.py) on synthetic journals and values: each must pass a
correct rotation and catch the violating ones."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from emulators.core.invariants import (
    Place,
    TargetRef,
    check_i2,
    needles,
    scan,
    secret_values,
    state_files,
)
from tests.emulator_process import Emulator

SITE = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Web/sites/app"
T0 = datetime(2026, 1, 5, 3, 0, 0, tzinfo=UTC)
HOST = TargetRef("app-host", SITE, "host", "app-host-key")
FUNC = TargetRef("app-fn", SITE, "function", "app-fn-key", function="Export")
MASTER = TargetRef("app-master", SITE, "masterKey", "app-master-key")
OLD, NEW, OTHER = "old-value", "new-value", "other-value"


def fp(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def iso(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Journal:
    """Builds a change journal the way the emulators write it: one request per call unless grouped."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.request_seq = 0

    def _request(self, at: float) -> int:
        self.request_seq += 1
        self.requests.append({"seq": self.request_seq, "ts": iso(at), "duration_ms": 1.0})
        return self.request_seq

    def _add(self, at: float, kind: str, subject: str, detail: dict[str, Any], seq: int | None = None) -> int:
        seq = self._request(at) if seq is None else seq
        self.changes.append(
            {
                "seq": len(self.changes) + 1,
                "request_seq": seq,
                "ts": iso(at + 0.0005),
                "kind": kind,
                "subject": subject,
                "detail": detail,
            }
        )
        return seq

    def key_set(
        self,
        at: float,
        name: str,
        value: str,
        scope: str = "functionKeys",
        function: str | None = None,
        lag: float = 0,
        previous: str | None = None,
        seq: int | None = None,
    ) -> int:
        path = f"{SITE}/functions/{function}/keys/{name}" if function else f"{SITE}/host/default/{scope}/{name}"
        detail = {
            "site": SITE,
            "slot": None,
            "scope": scope,
            "function": function,
            "key": name,
            "fingerprint": fp(value),
            "at": iso(at),
            "acceptedFrom": iso(at + lag),
        }
        if previous is not None:
            detail |= {"previousFingerprint": fp(previous), "previousAcceptedUntil": iso(at + lag)}
        return self._add(at, "arm.key_set", path, detail, seq)

    def key_deleted(
        self, at: float, name: str, value: str, scope: str = "functionKeys", function: str | None = None, lag: float = 0
    ) -> int:
        path = f"{SITE}/functions/{function}/keys/{name}" if function else f"{SITE}/host/default/{scope}/{name}"
        detail = {
            "site": SITE,
            "slot": None,
            "scope": scope,
            "function": function,
            "key": name,
            "fingerprint": fp(value),
            "at": iso(at),
            "acceptedUntil": iso(at + lag),
        }
        return self._add(at, "arm.key_deleted", path, detail)

    def version_set(
        self, at: float, secret: str, version: str, value: str, enabled: bool = True, seq: int | None = None
    ) -> int:
        detail = {
            "name": secret,
            "version": version,
            "enabled": enabled,
            "tags": {"stage": "current"},
            "value_fingerprint": fp(value),
            "latest": True,
        }
        return self._add(at, "keyvault.version_set", f"keyvault/secrets/{secret}", detail, seq)

    def version_updated(self, at: float, secret: str, version: str, enabled: bool) -> int:
        detail = {"name": secret, "version": version, "enabled": enabled, "tags": {}, "changed": ["enabled"]}
        return self._add(at, "keyvault.version_updated", f"keyvault/secrets/{secret}", detail)

    def secret_deleted(self, at: float, secret: str) -> int:
        return self._add(at, "keyvault.secret_deleted", f"keyvault/secrets/{secret}", {"name": secret, "versions": []})

    def unrelated(self, at: float) -> int:
        return self._add(at, "eventgrid.published", "eventgrid/topic", {"ids": ["x"]})


def good_rotation(j: Journal, target: TargetRef = HOST, lag: float = 0, start: float = 0) -> None:
    """What a correct rotation writes: first adoption of the pre-existing key, then the new one."""
    scope, function = ("function", target.function) if target.scope == "function" else ("functionKeys", None)
    j.key_set(start, "base", OLD, scope, function)  # the operator's key, before the rotation
    j.version_set(start + 1, target.secret_name, "v0", OLD)  # adopted by a previous rotation
    j.key_set(start + 10, "base-20260105t030000z-s", NEW, scope, function, lag=lag)
    j.version_set(start + 10 + lag + 1, target.secret_name, "v1", NEW)  # after the probe accepted it
    j.version_updated(start + 12 + lag, target.secret_name, "v0", enabled=True)  # re-tag previous
    j.key_deleted(start + 100, "base", OLD, scope, function, lag=lag)  # revoke: target first
    j.version_updated(start + 101, target.secret_name, "v0", enabled=False)  # then Key Vault


# -- I2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [HOST, FUNC])
@pytest.mark.parametrize("lag", [0, 30])
def test_i2_correct_rotation_is_clean(target: TargetRef, lag: float) -> None:
    j = Journal()
    good_rotation(j, target, lag)
    j.unrelated(500)
    assert check_i2(j.changes, [target], j.requests) == []


def test_i2_nothing_to_check_before_the_first_version() -> None:
    j = Journal()
    j.key_set(0, "base", OLD)
    j.key_deleted(5, "base", OLD)  # no version yet: consumers cannot read anything, nothing to check
    assert check_i2(j.changes, [HOST], j.requests) == []


def test_i2_catches_key_vault_written_before_the_target_accepts_the_key() -> None:
    """The host caches keys for 30 s: storing the new version at once hands consumers a refused key."""
    j = Journal()
    j.key_set(0, "base", OLD)
    j.version_set(1, HOST.secret_name, "v0", OLD)
    j.key_set(10, "new", NEW, lag=30)
    bad = j.version_set(11, HOST.secret_name, "v1", NEW)
    later = j.unrelated(20)  # a consumer reading now still gets the refused key
    j.unrelated(45)  # the cache caught up: fine again
    violations = check_i2(j.changes, [HOST], j.requests)
    assert {v.request_seq for v in violations} == {bad, later}
    assert all(v.version == "v1" and "not accepted by the target until" in v.reason for v in violations)
    assert "after request #" in str(violations[0]) and "app-host" in str(violations[0])


def test_i2_catches_the_new_key_deleted_before_its_version_is_disabled() -> None:
    """Compensation in the wrong order: the target drops the new key while Key Vault still serves it."""
    j = Journal()
    j.key_set(0, "base", OLD)
    j.version_set(1, HOST.secret_name, "v0", OLD)
    j.key_set(10, "new", NEW)
    j.version_set(11, HOST.secret_name, "v1", NEW)
    bad = j.key_deleted(20, "new", NEW)
    j.version_updated(21, HOST.secret_name, "v1", enabled=False)  # only now is v0 the newest enabled again
    violations = check_i2(j.changes, [HOST], j.requests)
    assert [v.request_seq for v in violations] == [bad]
    assert "'new' stopped being accepted" in violations[0].reason


def test_i2_catches_a_window_closing_between_requests() -> None:
    """A deleted key stays accepted for the cache lag; when that ends with no request, it still counts."""
    j = Journal()
    j.key_set(0, "base", OLD)
    j.version_set(1, HOST.secret_name, "v0", OLD)
    j.key_deleted(10, "base", OLD, lag=30)  # accepted until t=40, and Key Vault still serves it
    violations = check_i2(j.changes, [HOST])
    assert len(violations) == 1
    assert violations[0].request_seq is None and violations[0].at.startswith(iso(40)[:19])


def test_i2_catches_a_value_the_target_never_had_and_other_scopes() -> None:
    j = Journal()
    j.key_set(0, "base", OLD, "function", "Other")  # another function's key does not open Export
    j.key_set(0, "sys", OTHER, "systemKeys")  # system keys never open a function
    a = j.version_set(1, FUNC.secret_name, "v0", OLD)
    b = j.version_set(2, FUNC.secret_name, "v1", OTHER)
    c = j.version_set(3, FUNC.secret_name, "v2", "typo")
    reasons = {v.request_seq: v.reason for v in check_i2(j.changes, [FUNC], j.requests)}
    assert set(reasons) == {a, b, c} and all("no such key in scope" in r for r in reasons.values())


def test_i2_host_and_master_keys_open_a_function_target() -> None:
    j = Journal()
    j.key_set(0, "shared", OLD)  # a host function key
    j.key_set(0, "_master", NEW, "masterKey")
    j.version_set(1, FUNC.secret_name, "v0", OLD)
    j.version_set(2, FUNC.secret_name, "v1", NEW)
    assert check_i2(j.changes, [FUNC], j.requests) == []


def test_i2_master_key_renewed_in_place() -> None:
    j = Journal()
    j.key_set(0, "_master", OLD, "masterKey")
    j.version_set(1, MASTER.secret_name, "v0", OLD)
    renew = j.key_set(10, "_master", NEW, "masterKey", previous=OLD)  # no overlap possible
    j.version_set(11, MASTER.secret_name, "v1", NEW)
    violations = check_i2(j.changes, [MASTER], j.requests)
    assert [v.request_seq for v in violations] == [renew]  # the one unavoidable gap, reported
    assert violations[0].version == "v0"


def test_i2_no_enabled_version_or_deleted_secret_is_a_violation() -> None:
    j = Journal()
    j.key_set(0, "base", OLD)
    j.version_set(1, HOST.secret_name, "v0", OLD)
    disabled = j.version_updated(2, HOST.secret_name, "v0", enabled=False)
    j.version_updated(3, HOST.secret_name, "v0", enabled=True)
    deleted = j.secret_deleted(4, HOST.secret_name)
    violations = check_i2(j.changes, [HOST])
    assert [v.request_seq for v in violations] == [disabled, deleted]
    assert "no enabled version" in violations[0].reason and "deleted" in violations[1].reason


def test_i2_groups_a_request_and_ignores_other_targets() -> None:
    j = Journal()
    j.key_set(0, "base", OLD)
    j.version_set(1, HOST.secret_name, "v0", OLD)
    # one request writing the version, then the key: its state in between is never observable
    seq = j.version_set(2, HOST.secret_name, "v1", NEW)
    j.key_set(2.01, "new", NEW, seq=seq)
    assert check_i2(j.changes, [HOST, FUNC]) == []
    j.key_set(3, "other", OTHER, seq=None)
    bad = j.version_set(4, HOST.secret_name, "v2", "unknown")  # a request of its own: observable
    assert [(v.target_id, v.request_seq) for v in check_i2(j.changes, [HOST, FUNC])] == [("app-host", bad)]


# -- I1 ------------------------------------------------------------------------------------------

KEY = "Xq3v8W1bH2n9Zc7Lp0Rt5Ys4Ua6Ie8Od2Fg1Hj3Kl5Mn7Bv9Cx0Zz1AzFuQw2Er3==="[:54] + "=="
KV_VALUE = "kv-stored-value-with-enough-length-1234567890"


def demo_state() -> dict[str, Any]:
    return {
        "arm": {
            "sites": [
                {
                    "name": "app",
                    "instances": [
                        {
                            "slot": None,
                            "keys": [
                                {
                                    "scope": "functionKeys",
                                    "function": None,
                                    "name": "k1",
                                    "value": KEY,
                                    "created": "2026-01-05T03:00:00.000Z",
                                }
                            ],
                        },
                        {
                            "slot": "staging",
                            "keys": [
                                {
                                    "scope": "function",
                                    "function": "Export",
                                    "name": "default",
                                    "value": "s" * 40,
                                    "created": "x",
                                }
                            ],
                        },
                    ],
                }
            ]
        },
        "keyvault": {
            "secrets": {"app-key": {"versions": [{"version": "abc", "value": KV_VALUE}]}},
            "deleted": {"gone": {"versions": [{"version": "def", "value": "d" * 40}]}},
        },
    }


def test_secret_values_lists_every_key_and_version_with_labels() -> None:
    values = secret_values(demo_state())
    assert values["ARM app functionKeys/k1 (created 2026-01-05T03:00:00.000Z)"] == KEY
    assert values["ARM app/slots/staging functions/Export/default (created x)"] == "s" * 40
    assert values["Key Vault app-key/abc"] == KV_VALUE and values["Key Vault gone/def"] == "d" * 40


def test_scan_is_clean_when_no_value_appears() -> None:
    places = [Place.text("status", json.dumps({"keyName": "k1", "version": "abc", "fingerprint": KEY[:10]}))]
    assert scan(secret_values(demo_state()), places) == []


@pytest.mark.parametrize(
    ("text", "form"),
    [
        (f"log line: key={KEY} end", "raw"),
        (f"stripped {KEY.rstrip('=')} padding", "raw"),
        (f"GET /api/ping?code={quote(KEY, safe='')}", "raw"),  # %3D%3D: the unpadded body still matches
        (base64.b64encode(json.dumps({"claims": [{"val": KEY}]}).encode()).decode(), "base64"),
        (base64.urlsafe_b64encode(b"xy" + KEY.encode() + b"z").decode(), "base64"),  # no +/: same text
        (base64.b64encode(b"?" + KEY.encode()).decode(), "base64"),
    ],
)
def test_scan_finds_a_value_in_each_encoding(text: str, form: str) -> None:
    findings = scan({"the key": KEY}, [Place.text("custom status", text)])
    assert [(f.place, f.value_label, f.form[:6]) for f in findings] == [("custom status", "the key", form)]
    assert KEY not in str(findings[0]) and KEY.rstrip("=") not in str(findings[0])


def test_scan_tells_url_safe_base64_apart() -> None:
    value = "~~~key-with-bytes-that-encode-to-plus-and-slash~~~"
    blob = base64.urlsafe_b64encode(b"{" + value.encode() + b"}").decode()
    assert "-" in blob or "_" in blob
    assert [f.form for f in scan({"v": value}, [Place.text("event", blob)])] == ["base64url"]


def test_scan_url_encoded_form_of_a_standard_base64_value() -> None:
    value = "ab+cd/ef" * 6 + "=="
    findings = scan({"v": value}, [Place.text("url", f"?x={quote(value, safe='')}")])
    assert [f.form for f in findings] == ["url-encoded"]


def test_needles_skip_fragments_too_short_to_mean_anything() -> None:
    assert needles("short") == []


def test_state_files_reads_bytes_and_skips_the_emulator_folder(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "emulator").mkdir()
    (tmp_path / "durable.sqlite3").write_bytes(b"\x00SQLite\x00" + KV_VALUE.encode() + b"\xff")
    (tmp_path / "logs" / "host.log").write_text("nothing to see")
    (tmp_path / "emulator" / "emulator.sqlite").write_text(KV_VALUE)
    places = state_files(tmp_path, exclude=[tmp_path / "emulator"])
    assert sorted(Path(p.name).name for p in places) == ["durable.sqlite3", "host.log"]
    findings = scan(secret_values(demo_state()), places)
    assert [(Path(f.place).name, f.value_label) for f in findings] == [("durable.sqlite3", "Key Vault app-key/abc")]


# -- on a real emulator's journal and state ------------------------------------------------------------


def test_both_checkers_read_what_the_emulators_really_record(emulator: Emulator) -> None:
    """The journal and state shapes the checkers rely on, produced by the emulators and the official SDKs:
    a key stored in Key Vault before every host instance accepts it (one misses the sentinel file: up to a
    minute, the host's reload throttle) is a violation, and its value
    is found in a text that leaks it."""
    from activities.clients import secret_client, web_client

    sub, rg, app = "00000000-0000-0000-0000-0000000000b2", "invariants", "inv-app"
    site = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}"
    emulator.control(
        "PUT",
        f"sites/{sub}/{rg}/{app}",
        json={"functions": ["Export"], "hostInstances": 2, "unwatchedHostInstances": [1]},
    )
    cfg = emulator.settings()
    with web_client(sub, cfg) as web:
        web.web_apps.create_or_update_function_secret(rg, app, "Export", "k1", {"properties": {"name": "k1"}})
        value = web.web_apps.list_function_keys(rg, app, "Export")["k1"]
    with secret_client(emulator.url, cfg) as vault:
        vault.set_secret("inv-app-key", value)  # too early: instance 1 may refuse k1 for up to a minute
    seq = emulator.requests_log()[-1]["seq"]
    target = TargetRef("inv", site, "function", "inv-app-key", function="export")  # names compare case-insensitively
    changes = emulator.control("GET", "changes").json()["value"]
    violations = check_i2(changes, [target], emulator.requests_log())
    assert (
        violations
        and violations[0].request_seq == seq
        and "'k1' is not accepted by the target until" in str(violations[0])
    )
    assert check_i2(changes, [TargetRef("inv", site, "host", "inv-app-key")]) != []  # a function key: not host scope

    values = secret_values(emulator.state())
    leaked = [f.value_label for f in scan(values, [Place.text("log", f"x-functions-key: {value}")])]
    assert leaked and all(
        label.startswith(("ARM inv-app functions/Export/k1", "Key Vault inv-app-key/")) for label in leaked
    )
