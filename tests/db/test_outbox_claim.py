"""A flush's claim reads the account's pending rows only, however many rows the outbox holds already pushed.

The claim asks for an account's oldest due rows; with only the (status, next_attempt_at) index, PostgreSQL
answered it by walking the whole outbox in id order and dropping every pushed row: a cost that grew with every
address any account had ever pushed (29 ms per claim at 100,000 rows).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg as asyncpg_driver
from sqlalchemy.dialects.postgresql import asyncpg

from app.context import ProcessContext
from app.sync import outbox_repo
from tests.conftest import raw_sql

_FILL = """
INSERT INTO outbox (account_id, email, payload, payload_hash, status, attempts, next_attempt_at, created_at,
                    updated_at, bulk)
SELECT 1 + g % 3, 'user' || g || '@example.com', '{"fields": {"Name": "x"}}', md5(g::text),
       CASE WHEN g > $1 THEN 'pending' ELSE 'pushed' END, 0, now() - interval '1 second', now(), now(), g % 2 = 0
FROM generate_series(1, $2) g
"""


def _sql_value(value: object) -> str:
    if isinstance(value, datetime):
        return "now()"
    return str(value) if isinstance(value, int) else f"'{value}'"


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_a_claim_reads_only_the_pending_rows_of_its_account(ctx: ProcessContext, clean_db: str) -> None:
    await raw_sql(clean_db, _FILL, 20_000, 20_300)
    await raw_sql(clean_db, "ANALYZE outbox")
    async with ctx.db.session_scope() as session:
        claimed = await outbox_repo.claim_due(session, 1, 500)
    # Account 1's pending rows: g in 20,001..20,300 with g % 3 == 0, live ones (odd g) before bulk ones.
    live = [r for r in claimed if not r.bulk]
    assert len(claimed) == 100
    assert len(live) == 50
    assert [r.id for r in claimed] == sorted(r.id for r in live) + sorted(r.id for r in claimed if r.bulk)

    # The statement as the driver prepares it, planned as PostgreSQL plans a prepared statement it reuses
    # (a generic plan: bound values unknown).
    compiled = outbox_repo.due_rows(1, False, 500).compile(
        dialect=asyncpg.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"render_postcompile": True},
    )
    conn = await asyncpg_driver.connect(clean_db.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE claim AS {compiled.string}")
        args = ", ".join(_sql_value(compiled.params[name]) for name in compiled.positiontup or ())
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim({args})")
    finally:
        await conn.close()
    nodes = _nodes(json.loads(plan)[0]["Plan"])
    assert {n["Index Name"] for n in nodes if "Index Name" in n} == {"ix_outbox_pending_account_id_bulk_id"}
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    # Rows read and dropped: none of the 20,000 pushed rows, at most the account's other pending ones.
    assert sum(n.get("Rows Removed by Filter", 0) for n in nodes) <= 300
