"""Webhook endpoints refuse bad input with the error envelope and store nothing."""

from __future__ import annotations

import pytest

from tests.conftest import Stack, raw_sql
from tests.support.e2e import connect_account

GOOD = (
    "account[id]={acc}&account[subdomain]=acme&contacts[update][0][id]=5&contacts[update][0][name]=Ann"
    "&contacts[update][0][updated_at]=1700000000&contacts[update][0][last_modified]=1700000000"
)


async def _stored(stack: Stack) -> int:
    assert stack.settings.database_url
    return int(
        (await raw_sql(stack.settings.database_url, "SELECT count(*) AS n FROM webhook_event"))[0]["n"]
    )


@pytest.mark.parametrize(
    ("token_kind", "body", "status", "code"),
    [
        ("missing", GOOD, 401, "invalid_token"),
        ("wrong", GOOD, 401, "invalid_token"),
        ("good", "contacts[update][x][id]=5", 400, "invalid_webhook_body"),
        (
            "good",
            "account[id]=999&contacts[update][0][id]=5&contacts[update][0][updated_at]=1",
            400,
            "account_mismatch",
        ),
    ],
)
async def test_bad_kommo_webhooks_are_refused_and_store_nothing(
    stack: Stack, token_kind: str, body: str, status: int, code: str
) -> None:
    account = await connect_account(stack, subdomain="acme")
    params = {"good": {"token": account.webhook_token}, "wrong": {"token": "x" * 43}, "missing": {}}[
        token_kind
    ]
    r = await stack.api.post(
        f"/webhooks/kommo/{account.account_id}",
        params=params,
        content=body.format(acc=account.account_id).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert r.json()["detail"]
    assert await _stored(stack) == 0


async def test_good_webhook_is_stored_once_and_duplicates_are_recognised(stack: Stack) -> None:
    account = await connect_account(stack, subdomain="acme")
    body = GOOD.format(acc=account.account_id).encode()
    url = f"/webhooks/kommo/{account.account_id}"
    first = await stack.api.post(url, params={"token": account.webhook_token}, content=body)
    second = await stack.api.post(url, params={"token": account.webhook_token}, content=body)
    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")
    assert await _stored(stack) == 1


async def test_unknown_account_gets_the_same_401_as_a_wrong_token(stack: Stack) -> None:
    r = await stack.api.post(
        "/webhooks/kommo/123456", params={"token": "anything"}, content=b"account[id]=123456"
    )
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_token"
