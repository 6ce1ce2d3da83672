"""Kommo's disposable widget token: the ``X-Auth-Token`` a widget's ``$authorizedAjax`` call carries.

Kommo signs it with HS256 keyed by the integration's client secret and puts the account and user in its
claims, so the backend learns who is calling without any credential of its own in the browser. Written here
(about forty lines) rather than taken from a JWT library: only HS256 is ever valid, and pinning that by hand
leaves no algorithm negotiation to get wrong.

Checks: exactly three base64url parts; header ``alg`` == ``HS256`` (``none`` and every other algorithm are
refused) and no ``crit``; the signature; ``aud`` == scheme://host of our redirect URI; ``exp``, ``iat`` (and
``nbf`` when present) within a small leeway, lifetime at most an hour (Kommo issues 30 minutes);
``client_uuid`` == the integration's client id; ``account_id`` an integer. The account is then taken from the
token, never from the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

MAX_TOKEN_CHARS = 4096
LEEWAY_SECONDS = 30
MAX_LIFETIME_SECONDS = 3600


class InvalidWidgetToken(ValueError):
    """The token is malformed, forged, expired or not for us; the message says which (for logs, not users)."""


@dataclass(frozen=True, slots=True)
class WidgetClaims:
    account_id: int
    user_id: int | None
    is_admin: bool


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidWidgetToken("not base64url") from exc


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64(part))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidWidgetToken(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise InvalidWidgetToken(f"{what} is not an object")
    return value


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 3 or not token.isascii():
        raise InvalidWidgetToken("not a JWT")
    return parts[0], parts[1], parts[2]


def _int_claim(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidWidgetToken(f"{name} is not a number")
    return int(value)


def unverified_account_id(token: str) -> int | None:
    """The ``account_id`` claim before any check: only to find whose client secret verifies the token."""
    try:
        claims = _json_object(_split(token)[1], "claims")
        return _int_claim(claims, "account_id")
    except InvalidWidgetToken:
        return None


def audiences_for(redirect_uri: str) -> frozenset[str]:
    """``scheme://host`` of the redirect URI, also with its port when it has one."""
    parts = urlsplit(redirect_uri)
    host = (parts.hostname or "").lower()
    out = {f"{parts.scheme}://{host}"}
    if parts.port is not None:
        out.add(f"{parts.scheme}://{host}:{parts.port}")
    return frozenset(out)


def verify_widget_token(
    token: str, *, secret: str, client_id: str, redirect_uri: str, now: float | None = None
) -> WidgetClaims:
    """The claims of a valid token; ``InvalidWidgetToken`` otherwise."""
    header_b64, claims_b64, signature_b64 = _split(token)
    header = _json_object(header_b64, "header")
    if header.get("alg") != "HS256" or "crit" in header:
        raise InvalidWidgetToken("algorithm must be HS256")
    expected = hmac.new(secret.encode(), f"{header_b64}.{claims_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64(signature_b64)):
        raise InvalidWidgetToken("bad signature")
    claims = _json_object(claims_b64, "claims")
    aud = claims.get("aud")
    if not isinstance(aud, str) or aud.rstrip("/").lower() not in audiences_for(redirect_uri):
        raise InvalidWidgetToken("wrong audience")
    if not hmac.compare_digest(str(claims.get("client_uuid", "")).encode(), client_id.encode()):
        raise InvalidWidgetToken("wrong client_uuid")
    current = time.time() if now is None else now
    exp, iat, nbf = (_int_claim(claims, name) for name in ("exp", "iat", "nbf"))
    if exp is None or iat is None:
        raise InvalidWidgetToken("exp and iat are required")
    if exp <= current - LEEWAY_SECONDS:
        raise InvalidWidgetToken("expired")
    if iat > current + LEEWAY_SECONDS or (nbf is not None and nbf > current + LEEWAY_SECONDS):
        raise InvalidWidgetToken("not valid yet")
    if exp - iat > MAX_LIFETIME_SECONDS:
        raise InvalidWidgetToken("lifetime too long")
    account_id = _int_claim(claims, "account_id")
    if account_id is None or account_id <= 0 or not isinstance(claims["account_id"], int):
        raise InvalidWidgetToken("account_id is not a positive integer")
    user_id = claims.get("user_id")
    return WidgetClaims(
        account_id=account_id,
        user_id=user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
        is_admin=claims.get("is_admin") is True,
    )
