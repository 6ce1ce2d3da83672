"""``contactsync dead-letters``, run in-process (``app.cli.main``, in a thread: it runs its own event loop)
against the test's PostgreSQL and Redis: a table when listing, counts when acting, a refusal exits 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.cli import main
from app.config import Settings
from tests.conftest import raw_sql
from tests.deadletters.support import ACCOUNT, OTHER, Seeded, register, seed, states

Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def run(
    fresh_env: None, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    assert settings.database_url
    assert settings.redis_url
    assert settings.secret_keys
    env = {
        "CONTACTSYNC_ENV": settings.env.value,
        "CONTACTSYNC_DATABASE_URL": settings.database_url,
        "CONTACTSYNC_REDIS_URL": settings.redis_url,
        "CONTACTSYNC_SECRET_KEYS": settings.secret_keys.get_secret_value(),
        "CONTACTSYNC_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
        "CONTACTSYNC_LOG_FORMAT": "json",
    }

    def call(argv: list[str]) -> int:
        try:
            return main(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1

    async def go(*argv: str) -> tuple[int, str, str]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = await asyncio.to_thread(call, ["dead-letters", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return go


@pytest.fixture
async def seeded(api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Any) -> Seeded:
    await register(api, admin_headers, ACCOUNT)
    await register(api, admin_headers, OTHER)
    return await seed(settings.database_url)


async def test_lists_a_table_newest_first(run: Run, seeded: Seeded) -> None:
    code, out, err = await run(str(ACCOUNT))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "FAILED", "AT", "TRIES", "SUBJECT", "REASON"]
    assert [line.split()[0] for line in lines[1:-1]] == seeded.listed()
    rejected = next(line for line in lines if line.startswith(f"outbox:{seeded.outbox_rejected} "))
    assert "rejected" in rejected
    assert "info@example.com" in rejected
    assert 'refused by the email platform: [role_address] Role address "info@example.com"' in rejected
    assert lines[-1] == "page 1 of 1: 7 dead letters (event 2, outbox 3, crm_write 1, signup 1)"
    code, out, _ = await run(str(ACCOUNT), "--kind", "event", "--per-page", "1", "--page", "2")
    assert code == 0
    assert out.splitlines()[1].split()[0] == f"event:{seeded.event_failed}"
    assert out.splitlines()[-1].startswith("page 2 of 2: 2 dead letters")


async def test_replay_and_discard_print_counts_and_are_recorded_as_cli(
    run: Run, seeded: Seeded, settings: Settings
) -> None:
    url = settings.database_url
    assert url
    code, out, err = await run(str(ACCOUNT), "--replay", "--id", f"crm_write:{seeded.crm_write_failed}")
    assert code == 0, err
    assert out.splitlines()[0] == f"replayed 1, skipped 0 (no longer dead) for account {ACCOUNT}"
    code, out, err = await run(
        str(ACCOUNT), "--replay", "--kind", "signup", "--id", str(seeded.signup_failed), "--actor", "alice"
    )
    assert code == 0, err
    code, out, err = await run(
        str(ACCOUNT),
        "--replay",
        "--id",
        f"crm_write:{seeded.crm_write_failed}",
        f"signup:{seeded.signup_failed}",
    )
    assert out.splitlines()[0] == f"replayed 0, skipped 2 (no longer dead) for account {ACCOUNT}"
    code, out, err = await run(str(ACCOUNT), "--discard", "--all", "--kind", "event")
    assert code == 0, err
    assert out.splitlines()[:2] == [
        f"discarded 2, skipped 0 (no longer dead) for account {ACCOUNT}",
        "  event: discarded 2, skipped 0",
    ]
    now = await states(url)
    assert now[f"event:{seeded.event_failed}"] == now[f"event:{seeded.event_unrecognised}"] == "discarded"
    assert now[f"event:{seeded.other_event}"] == "failed"  # another account's
    rows = await raw_sql(url, "SELECT actor, operation, affected FROM dead_letter_action ORDER BY id")
    assert [(r["actor"], r["operation"], r["affected"]) for r in rows] == [
        ("cli", "replay", 1),
        ("alice", "replay", 1),
        ("cli", "replay", 0),
        ("cli", "discard", 2),
    ]


async def test_refusals_exit_1_and_change_nothing(run: Run, seeded: Seeded, settings: Settings) -> None:
    assert settings.database_url
    before = await states(settings.database_url)
    code, _, err = await run(str(ACCOUNT), "--replay", "--id", f"event:{seeded.other_event}")
    assert code == 1
    assert f"Account {ACCOUNT} has no event:{seeded.other_event}" in err
    code, _, err = await run("99999")
    assert (code, "Account 99999 is not registered" in err) == (1, True)
    code, _, err = await run(str(ACCOUNT), "--replay")
    assert (code, "need --all or --id" in err) == (2, True)
    code, _, err = await run(str(ACCOUNT), "--all")
    assert code == 2
    code, _, err = await run(str(ACCOUNT), "--discard", "--id", "nonsense")
    assert (code, "Invalid dead-letter id 'nonsense'" in err) == (1, True)
    assert await states(settings.database_url) == before
    assert await raw_sql(settings.database_url, "SELECT 1 FROM dead_letter_action") == []
