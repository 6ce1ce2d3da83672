"""Unisender's own words in errors shown to people: kept from the envelope, secrets masked."""

from __future__ import annotations

from app.accounts.unisender import _their_reason
from app.connectors.unisender.exceptions import error_from_envelope, error_from_status


def test_the_envelope_message_is_kept_as_the_reason() -> None:
    exc = error_from_envelope("AK100310-02", "invalid_api_key", method="getLists")
    assert exc.reason == "AK100310-02"
    assert _their_reason(exc) == ": AK100310-02."


def test_a_key_quoted_in_the_reason_is_masked_and_the_text_is_shortened() -> None:
    key = "6kq3ch5qd1b8kgquwqnyx3f7oowo84udoh8zfn5e"
    exc = error_from_envelope(
        f"Key &quot;{key}&quot; is   blocked. " + "x " * 400, "access_denied", method="m"
    )
    shown = _their_reason(exc)
    assert key not in shown
    assert shown.startswith(': Key "***" is blocked. x x')
    assert len(shown) <= 303


def test_no_words_no_reason() -> None:
    assert _their_reason(error_from_status(401, method="getLists")) == "."
    assert _their_reason(error_from_envelope(None, "invalid_api_key", method="getLists")) == "."
