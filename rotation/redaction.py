"""Keep key values out of logs, exceptions, statuses and events (invariant I1), at the source.

Three layers, each cheap: value shapes (a Functions key is 54 URL-safe base64 characters + `==`; any
other mixed-case token of 40+ base64 characters with high entropy; bearer tokens), secret-bearing
fields (`code=`/`sig=` query parameters, `x-functions-key:` headers, JSON `"value": "..."`, connection
string keys), and exceptions from SDKs reduced to type, status, error code and first line — never the
request or response body that azure-core appends to `str(exc)`.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

MASK = "***"
MAX_ERROR_MESSAGE = 300

# Functions keys as the host generates them (40 bytes, URL-safe base64 with padding), or older
# standard-base64 keys of the same length: the last 56 characters of any token ending in `==`, whatever
# the key is glued to, and whatever its entropy (an all-`A` key is still a key).
_KEY_SHAPE = re.compile(r"[A-Za-z0-9+/_-]{54}==")  # whatever follows it: a URL path, glued text, `=`
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/_=-])")
_BEARER = re.compile(r"(?i)\b(bearer|sharedaccesssignature)\s+[A-Za-z0-9._~+/=%&-]+")
_FIELD_NAMES: tuple[str, ...] = (
    "code",
    "sig",
    "secret",
    "password",
    "pwd",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    "apikey",
    "api_key",
    "x-functions-key",
    "aeg-sas-key",
    "aeg-sas-token",
    "authorization",
    "accountkey",
    "sharedaccesskey",
    "masterkey",
)
# `code`, `sig` and `secret` are common words in logs ("status code: 404", "secret: <name>"): as bare
# assignments they are left alone; as query parameters (`?code=`) and JSON fields they are masked.
_ALL = "|".join(re.escape(n) for n in _FIELD_NAMES)
_ASSIGNED = "|".join(re.escape(n) for n in _FIELD_NAMES if n not in ("code", "sig", "secret"))
_QUERY_PARAM = re.compile(rf"(?i)([?&;](?:{_ALL})=)[^&#\s\"']*")
_ASSIGNMENT = re.compile(rf"(?i)(?<![A-Za-z0-9_-])((?:{_ASSIGNED})\s*[=:]\s*)(?!{re.escape(MASK)})[^\s&;,\"']+")
_JSON_FIELD = re.compile(rf"(?i)(\"(?:value|key|{_ALL})\"\s*:\s*\")[^\"]*(\")")

SECRET_FIELDS = frozenset({"value", *_FIELD_NAMES})
# Fields whose *members* are secrets, keyed by name: listkeys' functionKeys / systemKeys maps.
SECRET_MAPS = frozenset({"functionkeys", "systemkeys", "keys"})


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _classes(text: str) -> tuple[bool, bool, bool]:
    return any(c.isupper() for c in text), any(c.islower() for c in text), any(c.isdigit() for c in text)


def _is_high_entropy_token(token: str) -> bool:
    """A random base64 string, not a long identifier or a path: both letter cases, and digits or high
    entropy (random base64 of 40 characters scores ~4.8 bits/char, CamelCase words ~4.1). With `/` in it
    (standard base64, but also every ARM id), it must be padded, or have one 16+ character segment that
    is random-looking on its own: path segments are words, GUIDs and lowercase hex."""
    body = token.rstrip("=")
    upper, lower, digit = _classes(body)
    if not (upper and lower):
        return False
    if "/" in body:
        if token.endswith("="):
            return True
        return any(len(s) >= 16 and all(_classes(s)) for s in body.split("/"))
    return digit or _entropy(body) >= 4.4


def looks_secret(text: str) -> bool:
    """Whether a string contains a value shaped like a key or token (field names are not considered)."""
    if _KEY_SHAPE.search(text) or _BEARER.search(text):
        return True
    return any(_is_high_entropy_token(m.group(0)) for m in _TOKEN.finditer(text))


def redact(text: str) -> str:
    """The text with every secret-shaped value and secret-bearing field's value replaced by ***."""
    if not text:
        return text
    text = _KEY_SHAPE.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _QUERY_PARAM.sub(lambda m: m.group(1) + MASK, text)
    text = _JSON_FIELD.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    text = _ASSIGNMENT.sub(lambda m: m.group(1) + MASK, text)
    return _TOKEN.sub(lambda m: MASK if _is_high_entropy_token(m.group(0)) else m.group(0), text)


