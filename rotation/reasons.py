"""Free text that travels with a rotation (reasons, errors, details), checked and cleaned in one place.

Every door that lets text in — the API's `reason` fields, Key Vault's near-expiry event, the event
builders — goes through here, so they agree on what may pass. Refused (API) or replaced (everything
else): Unicode control characters (Cc, including tab and the C1 set such as NEL U+0085 and CSI
U+009B), line and paragraph separators (Zl, Zp), lone surrogates (Cs: not encodable as UTF-8) and the
bidirectional controls (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), which can make a log line or an
audit record read differently from what it holds (CVE-2021-42574, "Trojan Source").

`check_reason` is for a caller who can be told no (a 400 naming the field); `clean_text` is for code
that must go on whatever it was given (an orchestrator building an event from a stuck rotation's input):
it never raises, masks secret-shaped values and bounds the length.
"""

from __future__ import annotations

import unicodedata

from rotation.redaction import looks_secret, redact

MAX_REASON = 500  # what a caller may send (API bodies)
MAX_EVENT_TEXT = 1024  # what an event's free-text field holds (maxLength in config/events/*.schema.json)
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})  # Cf: zero-width and bidi controls
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ELLIPSIS = "..."


class ReasonError(ValueError):
    """Why a reason is refused, in words that never repeat it (it may hold a pasted key)."""


def refused(char: str) -> bool:
    """Whether a character may not appear in free text that ends up in logs, statuses and events."""
    return char in BIDI_CONTROLS or unicodedata.category(char) in REFUSED_CATEGORIES


def check_reason(value: str, limit: int = MAX_REASON) -> str:
    """The reason trimmed, or ReasonError: 1-`limit` characters, none refused, nothing secret-shaped."""
    text = value.strip()
    if not 1 <= len(text) <= limit:
        raise ReasonError(f"must be 1-{limit} characters")
    if any(refused(c) for c in text):
        raise ReasonError(
            "must not contain control characters (Unicode Cc, including tab), format characters (Cf: zero-width, "
            "bidirectional controls), line or paragraph separators"
        )
    if looks_secret(text):  # it goes into the orchestration input, events and logs (I1)
        raise ReasonError("must not contain a key, token or other secret value")
    return text


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - len(ELLIPSIS))].rstrip() + ELLIPSIS


def clean_text(value: object, limit: int = MAX_EVENT_TEXT) -> str:
    """Any value as safe, bounded text; never raises. Refused characters become spaces — unless removing
    them reveals a secret-shaped value (a key split by control characters), which is then masked too.
    The text is cut generously before redaction (cost) and exactly after it, so a value cut in half at
    the first cut never survives the second."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = text[: 8 * limit + 64]
    if text.isascii() and text.isprintable():
        spaced = text  # nothing refused (the common case, and every replay of a rotation repeats it)
    else:
        joined = "".join(c for c in text if not refused(c))
        spaced = joined if looks_secret(joined) else "".join(" " if refused(c) else c for c in text)
    return _bounded(" ".join(redact(spaced).split()), limit)


def clean_optional(value: object, limit: int = MAX_EVENT_TEXT) -> str | None:
    """clean_text, keeping None (and text that cleans to nothing) as None: events allow a null reason."""
    if value is None:
        return None
    return clean_text(value, limit) or None
