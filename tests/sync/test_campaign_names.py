"""Campaign names for the notes (``campaigns.names_of_unknown``), read from the Unisender sandbox: a lookup that
failed for a reason that may pass is asked again by the next job; a campaign the platform does not list is
not looked up again for a while."""

from __future__ import annotations

from app.context import build_context
from app.sync import campaigns
from tests.conftest import Stack
from tests.support.e2e import connect_account


async def test_a_lookup_that_failed_for_a_passing_reason_is_asked_again(stack: Stack) -> None:
    account = await connect_account(stack, contacts=3)
    base = f"/_sandbox/accounts/{account.api_key}"
    r = await stack.unisender.post(
        f"{base}/campaigns", json={"list_id": account.list_id, "subject": "Winter sale", "duration_s": 0.1}
    )
    assert r.status_code == 200, r.text
    campaign_id = int(r.json()["campaign_id"])
    fault = {"rate": 1.0, "kinds": ["retry_later"], "method": "getCampaigns", "count": 1}
    r = await stack.unisender.post("/_sandbox/faults", json=fault)
    assert r.status_code == 200, r.text
    pc = await build_context(stack.settings)
    try:
        assert await campaigns.names_of_unknown(pc, account.account_id, [campaign_id]) == {}
        assert (await stack.unisender.get("/_sandbox/faults")).json()["faults"]["injected"] == {
            "retry_later": 1
        }
        # The platform answers again: the next job gets the name, not "campaign #id" for ten minutes.
        named = await campaigns.names_of_unknown(pc, account.account_id, [campaign_id])
        assert named == {campaign_id: "Winter sale"}
        # An id the platform does not list is remembered as missing: no second read of the campaign list.
        unknown = campaign_id + 1000
        assert await campaigns.names_of_unknown(pc, account.account_id, [unknown]) == {}
        calls = (await stack.unisender.get("/_sandbox/stats")).json()["calls"]
        assert await campaigns.names_of_unknown(pc, account.account_id, [unknown]) == {}
        assert (await stack.unisender.get("/_sandbox/stats")).json()["calls"] == calls
    finally:
        await pc.close()
