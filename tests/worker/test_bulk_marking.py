"""Which jobs are bulk work for the provider budgets (their calls wait behind every live caller's): the
worker's wiring, checked by running each registered job with its body replaced by a probe."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import Settings
from app.connectors.ratelimit import is_bulk
from app.worker import settings as worker_settings
from app.worker import tasks

LIVE = {"ping", "process_events", "flush_outbox", "tag_unsubscribes", "crm_writes", "signup_contacts"}
BULK = {"full_sync", "activity_notes", "reconcile_two_way", "refresh_campaigns"}
CRON_BULK = {"reconcile"}


async def _probe(ctx: dict[str, Any], *args: Any) -> bool:
    return is_bulk()


async def test_each_job_runs_as_live_or_bulk_work(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    for name in LIVE | BULK | CRON_BULK | {"sweep", "refresh_tokens", "campaigns_tick"}:
        monkeypatch.setattr(tasks, name, _probe)
    seen = {f.name: await f.coroutine({}) for f in worker_settings.functions(settings)}
    assert seen == {**dict.fromkeys(LIVE, False), **dict.fromkeys(BULK, True)}
    crons = {c.name: await c.coroutine({}) for c in worker_settings.cron_jobs(settings)}
    assert crons == {"sweep": False, "reconcile": True, "refresh_tokens": False, "campaigns": False}
