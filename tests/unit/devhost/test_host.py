"""In-process tests of the host shell's pieces: routes, tokens, settings, keys, the timer runner."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.functions import meta
from azure.functions.timer import TimerRequestConverter

from devhost.app_loader import FunctionInfo
from devhost.durable.rpc_listener import RpcListenerError, bind_rpc_socket
from devhost.easy_auth import (
    InvalidToken,
    issue_token,
    load_or_create_signing_key,
    principal_from_claims,
    strip_principal_headers,
    verify_token,
)
from devhost.keys import load_or_create_host_keys
from devhost.ncrontab import ScheduleError
from devhost.routes import RouteTemplateError, compile_route, precedence_key
from devhost.settings import HostConfig, apply_app_settings
from devhost.timers import TimerRunner

# -- routes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("targets/{target}/rotations", "targets/app-1/rotations", {"target": "app-1"}),
        ("targets/{target}/rotations", "TARGETS/app-1/Rotations", {"target": "app-1"}),
        ("targets/{target}", "targets/a%20b", {"target": "a b"}),
        ("items/{id:int}/{name?}", "items/7", {"id": "7"}),
        ("items/{id:int}/{name?}", "items/7/x", {"id": "7", "name": "x"}),
        ("items/{id:int}", "items/seven", None),
        ("items/{id:int:min(10)}", "items/9", None),
        (
            "items/{id:guid}",
            "items/0f8fad5b-d9cb-469f-a165-70867728950e",
            {"id": "0f8fad5b-d9cb-469f-a165-70867728950e"},
        ),
        ("items/{code:regex(^[a-z]{{2}}$)}", "items/ab", {"code": "ab"}),
        ("items/{code:length(2)}", "items/abc", None),
        ("files/{*rest}", "files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("files/{*rest}", "files", {}),
        ("page/{n=1}", "page", {"n": "1"}),
        ("reports/{name}.json", "reports/daily.json", {"name": "daily"}),
        ("targets/{target}", "targets/a/b", None),
    ],
)
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert compile_route(template).match(path) == expected


def test_literal_segments_take_precedence_over_parameters() -> None:
    routes = sorted(
        [compile_route("items/{id}"), compile_route("items/latest"), compile_route("{*all}")], key=precedence_key
    )
    assert [r.template for r in routes] == ["items/latest", "items/{id}", "{*all}"]


@pytest.mark.parametrize("bad", ["a/{*rest}/b", "a/{x:nope}", "a//b", "a/{1x}"])
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(RouteTemplateError):
        compile_route(bad)


# -- Easy Auth tokens -----------------------------------------------------------------------------


def test_signing_key_is_private_and_stable(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "easyauth.key").st_mode) == 0o600
    assert load_or_create_signing_key(tmp_path) == key


def test_token_round_trip_becomes_principal_headers(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    claims = verify_token(key, issue_token(key, "alice", ["KeyRotation.Emergency", "KeyRotation.Reader"], oid="oid-1"))
    headers = principal_from_claims(claims).headers()
    assert headers["X-MS-CLIENT-PRINCIPAL-NAME"] == "alice"
    assert headers["X-MS-CLIENT-PRINCIPAL-ID"] == "oid-1"
    assert headers["X-MS-CLIENT-PRINCIPAL-IDP"] == "aad"
    body = json.loads(base64.b64decode(headers["X-MS-CLIENT-PRINCIPAL"]))
    assert body["auth_typ"] == "aad" and body["role_typ"] == "roles" and body["name_typ"] == "name"
    roles = [c["val"] for c in body["claims"] if c["typ"] == "roles"]
    assert roles == ["KeyRotation.Emergency", "KeyRotation.Reader"]


def test_same_name_gets_the_same_object_id(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    first = verify_token(key, issue_token(key, "bob", []))
    assert first["oid"] == verify_token(key, issue_token(key, "bob", ["x"]))["oid"]


def test_forged_expired_and_garbage_tokens_are_refused(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    token = issue_token(key, "alice", ["KeyRotation.Operator"], ttl=60)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roles"] = ["KeyRotation.Emergency"]
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(InvalidToken):
        verify_token(key, f"{header}.{forged_payload}.{signature}")
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(key, issue_token(key, "alice", ["KeyRotation.Operator"], ttl=-60))
    with pytest.raises(InvalidToken):
        verify_token(b"another key".ljust(32, b"."), token)
    for garbage in ("", "abc", "a.b.c", "...."):
        with pytest.raises(InvalidToken):
            verify_token(key, garbage)


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # the HS512 forgery reuses the 32-byte key
def test_only_hs256_tokens_for_devhost_are_accepted(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path)
    claims = jwt.decode(issue_token(key, "alice", []), key, algorithms=["HS256"], audience="api://devhost")
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(InvalidToken, match="not signed with HS256"):
        verify_token(key, unsigned)
    with pytest.raises(InvalidToken, match="not signed with HS256"):
        verify_token(key, jwt.encode(claims, key, algorithm="HS512"))
    with pytest.raises(InvalidToken, match="wrong issuer or audience"):
        verify_token(key, jwt.encode({**claims, "aud": "api://someone-else"}, key, algorithm="HS256"))
    with pytest.raises(InvalidToken, match="token has no exp"):
        verify_token(key, jwt.encode({k: v for k, v in claims.items() if k != "exp"}, key, algorithm="HS256"))


def test_client_sent_principal_headers_are_stripped() -> None:
    kept = strip_principal_headers(
        [
            ("X-MS-CLIENT-PRINCIPAL", "x"),
            ("x-ms-client-principal-name", "y"),
            ("X-MS-TOKEN-AAD-ID-TOKEN", "z"),
            ("Accept", "*/*"),
        ]
    )
    assert kept == [("Accept", "*/*")]


# -- settings and keys ----------------------------------------------------------------------------


def test_settings_layers(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {"IsEncrypted": False, "Values": {"FROM_FILE": "file", "BOTH": "file", "ARM_ENDPOINT": "https://azure"}}
        )
    )
    env = {"BOTH": "process", "WEBSITE_AUTH_ENABLED": "True"}
    apply_app_settings(tmp_path, {"ARM_ENDPOINT": "https://127.0.0.1:1"}, easy_auth=False, environ=env)
    assert env["FROM_FILE"] == "file"
    assert env["BOTH"] == "process"  # like Core Tools: the environment wins over local.settings.json
    assert env["ARM_ENDPOINT"] == "https://127.0.0.1:1"  # the emulators always win
    assert "WEBSITE_AUTH_ENABLED" not in env  # Easy Auth off: the app must not believe it is on
    apply_app_settings(tmp_path, None, easy_auth=True, environ=env)
    assert env["WEBSITE_AUTH_ENABLED"] == "True"


def test_host_json_route_prefix(tmp_path: Path) -> None:
    assert HostConfig.load(tmp_path).route_prefix == "api"
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert HostConfig.load(tmp_path).route_prefix == ""


def test_host_keys_are_made_once_per_state(tmp_path: Path) -> None:
    keys = load_or_create_host_keys(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "host-keys.json").st_mode) == 0o600
    assert load_or_create_host_keys(tmp_path) == keys
    assert keys.is_function_key(keys.function_keys["default"]) and keys.is_function_key(keys.master_key)
    assert not keys.is_function_key(keys.system_keys["eventgrid_extension"])
    assert not keys.is_master(keys.function_keys["default"]) and not keys.is_master(None)
    assert keys.is_system_key("eventgrid_extension", keys.system_keys["eventgrid_extension"])
    assert not keys.is_system_key("eventgrid_extension", keys.system_keys["durabletask_extension"])


# -- the timer runner on a clock we move by hand -------------------------------------------------


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


class RecordingInvoker:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def call(self, fn: Any, value: Any, reason: str) -> None:
        """Records what the function would receive: the worker's own converter applied to the wire payload."""
        self.calls.append(TimerRequestConverter.decode(meta.Datum(value.json, "json"), trigger_metadata=None))


