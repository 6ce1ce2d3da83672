"""Cleaning of the text providers hand us (Kommo's webhook values and REST fields, Unisender's hook data),
before anything stores it.

Kommo keeps whatever its users and integrations typed, control characters included, Unisender's contact data
likewise, and a webhook can be forged: a NUL (``%00`` in a form body, ``\\u0000`` in JSON) cannot be stored in
PostgreSQL text at all, and a lone UTF-16 surrogate (``\\ud800`` in JSON) cannot be encoded as UTF-8. One such
value used to fail every write that carried it. So the parsers pass every string through ``clean_text``:

- removed: the C0 controls (U+0000-U+001F) except tab, line feed and carriage return; DEL (U+007F); the C1
  controls (U+0080-U+009F); lone surrogates (U+D800-U+DFFF). None of them has a visible meaning in a name,
  an address or a tag, and each can break a database, a JSON document or a mail header downstream.
- kept: tab, line feed and carriage return. Kommo's multi-line text fields legitimately hold them, and
  PostgreSQL, JSON and Unisender store them as they are; removing them would change what the user typed.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(value: str) -> str:
    """``value`` without control characters (tab, LF and CR kept) and lone surrogates."""
    # The search is the common case (nothing to remove) and costs far less than a substitution.
    return value if _UNSAFE.search(value) is None else _UNSAFE.sub("", value)
