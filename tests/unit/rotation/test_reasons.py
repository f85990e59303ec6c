"""Free text at every door (rotation/reasons.py): the API refuses what the issue-12 repro slipped through
(DEL, C1 controls, Unicode separators, bidi overrides), and what code must carry on with anyway is
cleaned, bounded and masked, whatever it is."""

from __future__ import annotations

import base64
import os
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotation.reasons import MAX_EVENT_TEXT, ReasonError, check_reason, clean_optional, clean_text, refused
from triggers.api_http import ApiError, reason_field

KEY = base64.urlsafe_b64encode(os.urandom(40)).decode()
# Each accepted by the API before issue 12 although it said it refused control characters.
SLIPPED_THROUGH = [
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u200f",
    "\u061c",
    "\u200b",
    "\u2060",
    "\ufeff",
    "\u00ad",
]  # the last four: Cf (review)


@pytest.mark.parametrize("char", [*SLIPPED_THROUGH, "\t", "\n", "\x00", "\ud800"])
def test_the_api_refuses_reasons_with_controls_separators_and_bidi_overrides(char: str) -> None:
    with pytest.raises(ApiError) as caught:
        reason_field({"reason": f"leaked in INC-1{char}234"})
    assert caught.value.status == 400 and caught.value.field == "reason"
    assert "control characters" in caught.value.message


def test_the_api_keeps_plain_reasons_and_refuses_long_or_secret_ones() -> None:
    assert reason_field({"reason": "  Schlüssel im Ticket INC-1234 — bitte löschen  "}) == (
        "Schlüssel im Ticket INC-1234 — bitte löschen"
    )
    for bad, words in (("x" * 501, "1-500 characters"), (f"it was {KEY}", "secret"), ("   ", "1-500")):
        with pytest.raises(ReasonError, match=words):
            check_reason(bad)


def test_a_key_hidden_between_control_characters_is_masked_not_carried() -> None:
    split = f"version {KEY[:20]}\x00\u202e{KEY[20:40]}\x1b{KEY[40:]} expired"
    cleaned = clean_text(split)
    assert KEY not in cleaned and KEY[:20] not in cleaned and KEY[40:] not in cleaned
    assert cleaned.startswith("version ") and cleaned.endswith(" expired")


def test_the_200_kb_version_of_the_repro_becomes_a_bounded_line() -> None:
    cleaned = clean_text("Key Vault reported version " + "f" * 200_000 + " near expiry")
    assert len(cleaned) == MAX_EVENT_TEXT and cleaned.endswith("...")


def test_clean_text_keeps_readable_text_and_none_stays_none() -> None:
    assert clean_text("abandoned: instance Terminated\nat stage overlap") == (
        "abandoned: instance Terminated at stage overlap"
    )
    assert clean_optional(None) is None and clean_optional("\x00\x7f") is None
    assert clean_text(42) == "42"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000), st.integers(min_value=8, max_value=2000))
def test_clean_text_never_raises_and_its_output_is_always_publishable(text: str, limit: int) -> None:
    cleaned = clean_text(text + KEY, limit)
    assert len(cleaned) <= limit and KEY not in cleaned
    assert not any(refused(c) for c in cleaned)
    assert all(unicodedata.category(c) != "Cs" for c in cleaned)
    cleaned.encode("utf-8")  # a lone surrogate would make every log line and publish fail


def test_the_shortcut_for_printable_ascii_skips_no_refused_character() -> None:
    """clean_text takes printable ASCII as it is (every replay of a rotation cleans the same names and
    reasons again); that is sound only while no such character is refused. Every ASCII character."""
    shortcut = [chr(c) for c in range(128) if chr(c).isprintable()]
    assert len(shortcut) == 95 and not [c for c in shortcut if refused(c)]
    assert all(refused(chr(c)) for c in [*range(32), 127])  # the rest: controls, each a space
    assert clean_text("stage\x07overlap\tdone") == "stage overlap done"