def timer_function(schedule: str, name: str = "tick") -> FunctionInfo:
    trigger = {"type": "timerTrigger", "name": "timer", "direction": "IN", "schedule": schedule}
    return FunctionInfo(name, f"id-{name}", "timerTrigger", trigger, "timer", (trigger,))


async def _settle(runner: TimerRunner, calls: list[Any], count: int) -> None:
    for _ in range(200):
        if len(calls) >= count:
            return
        await asyncio.sleep(0.005)


def test_timer_runner_fires_on_time_and_once_when_the_clock_skips(tmp_path: Path) -> None:
    async def scenario() -> list[Any]:
        clock = FakeClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
        invoker = RecordingInvoker()
        runner = TimerRunner([timer_function("0 * * * * *")], clock, invoker, tmp_path, poll_seconds=0.001)  # type: ignore[arg-type]
        await runner.start()
        await asyncio.sleep(0.02)
        assert invoker.calls == []  # not due yet
        clock.moment += timedelta(seconds=31)  # 00:01:01: one occurrence reached, on time
        await _settle(runner, invoker.calls, 1)
        clock.moment += timedelta(hours=5)  # a virtual-clock skip past 300 occurrences
        await _settle(runner, invoker.calls, 2)
        await asyncio.sleep(0.02)
        await runner.stop()
        return invoker.calls

    calls = asyncio.run(scenario())
    assert [c.past_due for c in calls] == [False, True]
    assert calls[1].schedule_status["Last"] == "2026-01-01T00:01:00+00:00"
    assert calls[1].schedule_status["Next"] == "2026-01-01T00:02:00+00:00"  # the occurrence that was missed


