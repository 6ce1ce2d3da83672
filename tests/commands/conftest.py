"""The operator commands run in-process (``app.cli.main``) against the test's real PostgreSQL and Redis, with
their settings from the environment as in production."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app.cli import main
from app.config import Settings
from app.db.base import utcnow
from app.db.models import EspAccount, Integration, KommoToken
from app.db.states import IntegrationStatus
from app.security.tokens import hash_token


@dataclass
class CliResult:
    code: int
    out: str
    err: str


Cli = Callable[..., Coroutine[Any, Any, CliResult]]


def settings_env(settings: Settings) -> dict[str, str]:
    """The service's settings as the CONTACTSYNC_* variables a deployment would set."""
    assert settings.database_url
    assert settings.redis_url
    assert settings.secret_keys
    return {
        "CONTACTSYNC_ENV": settings.env.value,
        "CONTACTSYNC_DATABASE_URL": settings.database_url,
        "CONTACTSYNC_REDIS_URL": settings.redis_url,
        "CONTACTSYNC_SECRET_KEYS": settings.secret_keys.get_secret_value(),
        "CONTACTSYNC_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
        "CONTACTSYNC_PUBLIC_URL": settings.public_url,
        "CONTACTSYNC_LOG_FORMAT": "json",
        "CONTACTSYNC_STATE_DIR": str(settings.state_dir),
    }


@pytest.fixture
def cli(
    fresh_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[Settings], Cli]:
    """``cli(settings)(*argv)``: run ``contactsync *argv`` with ``settings`` in the environment, in a thread
    (the command runs its own event loop), and return its exit code and output."""

    def bind(settings: Settings, **overrides: str) -> Cli:
        async def run(*argv: str) -> CliResult:
            for key, value in (settings_env(settings) | overrides).items():
                monkeypatch.setenv(key, value)
            capsys.readouterr()
            code = await asyncio.to_thread(_exit_code, list(argv))
            captured = capsys.readouterr()
            return CliResult(code, captured.out, captured.err)

        return run

    return bind


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse and configuration errors leave this way
        return exc.code if isinstance(exc.code, int) else 1


def env_for(settings: Settings) -> dict[str, str]:
    """A subprocess's whole environment for ``settings``."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")} | settings_env(settings)


def integration(account_id: int, *, status: IntegrationStatus = IntegrationStatus.CONNECTED) -> Integration:
    """An account's row as the OAuth flow leaves it (no provider involved)."""
    return Integration(
        account_id=account_id,
        subdomain=f"acme{account_id}",
        kommo_host=f"acme{account_id}.kommo.com" if status == IntegrationStatus.CONNECTED else None,
        client_id=f"client-{account_id}",
        client_secret="s3cret-client-secret",
        redirect_uri="http://127.0.0.1:1/auth/callback",
        webhook_token_hash=hash_token(f"token-{account_id}"),
        webhook_token=f"token-{account_id}",
        status=status,
    )


async def add_connected(
    session: AsyncSession, account_id: int, *, token_expires_at: datetime | None = None
) -> Integration:
    """A connected account: its integration, Kommo token and Unisender key (the integration flushed first:
    the others reference it and the models declare no relationship to order the inserts)."""
    row = integration(account_id)
    session.add(row)
    await session.flush()
    session.add_all(
        [
            KommoToken(
                account_id=account_id,
                access_token="access-token-value",
                refresh_token="refresh-token-value",
                expires_at=token_expires_at or utcnow() + timedelta(hours=20),
            ),
            EspAccount(account_id=account_id, api_key="unisender-api-key-value", list_id=77),
        ]
    )
    await session.flush()
    return row
