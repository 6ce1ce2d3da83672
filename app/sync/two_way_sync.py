"""The export reconcile of two-way fields: the changes made in the email platform that its hook did not bring
(Unisender stops a hook after a day of failed deliveries), found by exporting the fields and comparing them
with what we last pushed. Every difference is a platform change at the moment the export started, put
through ``app.sync.two_way.apply_change`` like a hook's."""

from __future__ import annotations

import structlog

from app.context import ProcessContext
from app.db.base import utcnow
from app.db.locks import account_lock
from app.sync import crm_writes_repo, providers, reverse, spec_repo, two_way
from app.sync.two_way import DataChange, Outcome

log = structlog.get_logger(__name__)

MAX_LISTS = 5  # exports per run (async/exportContacts allows 20 a minute per key, shared with the account)
MAX_CHANGES = 2_000  # changes applied per run; the next run finds the rest


async def reconcile_two_way(pc: ProcessContext, account_id: int) -> dict[str, int]:
    """Export the account's two-way fields from its mapped lists and apply every difference; per outcome,
    how many changes were found (nothing when its spec carries no field back)."""
    async with pc.db.session_scope() as session:
        _, spec = await spec_repo.current_spec(session, account_id)
        rules = two_way.back_rules(spec)
        if not rules:
            return {}
        client, esp = await providers.esp_client(session, pc, account_id)
    list_ids = [esp.list_id if rule.base else rule.list_id for rule in spec.lists]
    wanted = list(dict.fromkeys(i for i in list_ids if i is not None))[:MAX_LISTS]
    started = utcnow()
    held: dict[str, dict[str, str]] = {}
    for list_id in wanted:
        for email, values in (await client.export_field_values(list_id, sorted(rules))).items():
            held.setdefault(email, values)
    counts: dict[str, int] = {}
    async with pc.db.session_scope() as session:
        await account_lock(session, account_id)
        pushed = await crm_writes_repo.pushed_before(session, account_id, sorted(held), started)
        changes = [
            DataChange(email, target, value, started)
            for email, fields in pushed.items()
            for target, value in held[email].items()
            if not reverse.same(rules[target].target_type, str(fields.get(target, "")), value)
        ]
        for change in changes[:MAX_CHANGES]:
            outcome: Outcome = await two_way.apply_change(session, account_id, change, spec)
            counts[outcome.value] = counts.get(outcome.value, 0) + 1
    if changes:
        log.info("two_way.reconciled", account_id=account_id, addresses=len(held), **counts)
    return counts