def test_missed_occurrence_while_down_fires_past_due_at_start(tmp_path: Path) -> None:
    (tmp_path / "timers.json").write_text(
        json.dumps({"tick": {"Last": "2025-12-31T00:00:00+00:00", "Next": "2026-01-01T00:00:00+00:00"}})
    )

    async def scenario() -> list[Any]:
        clock = FakeClock(datetime(2026, 1, 3, 12, tzinfo=UTC))
        invoker = RecordingInvoker()
        runner = TimerRunner([timer_function("0 0 0 * * *")], clock, invoker, tmp_path, poll_seconds=0.001)  # type: ignore[arg-type]
        await runner.start()
        await _settle(runner, invoker.calls, 1)
        await runner.stop()
        return invoker.calls

    calls = asyncio.run(scenario())
    assert len(calls) == 1 and calls[0].past_due
    saved = json.loads((tmp_path / "timers.json").read_text())["tick"]
    assert saved["Last"] == "2026-01-01T00:00:00+00:00" and saved["Next"] == "2026-01-04T00:00:00+00:00"


def test_disabled_timers_never_fire(tmp_path: Path) -> None:
    async def scenario() -> list[Any]:
        clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
        invoker = RecordingInvoker()
        runner = TimerRunner(
            [timer_function("* * * * * *")], clock, invoker, tmp_path, enabled=False, poll_seconds=0.001
        )  # type: ignore[arg-type]
        await runner.start()
        clock.moment += timedelta(minutes=5)
        await asyncio.sleep(0.02)
        await runner.stop()
        return invoker.calls

    assert asyncio.run(scenario()) == []


def test_timer_with_missing_setting_names_function_and_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_SCHEDULE", raising=False)
    with pytest.raises(ScheduleError, match=r"'nightly'.*NOT_SET_SCHEDULE"):
        TimerRunner(
            [timer_function("%NOT_SET_SCHEDULE%", "nightly")],
            FakeClock(datetime.now(UTC)),
            RecordingInvoker(),
            tmp_path,
        )  # type: ignore[arg-type]


def test_the_http_request_goes_to_the_worker_as_the_host_builds_it() -> None:
    """Repeated query values joined with ",", empty ones left out, header names lower-cased, the body as
    bytes (azure-functions-host RpcMessageConversionExtensions.ToRpcHttp)."""
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from devhost.http_triggers import to_rpc_http

    headers = CIMultiDict([("X-Trace", "a"), ("x-trace", "b"), ("Content-Type", "application/json")])
    request = make_mocked_request("POST", "/api/items/7?tag=x&tag=y&empty=", headers=headers)
    http = to_rpc_http(request, b'{"a": 1}', {"id": "7"}).http
    assert dict(http.query) == {"tag": "x,y"}
    assert http.headers["x-trace"] == "a,b" and http.headers["content-type"] == "application/json"
    assert dict(http.params) == {"id": "7"} and http.body.bytes == b'{"a": 1}' and http.method == "POST"


def test_a_response_cookie_keeps_its_attributes() -> None:
    from devhost.http_triggers import set_cookie
    from devhost.worker.protos import protos

    cookie = protos.RpcHttpCookie(
        name="session",
        value="opaque",
        path=protos.NullableString(value="/api"),
        secure=protos.NullableBool(value=True),
        http_only=protos.NullableBool(value=True),
        same_site=protos.RpcHttpCookie.Strict,
        max_age=protos.NullableDouble(value=60),
    )
    assert set_cookie(cookie) == "session=opaque; Path=/api; Max-Age=60; Secure; HttpOnly; SameSite=Strict"


# -- the durable rpc listener's port ----------------------------------------------------------------


def _taken() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def test_rpc_listener_falls_back_to_the_extensions_random_range_when_its_port_is_taken() -> None:
    held = _taken()
    wanted: list[range] = []

    def pick(ports: range) -> int:
        wanted.append(ports)
        return 0  # stands in for "a free port of the range"

    try:
        sock = bind_rpc_socket(held.getsockname()[1], pick=pick)
    finally:
        held.close()
    sock.close()
    assert wanted == [range(30000, 31000)]  # LocalHttpListener.MinPort..MaxPort


def test_rpc_listener_gives_up_after_ten_attempts_like_the_extension() -> None:
    held = [_taken() for _ in range(10)]
    ports = iter(s.getsockname()[1] for s in held[1:])
    try:
        with pytest.raises(RpcListenerError, match="after 10 attempts"):
            bind_rpc_socket(held[0].getsockname()[1], pick=lambda _: next(ports))
    finally:
        for sock in held:
            sock.close()
