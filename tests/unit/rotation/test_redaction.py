"""Redaction: key-shaped values and secret-bearing fields never reach log output or error messages,
while the names an operator needs (rotation ids, key names, secret ids, ARM ids) survive."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation import redaction
from rotation.redaction import (
    MASK,
    RedactingFilter,
    RedactingFormatter,
    SafeError,
    looks_secret,
    redact,
    redact_data,
    safe_error_message,
)


def functions_key() -> str:
    """A value shaped like the host's: 40 random bytes, URL-safe base64, 56 characters ending in ==."""
    return base64.urlsafe_b64encode(os.urandom(40)).decode()


KEY = functions_key()

SECRET_TEXTS = [
    f"listkeys answered {KEY}",
    f"GET https://orders.azurewebsites.net/api/ping?code={KEY}&x=1",
    f"GET https://orders.azurewebsites.net/api/ping?code={KEY.rstrip('=')}",
    f'{{"functionKeys": {{"default": "{KEY}"}}}}',
    f'{{"value": "{KEY}", "id": "https://kv/secrets/s/0123456789abcdef0123456789abcdef"}}',
    f"x-functions-key: {KEY}",
    f"Authorization: Bearer {base64.urlsafe_b64encode(os.urandom(60)).decode()}",
    f"key={base64.b64encode(os.urandom(40)).decode()}",  # older standard-base64 keys (+ and /)
    "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    f"DefaultEndpointsProtocol=https;AccountName=st;AccountKey={base64.b64encode(os.urandom(64)).decode()};",
    "https://topic.westus-1.eventgrid.azure.net/api/events?sig=abc%2Bdef&se=1",
    "password=hunter2 client_secret: s3cr3t",
]
SAFE_TEXTS = [
    "rotation orders-api-20260105t030000z-s created key orders-client-20260105t030000z-s",
    "https://kv-prod.vault.azure.net/secrets/orders-api-client-key/0123456789abcdef0123456789abcdef",
    "/subscriptions/3f2b6c1e-8a4d-4e5f-9a7b-1c2d3e4f5a6b/resourceGroups/rg-orders-prod/providers/Microsoft.Web/sites/orders-api-prod",
    "consumer 0b7c2a4e-5d6f-4a1b-8c9d-0e1f2a3b4c5d acknowledged at 2026-01-05T03:00:00.000Z",
    "a-very-long-kebab-case-secret-name-for-the-billing-consumers-2026",
    "MicrosoftKeyVaultSecretNearExpiryEventDataSchemaVersion",
    "status code: 404, secret: orders-api-client-key",
    "event id 6f1d3c2a-9b7e-5c5d-8a1f-2e3d4c5b6a70 sha256 " + "ab" * 32,
]


@pytest.mark.parametrize(
    "text", SECRET_TEXTS, ids=[f"secret-{i}" for i in range(len(SECRET_TEXTS))]
)  # random values: stable ids
def test_secrets_are_masked(text: str) -> None:
    out = redact(text)
    assert MASK in out
    assert KEY not in out and KEY.rstrip("=") not in out
    for secret in ("hunter2", "s3cr3t", "abc%2Bdef", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"):
        assert secret not in out


@pytest.mark.parametrize("text", SAFE_TEXTS)
def test_names_operators_need_survive(text: str) -> None:
    assert redact(text) == text
    assert not looks_secret(text)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=40, max_size=40), prefix=st.sampled_from(["", " ", "=", "code=", '"', "/", "\n"]))
def test_no_functions_key_survives_anywhere(raw: bytes, prefix: str) -> None:
    for key in (base64.urlsafe_b64encode(raw).decode(), base64.b64encode(raw).decode()):
        text = f"before{prefix}{key} after"
        assert key not in redact(text)
        assert looks_secret(key)


def test_a_key_inside_a_longer_token_is_still_masked() -> None:
    assert KEY not in redact(f"{KEY}{KEY}")
    assert KEY not in redact(f"prefix{KEY}")


