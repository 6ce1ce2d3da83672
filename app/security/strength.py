"""Rules a configured secret must meet outside development: not a published example, not guessable.

Each check returns a problem sentence naming the variable and the rule (never the value), or nothing.
"""

from __future__ import annotations

import base64
import math

ADMIN_TOKEN_VAR = "CONTACTSYNC_ADMIN_TOKEN"
SECRET_KEYS_VAR = "CONTACTSYNC_SECRET_KEYS"

# Every value the repository publishes (docker-compose.yml fallbacks, the development default, README
# examples) and the usual stand-ins. tests/test_deploy.py proves the compose fallbacks are refused.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "admin",
        "secret",
        "password",
        "changeme",
        "change-me",
        "changethis",
        "dev-admin-token",
        "compose-local-admin-token-replace-me",
        "8ty2suo0jybqkvbugdn1obhzlqdqxxqh3qbegjdd8re=",  # the compose file's fallback Fernet key
    }
)
# Words that mark a value as an example to replace, wherever they appear in it.
PLACEHOLDER_MARKERS = ("replace-me", "replaceme", "changeme", "change-me", "changethis", "placeholder")

MIN_ADMIN_TOKEN_LENGTH = 16
# A repeated or patterned value uses few characters; a random one of 16 characters uses about 14 (fewer than
# 8 happens once in ~10 million URL-safe tokens).
MIN_ADMIN_TOKEN_DISTINCT = 8
MIN_ADMIN_TOKEN_BITS = 64
# A generated Fernet key (32 random bytes) holds about 30 distinct byte values; 16 is far below what chance
# produces (the odds are below 1e-15) and far above a typed or patterned key.
MIN_KEY_DISTINCT_BYTES = 16

GENERATE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
GENERATE_KEY = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_SECRETS or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def estimated_bits(value: str) -> float:
    """Entropy of ``value`` if each character were drawn at random from the classes it uses:
    length × log2(alphabet), the alphabet summing a-z 26, A-Z 26, 0-9 10 and 32 for anything else.
    A URL-safe token of 16 characters scores 96, one of 16 hex digits 82, a word of 10 letters 47."""
    alphabet = 0
    alphabet += 26 if any("a" <= c <= "z" for c in value) else 0
    alphabet += 26 if any("A" <= c <= "Z" for c in value) else 0
    alphabet += 10 if any("0" <= c <= "9" for c in value) else 0
    alphabet += 32 if any(not (c.isascii() and c.isalnum()) for c in value) else 0
    return len(value) * math.log2(alphabet) if alphabet else 0.0


def admin_token_problem(token: str) -> str | None:
    if is_placeholder(token):
        return (
            f"{ADMIN_TOKEN_VAR} is a published example or placeholder value; set your own: {GENERATE_TOKEN}"
        )
    if (
        len(token) < MIN_ADMIN_TOKEN_LENGTH
        or len(set(token)) < MIN_ADMIN_TOKEN_DISTINCT
        or estimated_bits(token) < MIN_ADMIN_TOKEN_BITS
    ):
        return (
            f"{ADMIN_TOKEN_VAR} is too weak: it needs at least {MIN_ADMIN_TOKEN_LENGTH} characters, "
            f"{MIN_ADMIN_TOKEN_DISTINCT} distinct characters and {MIN_ADMIN_TOKEN_BITS} bits of estimated "
            "entropy (length × log2 of the alphabet its characters span: a-z 26, A-Z 26, 0-9 10, others 32); "
            f"generate one: {GENERATE_TOKEN}"
        )
    return None


def secret_key_problems(keys: list[bytes]) -> list[str]:
    """``keys`` are valid Fernet keys (url-safe base64 of 32 bytes)."""
    problems: list[str] = []
    for i, key in enumerate(keys, start=1):
        if is_placeholder(key.decode("ascii")):
            problems.append(
                f"{SECRET_KEYS_VAR}: key #{i} is a published example key; generate your own: {GENERATE_KEY} "
                "(to move data off it: prepend the new key, run `contactsync rotate-keys` with "
                "CONTACTSYNC_ENV=development, then remove the example key)"
            )
            continue
        distinct = len(set(base64.urlsafe_b64decode(key)))
        if distinct < MIN_KEY_DISTINCT_BYTES:
            problems.append(
                f"{SECRET_KEYS_VAR}: key #{i} is not random: its 32 bytes take only {distinct} distinct "
                f"values (at least {MIN_KEY_DISTINCT_BYTES} required; a generated key has about 30); "
                f"generate one: {GENERATE_KEY}"
            )
    return problems
