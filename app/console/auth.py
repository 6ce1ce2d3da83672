"""Console sign-in: the operator token is checked once (in constant time), then a session cookie stands for
it. PostgreSQL keeps only the SHA-256 of the cookie's value; the CSRF token of every form is an HMAC of the
cookie's value, so it needs no storage and a page of another session cannot lend its token.

The sign-in form itself, posted before any session exists, is protected by a double-submit cookie: a random
value both in a SameSite=Strict cookie and in the form, which another site can neither read nor set.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import structlog
from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import ContextDep, SessionDep
from app.config import Settings
from app.console import repository as repo
from app.console.errors import CsrfRefused, SignInRequired
from app.db.base import utcnow

log = structlog.get_logger(__name__)

COOKIE = "contactsync_console"
SIGNIN_COOKIE = "contactsync_console_signin"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"
_CSRF_PURPOSE = b"contactsync console csrf v1"
SIGNIN_COOKIE_SECONDS = 3600
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often


def operator_token_matches(presented: str, settings: Settings) -> bool:
    """The operator (admin) token, compared in constant time: digests of equal length, whatever was typed."""
    expected = settings.admin_token.get_secret_value().encode()
    given = presented.strip().encode()
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest()) and bool(
        given
    )


def csrf_for(cookie_value: str) -> str:
    return hmac.new(cookie_value.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def same_secret(presented: str | None, expected: str) -> bool:
    return hmac.compare_digest((presented or "").encode(), expected.encode()) and bool(presented)


def _secure(settings: Settings) -> bool:
    return settings.public_url.lower().startswith("https://")


def set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(settings),
    )


def clear_cookie(response: Response, settings: Settings, name: str) -> None:
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(settings))


def session_key(cookie_value: str, settings: Settings) -> str:
    """What is stored of a session: an HMAC of its cookie under the operator token. A reader of the table
    cannot sign in with it, and a new operator token ends every session made with the old one (a leaked token
    is revoked by rotating it, sessions included)."""
    key = settings.admin_token.get_secret_value().encode()
    return hmac.new(key, cookie_value.encode(), hashlib.sha256).hexdigest()


async def open_session(session: AsyncSession, settings: Settings) -> tuple[str, int]:
    """A new session: the cookie value (never stored) and its lifetime in seconds. Expired sessions are
    pruned on the way."""
    now = utcnow()
    lifetime = timedelta(hours=settings.console_session_hours)
    await repo.delete_expired(session, now=now)
    value = secrets.token_urlsafe(32)
    await repo.add_session(session, session_key(value, settings), now=now, expires_at=now + lifetime)
    log.info("console.signed_in", expires_at=(now + lifetime).isoformat())
    return value, int(lifetime.total_seconds())


async def close_session(session: AsyncSession, cookie_value: str, settings: Settings) -> None:
    await repo.delete_session(session, session_key(cookie_value, settings))
    log.info("console.signed_out")


@dataclass(frozen=True, slots=True)
class Operator:
    """A request made in a live console session."""

    cookie_value: str
    expires_at: datetime

    @property
    def csrf(self) -> str:
        return csrf_for(self.cookie_value)


async def current_operator(request: Request, session: AsyncSession) -> Operator | None:
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    now = utcnow()
    token_hash = session_key(value, request.app.state.ctx.settings)
    found = await repo.live_session(session, token_hash, now=now)
    if found is None:
        return None
    if now - found.last_seen_at > TOUCH_EVERY:
        await repo.touch_session(session, token_hash, now=now)
    return Operator(cookie_value=value, expires_at=found.expires_at)


async def require_operator(request: Request, session: SessionDep) -> Operator:
    """Every console page and action: a live session, else ``SignInRequired``."""
    operator = await current_operator(request, session)
    if operator is None:
        raise SignInRequired()
    return operator


OperatorDep = Annotated[Operator, Depends(require_operator)]


async def require_csrf(request: Request, operator: OperatorDep) -> Operator:
    """Every console POST: a live session (401 first) and the form's CSRF token for it (403)."""
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    if not same_secret(presented if isinstance(presented, str) else None, operator.csrf):
        log.warning("console.csrf_refused", path=request.url.path)
        raise CsrfRefused()
    return operator


CheckedOperator = Annotated[Operator, Depends(require_csrf)]

__all__ = ["CheckedOperator", "ContextDep", "OperatorDep"]
