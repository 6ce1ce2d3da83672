"""PHP-style request parameter parsing (``a[0][1]=x``, ``m[Name]=y``, ``l[]=z``), written for the sandbox only.

Unisender's classic API is PHP: it sees ``$_GET``/``$_POST`` as PHP builds them. This module rebuilds that
structure from decoded ``(name, value)`` pairs, so the sandbox reads parameters exactly as the real API would.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TypeAlias
from urllib.parse import unquote

PhpValue: TypeAlias = "str | dict[str, PhpValue]"
PhpParams: TypeAlias = dict[str, PhpValue]


def decode_urlencoded(raw: str) -> list[tuple[str, str]]:
    """Decode an ``application/x-www-form-urlencoded`` string (brackets may be %-encoded); strict UTF-8.

    What ``parse_qsl(raw, keep_blank_values=True)`` returns, faster: an import of 500 rows carries thousands
    of pairs, and this sandbox shares the machine with the service it serves in benchmarks. Names repeat
    from call to call (``data[i][j]``) and are decoded once; a value without ``%`` or ``+`` is taken as is.
    """
    pairs: list[tuple[str, str]] = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_decoded_name(name), _decoded(value)))
    return pairs


def _decoded(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    return unquote(text.replace("+", " "), encoding="utf-8", errors="strict")


_decoded_name = functools.lru_cache(maxsize=65_536)(_decoded)


def _php_base(name: str) -> str:
    # PHP drops leading spaces and turns ' ' and '.' in top-level names into '_'.
    return name.lstrip(" ").replace(" ", "_").replace(".", "_")


def split_key(raw: str) -> tuple[str, list[str]] | None:
    """Split ``a[b][]`` into ``("a", ["b", ""])``; None for names PHP ignores (empty base)."""
    open_at = raw.find("[")
    if open_at == -1:
        base = _php_base(raw)
        return (base, []) if base else None
    base = _php_base(raw[:open_at])
    if not base:
        return None
    segments: list[str] = []
    pos = open_at
    while pos < len(raw) and raw[pos] == "[":
        close = raw.find("]", pos + 1)
        if close == -1:
            if not segments:
                # PHP: an unmatched '[' in the name becomes '_' and the name stays flat.
                return (base + "_" + raw[open_at + 1 :].replace(".", "_").replace(" ", "_"), [])
            break
        segments.append(raw[pos + 1 : close])
        pos = close + 1
    # Anything after the last ']' that is not another '[' is dropped, as PHP does.
    return base, segments


def _next_index(container: dict[str, PhpValue]) -> str:
    highest = -1
    for key in container:
        if key.isdigit() and (key == "0" or not key.startswith("0")):
            highest = max(highest, int(key))
    return str(highest + 1)


def build_params(pairs: Iterable[tuple[str, str]]) -> PhpParams:
    """Fold decoded pairs into nested PHP arrays; later pairs override earlier ones, as in PHP."""
    root: PhpParams = {}
    for raw_key, value in pairs:
        parsed = split_key(raw_key)
        if parsed is None:
            continue
        base, segments = parsed
        container = root
        keys = [base, *segments]
        for depth, key in enumerate(keys):
            if depth > 0 and key == "":
                key = _next_index(container)
            if depth == len(keys) - 1:
                container[key] = value
            else:
                child = container.get(key)
                if not isinstance(child, dict):
                    child = {}
                    container[key] = child
                container = child
    return root