def redact_data(value: Any) -> Any:
    """A JSON-like structure with secret fields masked and every string redacted (for structured logs)."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if lowered in SECRET_MAPS and isinstance(item, Mapping):
                out[key] = dict.fromkeys(item, MASK)
            elif lowered in SECRET_FIELDS and item is not None:
                out[key] = MASK
            else:
                out[key] = redact_data(item)
        return out
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


# -- logging ----------------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_FORMATTER = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: message (args merged first), traceback, stack, and `extra` fields.
    The exception is kept only as redacted text (exc_text): exc_info is cleared, because exporters that
    read it directly would render the unredacted exception message."""
    if getattr(record, "_keyrotation_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string must not lose the record
        message = f"{record.msg!s} {record.args!r}"
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = _FORMATTER.formatException(record.exc_info)
    record.exc_info = None
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    for name, value in list(record.__dict__.items()):
        if name not in _STANDARD_ATTRS and not name.startswith("_"):
            record.__dict__[name] = redact_data(value)
    record._keyrotation_redacted = True
    return record


class RedactingFilter(logging.Filter):
    """Attach to a handler (or logger): every record passing through is redacted, never dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose output is redacted as a whole: the last line of defence for a handler."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install(logger: logging.Logger | None = None) -> None:
    """Redact at the source: every record is redacted when created (any logger, any handler), and the
    given logger's handlers (root by default) also get the filter for `extra` fields. Idempotent."""
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "_keyrotation", False):

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = redact_record(previous(*args, **kwargs))
            record._keyrotation_redacted = False  # `extra` fields come later
            return record

        factory._keyrotation = True  # type: ignore[attr-defined]  # a marker on the function, read by getattr above
        logging.setLogRecordFactory(factory)
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# -- exceptions -------------------------------------------------------------------------------------


def safe_error_message(exc: BaseException) -> str:
    """One line about an exception, safe for logs, orchestration history and events: type, HTTP status,
    service error code, the first line of the service's message, and the request's method and URL
    without its query. Never the request or response body."""
    parts = [type(exc).__name__]
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        reason = getattr(exc, "reason", None)
        parts.append(f"HTTP {status}" + (f" {reason}" if isinstance(reason, str) and reason else ""))
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if not isinstance(message, str):
        message = getattr(exc, "message", None)  # azure-core: the message without the appended body
    if not isinstance(message, str):
        message = str(exc.args[0]) if exc.args else ""
    message = message.strip().splitlines()[0] if message.strip() else ""
    if message.startswith(f"({code}) ") and code:
        message = message[len(f"({code}) ") :]
    detail = (f"({code}) " if isinstance(code, str) and code else "") + message
    text = ": ".join([" ".join(parts), detail]) if detail else " ".join(parts)
    request = getattr(getattr(exc, "response", None), "request", None)
    method, url = getattr(request, "method", None), getattr(request, "url", None)
    if isinstance(method, str) and isinstance(url, str):
        text += f" [{method} {url.split('?', 1)[0]}]"
    text = redact(text)
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 3] + "..."


class SafeError(RuntimeError):
    """What activities raise instead of an SDK exception (`raise SafeError.from_exception(e) from None`):
    the message is safe_error_message(), the status and service error code are kept for retry decisions,
    and the original (with its request/response) is not chained."""

    def __init__(self, message: str, status_code: int | None = None, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code

    @classmethod
    def from_exception(cls, exc: BaseException) -> SafeError:
        status = getattr(exc, "status_code", None)
        code = getattr(getattr(exc, "error", None), "code", None)
        return cls(
            safe_error_message(exc),
            status if isinstance(status, int) else None,
            code if isinstance(code, str) else None,
        )
