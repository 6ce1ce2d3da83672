"""A push whose outcome is unknown (a 5xx, a timeout: the platform may have applied it) leaves nothing held as
pushed: when the contact then goes back to what the platform held before it, that state is pushed again
rather than settled as already there, and the mirror ends exact."""

from __future__ import annotations

from app.context import build_context
from app.sync.events import process_kommo_events
from app.sync.mapping import OUTCOME_UNKNOWN
from app.sync.outbox import flush_account
from tests.conftest import Stack, raw_sql
from tests.support.e2e import connect_account, create_contact, unisender_contacts


async def test_the_state_before_a_push_of_unknown_outcome_is_pushed_again(stack: Stack) -> None:
    account = await connect_account(stack)
    url = stack.settings.database_url
    assert url
    base = f"/_sandbox/accounts/{account.subdomain}/contacts"
    pc = await build_context(stack.settings)  # no worker: each step below runs once, in order

    async def events() -> None:
        r = await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": 10})
        assert r.status_code == 200, r.text
        await process_kommo_events(pc, account.account_id)

    async def pushed_hash() -> str | None:
        [row] = await raw_sql(url, "SELECT pushed_hash FROM outbox WHERE email = 'ann@example.com'")
        value: str | None = row["pushed_hash"]
        return value

    try:
        ann = await create_contact(stack, account, "Ann", "ann@example.com")
        await events()
        await flush_account(pc, account.account_id)
        assert (await unisender_contacts(stack, account))["ann@example.com"]["fields"]["Name"] == "Ann"

        fault = {"rate": 1.0, "kinds": ["http_503"], "count": 1, "method": "importContacts"}
        r = await stack.unisender.post("/_sandbox/faults", json=fault)
        assert r.status_code == 200, r.text
        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Bob"}])
        assert r.status_code == 200, r.text
        await events()
        result = await flush_account(pc, account.account_id)
        assert result.retry_in is not None  # the 503: the rows wait for a retry
        assert await pushed_hash() == OUTCOME_UNKNOWN

        r = await stack.kommo.patch(base, json=[{"id": ann, "name": "Ann"}])
        assert r.status_code == 200, r.text
        await events()
        [row] = await raw_sql(url, "SELECT status, payload FROM outbox WHERE email = 'ann@example.com'")
        assert row["status"] == "pending"  # pushed again, not settled as held
        await raw_sql(url, "UPDATE outbox SET next_attempt_at = now()")  # the retry is due now
        await flush_account(pc, account.account_id)
        assert (await unisender_contacts(stack, account))["ann@example.com"]["fields"]["Name"] == "Ann"
        assert await pushed_hash() not in (None, OUTCOME_UNKNOWN)
    finally:
        await pc.close()
