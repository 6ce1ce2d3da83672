"""Per-account webhook tokens, signed connect links and signed, expiring OAuth ``state`` values."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from app.security.crypto import Cipher, DecryptionError


def new_webhook_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: they are random, so a slow KDF adds nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(candidate: str | None, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented token with the stored hash."""
    if not candidate or not stored_hash:
        # Still do the work so a missing token costs the same as a wrong one.
        hmac.compare_digest(hash_token(candidate or ""), "0" * 64)
        return False
    return hmac.compare_digest(hash_token(candidate), stored_hash)


_LINK_PURPOSE = b"contactsync connect link v1"


def _link_mac(key: bytes, account_id: int) -> str:
    # A key of its own, derived from the encryption key, so a MAC never doubles as anything else.
    link_key = hmac.new(key, _LINK_PURPOSE, hashlib.sha256).digest()
    return hmac.new(link_key, str(account_id).encode(), hashlib.sha256).hexdigest()[:32]


def sign_connect_link(keys: Sequence[bytes], account_id: int) -> str:
    """The ``sig`` of an account's connect link (``/auth?id=…&sig=…``), made with the first key."""
    return _link_mac(keys[0], account_id)


def connect_link_valid(keys: Sequence[bytes], account_id: int, sig: str | None) -> bool:
    """True when ``sig`` was made by any configured key (links survive a key rotation). Every key is tried,
    so a wrong signature costs the same whatever the account."""
    presented = (sig or "").encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(presented, _link_mac(key, account_id).encode())
    return ok


@dataclass(frozen=True, slots=True)
class OAuthState:
    account_id: int
    nonce: str


class InvalidState(ValueError):
    pass


def make_state(cipher: Cipher, account_id: int) -> tuple[OAuthState, str]:
    """Return the state and its opaque, authenticated and timestamped encoding for the authorize URL."""
    state = OAuthState(account_id=account_id, nonce=secrets.token_urlsafe(16))
    blob = json.dumps({"a": state.account_id, "n": state.nonce}, separators=(",", ":"))
    return state, cipher.encrypt(blob)


def read_state(cipher: Cipher, raw: str, *, max_age_seconds: int) -> OAuthState:
    """Decode a state from Kommo's redirect; raises InvalidState when forged, corrupted or expired."""
    try:
        data = json.loads(cipher.decrypt(raw, ttl=max_age_seconds))
        return OAuthState(account_id=int(data["a"]), nonce=str(data["n"]))
    except (DecryptionError, ValueError, KeyError, TypeError) as exc:
        raise InvalidState("state is invalid or expired") from exc