def test_structured_data_masks_secret_fields_and_keeps_names() -> None:
    listkeys = {
        "masterKey": KEY,
        "functionKeys": {"default": KEY, "orders": KEY},
        "systemKeys": {"durabletask_extension": KEY},
    }
    out = redact_data({"response": listkeys, "name": "orders", "items": [{"value": "short"}, {"note": f"got {KEY}"}]})
    assert out == {
        "response": {
            "masterKey": MASK,
            "functionKeys": {"default": MASK, "orders": MASK},
            "systemKeys": {"durabletask_extension": MASK},
        },
        "name": "orders",
        "items": [{"value": MASK}, {"note": f"got {MASK}"}],
    }


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(detail)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)


def test_log_messages_arguments_extras_and_tracebacks_are_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("listkeys returned %s", {"default": KEY}, extra={"detail": {"value": KEY}})
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        logger.exception("provision failed for %s", "orders-api", extra={"detail": f"code={KEY}"})
    output = stream.getvalue()
    assert KEY not in output and KEY.rstrip("=") not in output
    assert "provision failed for orders-api" in output
    assert "ValueError: bad key ***" in output  # the traceback is kept, redacted


def test_a_record_through_two_handlers_is_redacted_once_and_stays_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    second = io.StringIO()
    plain = logging.StreamHandler(second)  # no filter of its own, runs after the filtered handler
    logger.addHandler(plain)
    try:
        logger.warning("value=%s", KEY, extra={"detail": ""})
    finally:
        logger.removeHandler(plain)
    assert KEY not in stream.getvalue() and KEY not in second.getvalue()


def test_the_formatter_redacts_whatever_the_record_holds() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "secret %s", (KEY,), None)
    assert KEY not in RedactingFormatter("%(message)s").format(record)


def test_install_redacts_records_of_every_logger_at_creation() -> None:
    previous = logging.getLogRecordFactory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # deliberately without a filter
    logger = logging.getLogger("test.redaction.install")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        redaction.install(logger)
        redaction.install(logger)  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logger.error("stored %s", KEY)
        assert KEY not in stream.getvalue() and "stored ***" in stream.getvalue()
    finally:
        logging.setLogRecordFactory(previous)
        logger.removeHandler(handler)


class _Request:
    method = "PUT"
    url = f"https://management.azure.com/subscriptions/s/host/default/functionKeys/k?api-version=2025-05-01&code={KEY}"


class _Response:
    """Enough of an azure-core response for HttpResponseError to read it."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        self.status_code, self.reason, self._body, self.request = status, reason, body, _Request()
        self.headers: dict[str, str] = {}
        self.content_type = "application/json"

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def body(self) -> bytes:
        return self._body.encode()


def test_sdk_errors_become_one_safe_line_without_bodies_or_query() -> None:
    body = json.dumps({"error": {"code": "BadRequest", "message": f"Properties object is not present. Echo: {KEY}"}})
    exc = HttpResponseError(response=_Response(400, "Bad Request", body))
    message = safe_error_message(exc)
    assert message.startswith("HttpResponseError HTTP 400 Bad Request: (BadRequest) Properties object is not present.")
    assert message.endswith("[PUT https://management.azure.com/subscriptions/s/host/default/functionKeys/k]")
    assert KEY not in message and "api-version" not in message


def test_a_non_json_body_that_azure_core_would_append_is_dropped() -> None:
    exc = ResourceNotFoundError(response=_Response(404, "Not Found", f"<html>key {KEY}</html>"))
    assert KEY in str(exc)  # what a naive log line would have carried
    message = safe_error_message(exc)
    assert KEY not in message and "<html>" not in message
    assert message.startswith("ResourceNotFoundError HTTP 404 Not Found")


def test_plain_exceptions_keep_their_first_line_redacted_and_bounded() -> None:
    message = safe_error_message(RuntimeError(f"host said {KEY}\nsecond line " + "x" * 500))
    assert message == "RuntimeError: host said ***"
    assert len(safe_error_message(RuntimeError("y " * 400))) <= redaction.MAX_ERROR_MESSAGE


def test_safe_error_keeps_status_and_code_and_drops_the_original() -> None:
    body = json.dumps({"error": {"code": "Throttled", "message": "slow down"}})
    original = HttpResponseError(response=_Response(429, "Too Many Requests", body))
    with pytest.raises(SafeError) as caught:
        try:
            raise original
        except HttpResponseError as exc:
            raise SafeError.from_exception(exc) from None
    error: Any = caught.value
    assert (error.status_code, error.error_code) == (429, "Throttled")
    assert error.__cause__ is None and error.__suppress_context__
    assert "slow down" in str(error)
