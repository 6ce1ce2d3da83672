"""The sweeper exports how many dead letters wait for an operator, per kind (``contactsync_dead_letters``), so
an alert can fire on them; replayed or discarded rows no longer count."""

from __future__ import annotations

from prometheus_client import REGISTRY

from app.context import ProcessContext
from app.worker.tasks import sweep
from tests.conftest import raw_sql

COLUMNS = "account_id, source, dedupe_key, body, status, attempts, last_error, handled_at, received_at"


def _gauge(kind: str) -> float | None:
    return REGISTRY.get_sample_value("contactsync_dead_letters", {"kind": kind})


async def test_the_sweep_counts_dead_letters_per_kind(ctx: ProcessContext) -> None:
    assert ctx.settings.database_url
    for key, status in (("a", "failed"), ("b", "unrecognised"), ("c", "discarded"), ("d", "done")):
        await raw_sql(
            ctx.settings.database_url,
            f"INSERT INTO webhook_event ({COLUMNS}) VALUES (7, 'kommo', $1, '{{}}', $2, 3, 'boom', now(), now())",
            key,
            status,
        )
    await sweep({"process": ctx})
    assert _gauge("event") == 2.0  # failed and unrecognised; not discarded, not done
    assert _gauge("outbox") == 0.0
    assert _gauge("crm_write") == 0.0
    assert _gauge("signup") == 0.0

    await raw_sql(
        ctx.settings.database_url, "UPDATE webhook_event SET status = 'discarded' WHERE dedupe_key = 'a'"
    )
    await sweep({"process": ctx})
    assert _gauge("event") == 1.0
