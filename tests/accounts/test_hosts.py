"""Account hosts: an amoCRM (amocrm.ru) account is called on its own host for everything, taken from the OAuth
redirect's referer; Kommo's widget-install redirect connects it; webhooks naming another account are refused."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from app.accounts.kommo import kommo_client_for, refresh_kommo_token
from tests.accounts.conftest import install, kommo_stats
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import connect_account, unisender_contacts, wait_for

HOST = "etesttask.amocrm.ru"


async def _integration(stack: Stack) -> dict[str, object]:
    rows = await raw_sql(
        stack.settings.database_url or "", "SELECT subdomain, kommo_host, status FROM integration"
    )
    return dict(rows[0])


async def test_amocrm_ru_account_is_called_on_its_own_host_end_to_end(stack: Stack) -> None:
    account = await connect_account(stack, subdomain="etesttask", domain="amocrm.ru")
    assert await _integration(stack) == {"subdomain": "etesttask", "kommo_host": HOST, "status": "connected"}
    async with running_worker(stack.settings) as pc:
        r = await stack.kommo.post(
            "/_sandbox/accounts/etesttask/contacts",
            json=[
                {
                    "name": "Ann",
                    "custom_fields_values": [
                        {"field_code": "EMAIL", "values": [{"value": "ann@example.org"}]}
                    ],
                }
            ],
        )
        assert r.status_code == 200, r.text
        contact_id = r.json()["_embedded"]["contacts"][0]["id"]

        async def mirrored() -> bool:
            return "ann@example.org" in await unisender_contacts(stack, account)

        await wait_for(mirrored, within=20)
        assert await refresh_kommo_token(pc, account.account_id, force=True)
        client = await kommo_client_for(pc, account.account_id)
        assert [c.id for c in await client.get_contacts([contact_id])] == [contact_id]

    stats = await kommo_stats(stack)
    # Every call, token endpoint included, went to the amocrm.ru host; none to a kommo.com one.
    assert set(stats["by_host"]) == {HOST}, stats["by_host"]
    calls = stats["by_host"][HOST]
    assert calls["POST /oauth2/access_token"] == 2  # the code exchange and the refresh
    assert calls["GET /api/v4/account"] == 1
    assert calls["POST /api/v4/webhooks"] == 1
    assert calls["GET /api/v4/contacts"] >= 1
    # Kommo's deliveries name the account's host, and we accepted them.
    deliveries = (await stack.kommo.get("/_sandbox/deliveries")).json()
    assert deliveries
    assert all(d["status"] == 200 for d in deliveries), deliveries
    assert all(
        f"account%5B_links%5D%5Bself%5D={quote('https://' + HOST, safe='')}" in d["body"] for d in deliveries
    )


async def test_widget_install_redirect_connects_the_account(stack: Stack) -> None:
    await stack.kommo.post("/_sandbox/accounts", json={"subdomain": "etesttask", "domain": "amocrm.ru"})
    inst = await install(stack, subdomain="etesttask", create_account=False)
    started = time.monotonic()
    r = await stack.kommo.post(
        "/_sandbox/install_widget", json={"client_id": inst.client_id, "subdomain": "etesttask"}
    )
    assert r.status_code == 200, r.text
    sent = r.json()
    # The redirect as Kommo sends it: no state, the account host as referer, platform=1 for amocrm.ru.
    query = parse_qs(urlsplit(sent["url"]).query)
    assert set(query) == {"code", "referer", "platform", "client_id", "from_widget"}
    assert (query["referer"], query["platform"], query["from_widget"]) == ([HOST], ["1"], ["1"])
    assert sent["status"] == 200, sent
    assert sent["elapsed_ms"] < 3000  # Kommo waits 3 s, once
    assert time.monotonic() - started < 3
    assert await _integration(stack) == {"subdomain": "etesttask", "kommo_host": HOST, "status": "connected"}
    hooks = (await stack.kommo.get("/_sandbox/accounts/etesttask/webhooks")).json()
    assert [h["destination"] for h in hooks] == [inst.webhook_url]
    assert set((await kommo_stats(stack))["by_host"]) == {HOST}

    # The same redirect for an integration we do not know: refused, nothing stored, no token call.
    calls = (await kommo_stats(stack))["calls"]["POST /oauth2/access_token"]
    r = await stack.kommo.post("/_sandbox/integrations", json={"redirect_uri": inst.redirect_uri})
    stranger = r.json()["client_id"]
    r = await stack.kommo.post(
        "/_sandbox/install_widget", json={"client_id": stranger, "subdomain": "etesttask"}
    )
    assert r.json()["status"] == 400
    assert (await kommo_stats(stack))["calls"]["POST /oauth2/access_token"] == calls
    rows = await raw_sql(stack.settings.database_url or "", "SELECT count(*) AS n FROM kommo_token")
    assert rows[0]["n"] == 1


BODY = (
    "account[subdomain]={sub}&account[id]={acc}&account[_links][self]={link}"
    "&contacts[update][0][id]=5&contacts[update][0][name]=Ann"
    "&contacts[update][0][updated_at]={ts}&contacts[update][0][last_modified]={ts}"
)


@pytest.mark.parametrize(
    ("sub", "link", "status"),
    [
        ("other", "https://acme.kommo.com", 400),  # another subdomain
        ("acme", "https://other.kommo.com", 400),  # another account's host
        ("acme", "https://acme.amocrm.ru", 400),  # the same name on the other platform
        ("acme", "https://acme.kommo.com.evil.com", 400),
        ("acme", "not a link", 400),
        ("acme", "https://acme.kommo.com", 200),
        ("ACME", "https://acme.amocrm.com", 200),  # Kommo's former domain: the same account
    ],
)
async def test_webhook_naming_another_account_is_refused_and_not_stored(
    stack: Stack, sub: str, link: str, status: int
) -> None:
    account = await connect_account(stack, subdomain="acme")
    body = BODY.format(sub=sub, acc=account.account_id, link=quote(link, safe=":/"), ts=int(time.time()))
    r = await stack.api.post(
        f"/webhooks/kommo/{account.account_id}",
        params={"token": account.webhook_token},
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == status, r.text
    rows = await raw_sql(stack.settings.database_url or "", "SELECT count(*) AS n FROM webhook_event")
    if status == 400:
        assert r.json()["error"] == "account_mismatch"
        assert rows[0]["n"] == 0
    else:
        assert rows[0]["n"] == 1
