"""Kommo's widget token, checked alone: the claims window, the audience forms and malformed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from app.accounts.throttle import AttemptWindow
from app.security.widget_jwt import InvalidWidgetToken, unverified_account_id, verify_widget_token

SECRET = "client-secret"
CLIENT = "client-uuid"
REDIRECT = "https://sync.example.com:8443/auth/callback"
NOW = 1_800_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(claims: dict[str, Any] | None = None, *, header: dict[str, Any] | None = None) -> str:
    body = {
        "aud": "https://sync.example.com",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 1800,
        "account_id": 42,
        "client_uuid": CLIENT,
        "user_id": 7,
        "is_admin": True,
        **(claims or {}),
    }
    head = _b64(json.dumps(header or {"typ": "JWT", "alg": "HS256"}).encode())
    payload = _b64(json.dumps(body).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{_b64(sig)}"


def _verify(token: str, now: float = NOW) -> Any:
    return verify_widget_token(token, secret=SECRET, client_id=CLIENT, redirect_uri=REDIRECT, now=now)


def test_a_good_token_gives_its_account_user_and_role() -> None:
    claims = _verify(_token())
    assert (claims.account_id, claims.user_id, claims.is_admin) == (42, 7, True)
    assert _verify(_token({"aud": "https://sync.example.com:8443/"})).account_id == 42  # with the port too
    assert unverified_account_id(_token()) == 42
    assert unverified_account_id("garbage") is None


@pytest.mark.parametrize(
    ("now", "ok"),
    [(NOW - 29, True), (NOW - 31, False), (NOW + 1800 + 29, True), (NOW + 1800 + 30, False)],
)
def test_time_window_has_a_small_leeway(now: int, ok: bool) -> None:
    if ok:
        _verify(_token(), now)
    else:
        with pytest.raises(InvalidWidgetToken):
            _verify(_token(), now)


@pytest.mark.parametrize(
    ("claims", "header"),
    [
        ({"aud": "https://evil.example"}, None),
        ({"aud": ["https://sync.example.com"]}, None),
        ({"client_uuid": "other"}, None),
        ({"exp": None}, None),
        ({"iat": None}, None),
        ({"exp": NOW + 7200}, None),  # longer-lived than any widget token
        ({"account_id": "42"}, None),
        ({"account_id": True}, None),
        ({"account_id": 0}, None),
        ({"exp": "soon"}, None),
        ({}, {"alg": "none"}),
        ({}, {"alg": "HS512"}),
        ({}, {"alg": "HS256", "crit": ["x"]}),
    ],
)
def test_refused(claims: dict[str, Any], header: dict[str, Any] | None) -> None:
    with pytest.raises(InvalidWidgetToken):
        _verify(_token(claims, header=header))


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "x" * 5000, "é.é.é", _token()[:-2] + "AA", _token().rsplit(".", 1)[0] + "."],
)
def test_malformed_or_forged(token: str) -> None:
    with pytest.raises(InvalidWidgetToken):
        _verify(token)


def test_attempt_window_refuses_beyond_every_limit_and_counts_nothing_then() -> None:
    window = AttemptWindow()
    limits = {"account:1": 2, "all": 3}
    assert window.try_acquire(limits, window=60) is None
    assert window.try_acquire(limits, window=60) is None
    wait = window.try_acquire(limits, window=60)
    assert wait is not None
    assert 59 < wait <= 60
    # The refused attempt was not counted under "all": one more account still fits, then "all" is full.
    assert window.try_acquire({"account:2": 2, "all": 3}, window=60) is None
    assert window.try_acquire({"account:3": 2, "all": 3}, window=60) is not None
    assert window.try_acquire({"account:3": 2, "all": 3}, window=0.000001) is None  # old attempts age out
