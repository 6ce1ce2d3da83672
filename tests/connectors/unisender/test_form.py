"""The form encoder writes exactly what ``urllib.parse.urlencode`` writes, for any text."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.connectors.unisender.form import form_encode, quote_value

# Any text UTF-8 can carry (no lone surrogates: the boundary cleaning removes those before a call is made).
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(st.lists(st.tuples(_text, _text), max_size=8))
def test_any_pairs_encode_as_urlencode_does(pairs: list[tuple[str, str]]) -> None:
    assert form_encode(pairs) == urlencode(pairs).encode("ascii")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ana@example.com",
        "Ана Иванова",
        "a b+c&d=e%f/g?h#i",
        "~_.-",
        "\x00\x7f\xff",
        "😀 emoji",
        "field_names[0]",
    ],
)
def test_quote_value_matches_quote_plus(value: str) -> None:
    assert form_encode([("k", value)]) == urlencode([("k", value)]).encode("ascii")
    quoted = quote_value(value)
    assert "&" not in quoted
    assert "=" not in quoted


def test_a_lone_surrogate_is_refused_as_urlencode_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        urlencode([("k", "\ud800")])
    with pytest.raises(UnicodeEncodeError):
        form_encode([("k", "\ud800")])
