"""Webhook endpoints refuse bad input with the error envelope and store nothing."""

from __future__ import annotations

import httpx
import pytest

from app.context import tls_context
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


async def test_fast_path_keeps_the_edge_behaviour(stack: Stack) -> None:
    """The Kommo webhook is served before the router: request ids, metrics and the body cap still apply."""
    account = await connect_account(stack, subdomain="acme")
    url = f"/webhooks/kommo/{account.account_id}"
    body = GOOD.format(acc=account.account_id).encode()
    r = await stack.api.post(
        url, params={"token": account.webhook_token}, content=body, headers={"X-Request-ID": "req-42"}
    )
    assert (r.status_code, r.json(), r.headers["x-request-id"]) == (200, {"status": "accepted"}, "req-42")
    assert r.headers["content-type"] == "application/json"
    metrics = (await stack.api.get("/metrics")).text
    assert 'route="/webhooks/kommo/{account_id:int}"' in metrics
    big = b"a=" + b"x" * (stack.settings.max_body_bytes + 1)
    r = await stack.api.post(url, params={"token": account.webhook_token}, content=big)
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
    # Not digits (also non-ASCII digits): not the fast path's; the router answers as for any unknown path.
    for path in ("/webhooks/kommo/abc", "/webhooks/kommo/١٢", "/webhooks/kommo/"):
        r = await stack.api.post(path, params={"token": account.webhook_token}, content=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"] == "not_found"
    r = await stack.api.get(url, params={"token": account.webhook_token})
    assert r.status_code == 405
    assert await _stored(stack) == 1


async def test_documented_route_answers_like_the_fast_path(stack: Stack) -> None:
    """Without the fast path the FastAPI route (the one in the OpenAPI document) serves the same answers."""
    from app.api.webhooks import KommoWebhookFastPath
    from app.main import create_app
    from app.servers import serve_in_background

    account = await connect_account(stack, subdomain="acme")
    app = create_app(stack.settings)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not KommoWebhookFastPath]
    body = GOOD.format(acc=account.account_id).encode()
    async with (
        serve_in_background(app) as base,
        httpx.AsyncClient(verify=tls_context(), base_url=base) as client,
    ):
        url = f"/webhooks/kommo/{account.account_id}"
        answers = [
            await client.post(url, params={"token": account.webhook_token}, content=body),
            await client.post(url, params={"token": account.webhook_token}, content=body),
            await client.post(url, params={"token": "wrong"}, content=body),
        ]
    assert [(r.status_code, r.json()) for r in answers] == [
        (200, {"status": "accepted"}),
        (200, {"status": "duplicate"}),
        (401, {"error": "invalid_token", "detail": "Missing or invalid webhook token."}),
    ]
    assert await _stored(stack) == 1
