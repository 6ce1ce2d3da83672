"""The Kommo sandbox answers like Kommo API v4 (as its public docs describe it), over loopback HTTP.

Raw httpx only: nothing from app.connectors, so the sandbox is checked against the docs, not against our client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import Response

from app.context import tls_context
from app.servers import serve_in_background
from sandbox.kommo import KommoSandboxConfig, KommoSandboxState, create_kommo_sandbox, seed_contacts
from sandbox.kommo.store import Contact

REDIRECT = "https://integration.example.com/oauth/callback"
PROBLEM = "application/problem+json"
HAL = "application/hal+json"


@dataclass
class Sandbox:
    url: str
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def state(self) -> KommoSandboxState:
        state: KommoSandboxState = self.app.state.kommo
        return state

    async def control(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.http.request(method, f"/_sandbox{path}", json=body)
        assert resp.status_code == status, resp.text
        return resp.json()


@dataclass
class Install:
    """An integration installed in one account, with a live token pair."""

    sub: str
    client_id: str
    client_secret: str
    account_id: int
    access: str
    refresh: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    # Tests that are not about the rate limit switch it off so they cannot trip over it.
    config = KommoSandboxConfig(rate_limit_rps=None, webhook_retry_delays=(0.05, 0.05))
    app = create_kommo_sandbox(config)
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), base_url=url, timeout=10) as http,
    ):
        yield Sandbox(url, app, http)


async def install(sb: Sandbox, sub: str = "acme", hook: str | None = None) -> Install:
    integ = await sb.control(
        "POST", "/integrations", {"redirect_uri": REDIRECT, "disable_hook_url": hook}, 201
    )
    if sub not in sb.state.accounts:
        await sb.control("POST", "/accounts", {"subdomain": sub, "name": f"{sub} ltda"}, 201)
    auth = await sb.control("POST", "/authorize", {"client_id": integ["client_id"], "subdomain": sub})
    tokens = await exchange_code(sb, sub, integ, auth["code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return Install(
        sub,
        integ["client_id"],
        integ["client_secret"],
        sb.state.accounts[sub].id,
        body["access_token"],
        body["refresh_token"],
    )


async def exchange_code(
    sb: Sandbox, sub: str, integ: dict[str, Any], code: str, *, form: bool = False
) -> httpx.Response:
    payload = {
        "client_id": integ["client_id"],
        "client_secret": integ["client_secret"],
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
    }
    if form:
        return await sb.http.post(f"/{sub}/oauth2/access_token", data=payload)
    return await sb.http.post(f"/{sub}/oauth2/access_token", json=payload)


async def refresh(sb: Sandbox, inst: Install, token: str) -> httpx.Response:
    return await sb.http.post(
        f"/{inst.sub}/oauth2/access_token",
        json={
            "client_id": inst.client_id,
            "client_secret": inst.client_secret,
            "grant_type": "refresh_token",
            "refresh_token": token,
            "redirect_uri": REDIRECT,
        },
    )


def jwt_claims(token: str) -> dict[str, Any]:
    header, claims, signature = token.split(".")
    assert signature
    json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return decoded


def assert_problem(resp: httpx.Response, status: int, body: dict[str, Any]) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json() == body


UNAUTHORIZED = {
    "title": "Unauthorized",
    "type": "https://httpstatus.es/401",
    "status": 401,
    "detail": "Invalid user name or password",
}
REVOKED = {
    "hint": "Token has been revoked",
    "title": "Некорректный запрос",
    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
    "status": 401,
    "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
}


# --- webhook receiver ---------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[tuple[str, dict[str, str], bytes]] = field(
        default_factory=list
    )  # (method+query, headers, body)
    fail_next: int = 0

    def forms(self) -> list[list[tuple[str, str]]]:
        return [parse_qsl(body.decode(), keep_blank_values=True) for _m, _h, body in self.requests]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = FastAPI()
    rec = Receiver("")

    @app.api_route("/hook", methods=["GET", "POST"])
    async def hook(request: Request) -> Response:
        rec.requests.append(
            (f"{request.method} {request.url.query}", dict(request.headers), await request.body())
        )
        if rec.fail_next > 0:
            rec.fail_next -= 1
            return Response("nope", status_code=500)
        return Response("ok")

    async with serve_in_background(app) as url:
        rec.url = f"{url}/hook"
        yield rec


async def subscribe(
    sb: Sandbox, inst: Install, url: str, settings: list[str] | None = None
) -> dict[str, Any]:
    resp = await sb.http.post(
        f"/{inst.sub}/api/v4/webhooks",
        headers=inst.auth,
        json={
            "destination": url,
            "settings": settings or ["add_contact", "update_contact", "delete_contact", "restore_contact"],
            "sort": 10,
        },
    )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def drain(sb: Sandbox) -> None:
    result = await sb.control("POST", "/deliveries/drain", {"timeout": 10})
    assert result["drained"], result


def contact_with_phone_and_email(name: str = "Иван Петров") -> dict[str, Any]:
    return {
        "name": name,
        "custom_fields_values": [
            {"field_code": "PHONE", "values": [{"value": "+79123456789", "enum_code": "MOB"}]},
            {"field_code": "EMAIL", "values": [{"value": "ivan@example.com", "enum_code": "WORK"}]},
        ],
    }


# --- OAuth ------------------------------------------------------------------------------------------------------


async def test_oauth_happy_path_via_consent_page(sandbox: Sandbox) -> None:
    integ = await sandbox.control("POST", "/integrations", {"redirect_uri": REDIRECT, "name": "Sync"}, 201)
    acct = await sandbox.control("POST", "/accounts", {"subdomain": "acme", "name": "Acme"}, 201)
    page = await sandbox.http.get(
        "/oauth", params={"client_id": integ["client_id"], "state": "csrf1", "mode": "post_message"}
    )
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert 'value="allow"' in page.text
    assert 'value="deny"' in page.text
    assert "acme.kommo.com" in page.text

    allow = await sandbox.http.post(
        "/oauth/decision",
        data={"client_id": integ["client_id"], "state": "csrf1", "subdomain": "acme", "decision": "allow"},
    )
    assert allow.status_code == 302
    location = urlsplit(allow.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    q = parse_qs(location.query)
    assert set(q) == {"code", "state", "referer", "client_id", "platform"}
    assert q["state"] == ["csrf1"]
    assert q["referer"] == ["acme.kommo.com"]
    assert q["platform"] == ["2"]
    assert q["client_id"] == [integ["client_id"]]

    resp = await exchange_code(sandbox, "acme", integ, q["code"][0], form=True)  # form body accepted
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert set(tokens) == {"token_type", "expires_in", "server_time", "access_token", "refresh_token"}
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 86400
    claims = jwt_claims(tokens["access_token"])
    assert claims["aud"] == integ["client_id"]
    assert claims["account_id"] == acct["id"]
    assert claims["exp"] == claims["iat"] + 86400 == tokens["server_time"] + 86400
    assert claims["base_domain"] == "kommo.com"

    me = await sandbox.http.get(
        "/acme/api/v4/account", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.headers["content-type"] == HAL
    assert me.headers["x-request-id"]
    assert me.json()["id"] == acct["id"]
    assert me.json()["subdomain"] == "acme"

    deny = await sandbox.http.post(
        "/oauth/decision", data={"client_id": integ["client_id"], "subdomain": "acme", "decision": "deny"}
    )
    assert parse_qs(urlsplit(deny.headers["location"]).query) == {
        "error": ["access_denied"],
        "client_id": [integ["client_id"]],
    }
    no_state = await sandbox.control(
        "POST", "/authorize", {"client_id": integ["client_id"], "subdomain": "acme"}
    )
    assert "state" not in parse_qs(urlsplit(no_state["redirect_url"]).query)


async def test_code_is_single_use_and_expires(sandbox: Sandbox) -> None:
    integ = await sandbox.control("POST", "/integrations", {"redirect_uri": REDIRECT}, 201)
    await sandbox.control("POST", "/accounts", {"subdomain": "acme"}, 201)
    code = (
        await sandbox.control("POST", "/authorize", {"client_id": integ["client_id"], "subdomain": "acme"})
    )["code"]
    assert (await exchange_code(sandbox, "acme", integ, code)).status_code == 200
    again = await exchange_code(sandbox, "acme", integ, code)
    assert again.status_code == 400
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["hint"] == "Authorization code has been revoked"
    assert again.json()["type"] == "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"

    unknown = await exchange_code(sandbox, "acme", integ, "def50200deadbeef")
    assert unknown.status_code == 400

    code = (
        await sandbox.control("POST", "/authorize", {"client_id": integ["client_id"], "subdomain": "acme"})
    )["code"]
    await sandbox.control("POST", "/clock/advance", {"seconds": 20 * 60 + 1})
    expired = await exchange_code(sandbox, "acme", integ, code)
    assert expired.status_code == 400
    assert expired.json()["hint"] == "Authorization code has expired"

    code = (
        await sandbox.control("POST", "/authorize", {"client_id": integ["client_id"], "subdomain": "acme"})
    )["code"]
    bad_secret = await exchange_code(sandbox, "acme", {**integ, "client_secret": "wrong"}, code)
    assert bad_secret.status_code == 401
    assert bad_secret.json()["title"] == "Некорректный клиент"
    bad_redirect = await sandbox.http.post(
        "/acme/oauth2/access_token",
        json={
            "client_id": integ["client_id"],
            "client_secret": integ["client_secret"],
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://evil.example.com/",
        },
    )
    assert bad_redirect.status_code == 400


async def test_refresh_rotates_and_a_spent_token_is_revoked(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    first = await refresh(sandbox, inst, inst.refresh)
    assert first.status_code == 200, first.text
    pair = first.json()
    assert pair["refresh_token"] != inst.refresh
    assert pair["access_token"] != inst.access
    assert_problem(await refresh(sandbox, inst, inst.refresh), 401, REVOKED)
    second = await refresh(sandbox, inst, pair["refresh_token"])
    assert second.status_code == 200
    stats = await sandbox.control("GET", "/stats")
    assert stats["refresh_count"] == 2
    assert stats["calls"]["POST /oauth2/access_token"] == 4  # code + 3 refresh attempts


async def test_refresh_grace_model_when_configured(sandbox: Sandbox) -> None:
    await sandbox.control("PATCH", "/config", {"refresh_grace": True})
    inst = await install(sandbox)
    r2 = (await refresh(sandbox, inst, inst.refresh)).json()["refresh_token"]
    assert (await refresh(sandbox, inst, inst.refresh)).status_code == 200  # R1 still valid: R2 not redeemed
    assert (await refresh(sandbox, inst, r2)).status_code == 200
    assert_problem(await refresh(sandbox, inst, inst.refresh), 401, REVOKED)


async def test_expired_access_token_answers_401(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    assert (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code == 200
    await sandbox.control("POST", "/clock/advance", {"seconds": 86_400})
    assert_problem(await sandbox.http.get("/acme/api/v4/account", headers=inst.auth), 401, UNAUTHORIZED)
    assert_problem(await sandbox.http.get("/acme/api/v4/account"), 401, UNAUTHORIZED)
    assert (await refresh(sandbox, inst, inst.refresh)).status_code == 200  # the refresh token outlives it


async def test_token_of_another_account_is_rejected(sandbox: Sandbox) -> None:
    a = await install(sandbox, "alpha")
    b = await install(sandbox, "beta")
    assert_problem(await sandbox.http.get("/beta/api/v4/account", headers=a.auth), 401, UNAUTHORIZED)
    fields_a = (await sandbox.http.get("/alpha/api/v4/contacts/custom_fields", headers=a.auth)).json()
    fields_b = (await sandbox.http.get("/beta/api/v4/contacts/custom_fields", headers=b.auth)).json()
    ids_a = {f["code"]: f["id"] for f in fields_a["_embedded"]["custom_fields"]}
    ids_b = {f["code"]: f["id"] for f in fields_b["_embedded"]["custom_fields"]}
    assert ids_a == {"PHONE": 771906, "EMAIL": 771908}
    assert set(ids_b) == {"PHONE", "EMAIL"}
    assert not set(ids_a.values()) & set(ids_b.values())


# --- contacts ---------------------------------------------------------------------------------------------------


async def test_pagination_visits_each_contact_once_then_204(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    seeded = await sandbox.control("POST", "/accounts/acme/seed", {"count": 1001, "seed": 3})
    assert seeded["created"] == 1001
    seen: list[int] = []
    url: str | None = f"{sandbox.url}/acme/api/v4/contacts?limit=250"
    pages = 0
    while url:
        resp = await sandbox.http.get(url, headers=inst.auth)
        assert resp.status_code == 200
        assert resp.headers["content-type"] == HAL
        body = resp.json()
        pages += 1
        assert body["_page"] == pages
        assert ("prev" in body["_links"]) == (pages > 1)
        seen += [c["id"] for c in body["_embedded"]["contacts"]]
        url = body["_links"].get("next", {}).get("href")
    assert pages == 5
    assert len(seen) == 1001
    assert len(set(seen)) == 1001
    assert seen == sorted(seen)
    past = await sandbox.http.get(
        "/acme/api/v4/contacts", params={"limit": 250, "page": 6}, headers=inst.auth
    )
    assert past.status_code == 204
    assert past.content == b""
    default = (await sandbox.http.get("/acme/api/v4/contacts", headers=inst.auth)).json()
    assert len(default["_embedded"]["contacts"]) == 50
    assert default["_links"]["self"]["href"].endswith("/acme/api/v4/contacts?page=1&limit=50")


async def test_limit_above_250_is_rejected_or_clamped(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    await sandbox.control("POST", "/accounts/acme/seed", {"count": 300})
    resp = await sandbox.http.get("/acme/api/v4/contacts", params={"limit": 251}, headers=inst.auth)
    assert_problem(
        resp,
        422,
        {
            "title": "Unprocessable Entity",
            "type": "https://httpstatus.es/422",
            "status": 422,
            "detail": "Limit of 250 per page",
        },
    )
    await sandbox.control("PATCH", "/config", {"over_limit": "clamp"})
    resp = await sandbox.http.get("/acme/api/v4/contacts", params={"limit": 251}, headers=inst.auth)
    assert len(resp.json()["_embedded"]["contacts"]) == 250


async def test_list_filters_and_order(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    created = await sandbox.http.post(
        "/acme/api/v4/contacts",
        headers=inst.auth,
        json=[
            {"name": "Ann", "updated_at": 1_000, "created_at": 1_000},
            {"name": "Bob", "updated_at": 3_000, "created_at": 1_000, **contact_with_phone_and_email("Bob")},
            {"name": "Cid", "updated_at": 2_000, "created_at": 1_000, "request_id": "cid"},
        ],
    )
    assert created.status_code == 200, created.text
    items = created.json()["_embedded"]["contacts"]
    assert [i["request_id"] for i in items] == ["0", "1", "cid"]
    ann, bob, cid = (i["id"] for i in items)

    async def ids(**params: Any) -> list[int] | None:
        resp = await sandbox.http.get("/acme/api/v4/contacts", params=params, headers=inst.auth)
        if resp.status_code == 204:
            return None
        return [c["id"] for c in resp.json()["_embedded"]["contacts"]]

    assert await ids(**{"filter[id][]": [cid, ann]}) == [ann, cid]
    assert await ids(**{"filter[updated_at][from]": 2_000}) == [bob, cid]
    assert await ids(**{"filter[updated_at][from]": 1_500, "filter[updated_at][to]": 2_500}) == [cid]
    assert await ids(**{"order[updated_at]": "desc"}) == [bob, cid, ann]
    assert await ids(**{"order[updated_at]": "asc", "filter[updated_at][to]": 2_000}) == [ann, cid]
    assert await ids(**{"order[id]": "desc"}) == [cid, bob, ann]
    assert await ids(query="IVAN@example") == [bob]
    assert await ids(query="nobody") is None
    assert await ids(**{"filter[id][]": [999]}) is None


async def test_contact_json_shape_and_updates(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    resp = await sandbox.http.post(
        "/acme/api/v4/contacts", headers=inst.auth, json=[{"first_name": "Ana", "last_name": "Souza"}]
    )
    cid = resp.json()["_embedded"]["contacts"][0]["id"]
    one = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()
    assert one["custom_fields_values"] is None
    assert one["name"] == "Ana Souza"
    assert one["_embedded"] == {"tags": [], "companies": []}
    assert one["closest_task_at"] is None
    assert set(one) == {
        "id",
        "name",
        "first_name",
        "last_name",
        "responsible_user_id",
        "group_id",
        "created_by",
        "updated_by",
        "created_at",
        "updated_at",
        "closest_task_at",
        "custom_fields_values",
        "account_id",
        "_links",
        "_embedded",
    }

    stamps = [one["updated_at"]]
    for n in range(3):  # same second: updated_at still strictly increases
        patch = await sandbox.http.patch(
            f"/acme/api/v4/contacts/{cid}",
            headers=inst.auth,
            json={
                "custom_fields_values": [
                    {"field_id": 771908, "values": [{"value": f"ana{n}@example.com", "enum_id": 552490}]}
                ],
                "tags_to_add": [{"name": "vip"}],
            },
        )
        assert patch.status_code == 200, patch.text
        item = patch.json()["_embedded"]["contacts"][0]
        assert set(item) == {"id", "name", "updated_at", "_links"}
        stamps.append(item["updated_at"])
    assert stamps == sorted(set(stamps))
    one = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()
    assert one["custom_fields_values"] == [
        {
            "field_id": 771908,
            "field_name": "Email",
            "field_code": "EMAIL",
            "field_type": "multitext",
            "values": [{"value": "ana2@example.com", "enum_id": 552490, "enum_code": "PRIV"}],
        }
    ]
    assert [t["name"] for t in one["_embedded"]["tags"]] == ["vip"]
    tag_id = one["_embedded"]["tags"][0]["id"]
    batch = await sandbox.http.patch(
        "/acme/api/v4/contacts",
        headers=inst.auth,
        json=[
            {
                "id": cid,
                "tags_to_delete": [{"id": tag_id}],
                "custom_fields_values": [{"field_code": "EMAIL", "values": None}],
            }
        ],
    )
    assert batch.status_code == 200
    one = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()
    assert one["custom_fields_values"] is None
    assert one["_embedded"]["tags"] == []
    assert (await sandbox.http.get("/acme/api/v4/contacts/123", headers=inst.auth)).status_code == 204


async def test_validation_errors_shape(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    cid = (await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": "X"}])).json()[
        "_embedded"
    ]["contacts"][0]["id"]
    resp = await sandbox.http.patch(
        "/acme/api/v4/contacts",
        headers=inst.auth,
        json=[
            {"id": cid, "custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]},
            {
                "id": cid,
                "name": 5,
                "custom_fields_values": [
                    {"field_code": "EMAIL", "values": [{"value": "a@example.com", "enum_code": "NOPE"}]}
                ],
            },
        ],
    )
    assert_problem(
        resp,
        400,
        {
            "validation-errors": [
                {
                    "request_id": "0",
                    "errors": [
                        {
                            "code": "NotSupportedChoice",
                            "path": "custom_fields_values.0.field_id",
                            "detail": "The value you selected is not a valid choice.",
                        }
                    ],
                },
                {
                    "request_id": "1",
                    "errors": [
                        {
                            "code": "InvalidType",
                            "path": "name",
                            "detail": "This value should be of type string.",
                        },
                        {
                            "code": "NotSupportedChoice",
                            "path": "custom_fields_values.0.values.0.enum_code",
                            "detail": "The value you selected is not a valid choice.",
                        },
                    ],
                },
            ],
            "title": "Bad Request",
            "type": "https://httpstatus.es/400",
            "status": 400,
            "detail": "Request validation failed",
        },
    )
    blank = {
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Request data can't be blank",
    }
    assert_problem(
        await sandbox.http.patch("/acme/api/v4/contacts", headers=inst.auth, content=b""), 400, blank
    )
    assert_problem(
        await sandbox.http.patch(f"/acme/api/v4/contacts/{cid}", headers=inst.auth, json={}), 400, blank
    )
    wrong = await sandbox.http.patch(
        f"/acme/api/v4/contacts/{cid}", headers=inst.auth, json={"custom_fields_values": {"field_id": 771908}}
    )
    assert wrong.json()["validation-errors"][0]["errors"][0] == {
        "code": "InvalidType",
        "path": "custom_fields_values",
        "detail": "This value should be of type array.",
    }
    too_many = await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": "n"}] * 251)
    assert too_many.status_code == 422
    unchanged = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()
    assert unchanged["name"] == "X"  # nothing of a rejected batch is applied


# --- webhooks ---------------------------------------------------------------------------------------------------


async def test_webhook_registration(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    bad = await sandbox.http.post(
        "/acme/api/v4/webhooks",
        headers=inst.auth,
        json={"destination": "not a url", "settings": ["add_contact"]},
    )
    assert_problem(
        bad,
        400,
        {
            "validation-errors": [
                {
                    "request_id": "0",
                    "errors": [
                        {
                            "code": "57c2f299-1154-4870-89bb-ef3b1f5ad229",
                            "path": "destination.destination",
                            "detail": "Invalid URL",
                        }
                    ],
                }
            ],
            "title": "Bad Request",
            "status": 400,
            "detail": "Request validation failed",
        },
    )
    hook = await subscribe(sandbox, inst, "https://hooks.example.com/k", ["add_contact"])
    assert set(hook) == {
        "id",
        "destination",
        "created_at",
        "updated_at",
        "account_id",
        "created_by",
        "sort",
        "disabled",
        "settings",
    }
    listed = (await sandbox.http.get("/acme/api/v4/webhooks", headers=inst.auth)).json()
    assert listed["_total_items"] == 1
    assert listed["_embedded"]["webhooks"][0]["settings"] == ["add_contact"]
    gone = await sandbox.http.request(
        "DELETE",
        "/acme/api/v4/webhooks",
        headers=inst.auth,
        json={"destination": "https://hooks.example.com/k"},
    )
    assert gone.status_code == 204
    assert (await sandbox.http.get("/acme/api/v4/webhooks", headers=inst.auth)).status_code == 204


async def test_webhook_delivers_php_form_bodies(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url)
    created = await sandbox.http.post(
        "/acme/api/v4/contacts", headers=inst.auth, json=[contact_with_phone_and_email()]
    )
    cid = created.json()["_embedded"]["contacts"][0]["id"]
    await sandbox.http.patch(
        f"/acme/api/v4/contacts/{cid}",
        headers=inst.auth,
        json={
            "custom_fields_values": [
                {"field_code": "EMAIL", "values": [{"value": "new@example.com", "enum_code": "PRIV"}]}
            ]
        },
    )
    await drain(sandbox)
    assert len(receiver.requests) == 2
    _m, headers, _b = receiver.requests[0]
    assert headers["user-agent"] == "amoCRM-Webhooks/3.0"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    add, update = (dict(f) for f in receiver.forms())
    assert add["account[subdomain]"] == "acme"
    assert add["account[id]"] == str(inst.account_id)
    assert add["account[_links][self]"] == "https://acme.kommo.com"
    assert add["contacts[add][0][id]"] == str(cid)
    assert add["contacts[add][0][type]"] == "contact"
    assert add["contacts[add][0][custom_fields][0][values][0][enum]"] == "552480"  # PHONE/MOB id, not "MOB"
    assert add["contacts[add][0][custom_fields][1][values][0][value]"] == "ivan@example.com"
    assert update["contacts[update][0][custom_fields][1][values][0][value]"] == "new@example.com"
    assert update["contacts[update][0][custom_fields][1][values][0][enum]"] == "552490"
    keys = [k for k, _v in receiver.forms()[1]]
    assert (
        keys.index("contacts[update][0][custom_fields][1][code]")
        == keys.index("contacts[update][0][custom_fields][1][values][0][enum]") + 1
    )  # [code] after [values]
    assert keys[:3] == ["account[subdomain]", "account[id]", "account[_links][self]"]
    expected_fields = [
        "id",
        "name",
        "responsible_user_id",
        "date_create",
        "last_modified",
        "created_user_id",
        "modified_user_id",
        "account_id",
    ]
    contact_keys = [k[len("contacts[update][0][") : -1] for k in keys if k.count("[") == 3]
    assert contact_keys == [*expected_fields, "created_at", "updated_at", "type"]
    updated_at = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()[
        "updated_at"
    ]
    assert update["contacts[update][0][updated_at]"] == str(updated_at)


async def test_deliveries_carry_current_headers_and_a_new_request_id_per_attempt(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    """Current Kommo deliveries: amoCRM-Webhooks/3.0, X-Amocrm-Requestid (a UUID v4), Accept-Encoding: gzip,
    the form content type, and nothing of the 2016 set (Accept: */*, Connection: close)."""
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url)
    receiver.fail_next = 1
    await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": "h"}])
    await drain(sandbox)
    assert len(receiver.requests) == 2  # one failed attempt, one retry
    ids = []
    for _m, headers, _body in receiver.requests:
        assert headers["user-agent"] == "amoCRM-Webhooks/3.0"
        assert headers["accept-encoding"] == "gzip"
        assert headers["content-type"] == "application/x-www-form-urlencoded"
        assert "accept" not in headers
        assert headers.get("connection", "keep-alive") != "close"
        request_id = uuid.UUID(headers["x-amocrm-requestid"])
        assert request_id.version == 4
        ids.append(str(request_id))
    assert ids[0] != ids[1]
    log = await sandbox.control("GET", "/deliveries")
    assert [e["request_id"] for e in log] == ids


async def test_webhook_tags_in_captured_layout(sandbox: Sandbox, receiver: Receiver) -> None:
    """``contacts[update][0][tags][0][id]`` / ``[name]`` after the custom fields; body order account block
    first: subdomain, id, _links.self, then the entity groups."""
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url, ["update_contact"])
    created = await sandbox.http.post(
        "/acme/api/v4/contacts", headers=inst.auth, json=[contact_with_phone_and_email()]
    )
    cid = created.json()["_embedded"]["contacts"][0]["id"]
    await sandbox.http.patch(
        f"/acme/api/v4/contacts/{cid}",
        headers=inst.auth,
        json={"_embedded": {"tags": [{"name": "vip"}, {"name": "повторное обращение"}]}},
    )
    await drain(sandbox)
    [form] = receiver.forms()
    keys = [k for k, _v in form]
    assert keys[:3] == ["account[subdomain]", "account[id]", "account[_links][self]"]
    assert dict(form)["account[_links][self]"] == "https://acme.kommo.com"
    tags = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()["_embedded"][
        "tags"
    ]
    p = "contacts[update][0]"
    expected = []
    for j, tag in enumerate(tags):
        expected += [(f"{p}[tags][{j}][id]", str(tag["id"])), (f"{p}[tags][{j}][name]", tag["name"])]
    assert [kv for kv in form if "[tags]" in kv[0]] == expected
    assert {t["name"] for t in tags} == {"vip", "повторное обращение"}
    assert keys.index(f"{p}[tags][0][id]") > keys.index(f"{p}[custom_fields][1][code]")
    assert keys.index(f"{p}[tags][1][name]") < keys.index(f"{p}[updated_at]")


async def test_control_characters_in_a_name_are_held_and_served(sandbox: Sandbox, receiver: Receiver) -> None:
    """Kommo keeps what users and integrations type, NUL included: REST serves it as JSON escapes, webhooks
    percent-encode it (so our side can be tested against such contacts end to end)."""
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url, ["add_contact"])
    name = "Null\x00Byte\x07Bell\x85Nel"
    created = await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": name}])
    assert created.status_code == 200, created.text
    cid = created.json()["_embedded"]["contacts"][0]["id"]
    one = await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)
    assert b"\\u0000" in one.content
    assert one.json()["name"] == name
    await drain(sandbox)
    [(_m, _h, body)] = receiver.requests
    assert b"Null%00Byte%07Bell%C2%85Nel" in body
    assert dict(receiver.forms()[0])["contacts[add][0][name]"] == name


async def test_batch_window_coalesces_changes(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await sandbox.control("PATCH", "/config", {"batch_window_ms": 300})
    await subscribe(sandbox, inst, receiver.url)
    created = await sandbox.http.post(
        "/acme/api/v4/contacts", headers=inst.auth, json=[{"name": f"c{i}"} for i in range(3)]
    )
    first = created.json()["_embedded"]["contacts"][0]["id"]
    await sandbox.http.patch(f"/acme/api/v4/contacts/{first}", headers=inst.auth, json={"name": "renamed"})
    await drain(sandbox)
    assert len(receiver.requests) == 1
    form = dict(receiver.forms()[0])
    assert [form[f"contacts[add][{i}][name]"] for i in range(3)] == ["c0", "c1", "c2"]
    assert form["contacts[update][0][name]"] == "renamed"


async def test_delete_and_restore_fire_webhooks(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url, ["delete_contact", "restore_contact"])
    cid = (
        await sandbox.http.post(
            "/acme/api/v4/contacts", headers=inst.auth, json=[contact_with_phone_and_email()]
        )
    ).json()["_embedded"]["contacts"][0]["id"]
    await sandbox.control("POST", f"/accounts/acme/contacts/{cid}/delete")
    assert (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).status_code == 204
    assert (await sandbox.http.get("/acme/api/v4/contacts", headers=inst.auth)).status_code == 204
    await sandbox.control("POST", f"/accounts/acme/contacts/{cid}/restore")
    await drain(sandbox)
    delete, restore = receiver.forms()  # no add webhook: not subscribed
    assert delete == [
        ("account[subdomain]", "acme"),
        ("account[id]", str(inst.account_id)),
        ("account[_links][self]", "https://acme.kommo.com"),
        ("contacts[delete][0][id]", str(cid)),
        ("contacts[delete][0][type]", "contact"),
    ]
    restored = dict(restore)
    assert restored["contacts[restore][0][id]"] == str(cid)
    assert restored["contacts[restore][0][custom_fields][1][code]"] == "EMAIL"
    listed = (await sandbox.http.get("/acme/api/v4/contacts", headers=inst.auth)).json()
    assert [c["id"] for c in listed["_embedded"]["contacts"]] == [cid]


async def test_failed_deliveries_are_retried_and_logged(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url)
    receiver.fail_next = 2
    await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": "r"}])
    await drain(sandbox)
    assert len(receiver.requests) == 3
    assert receiver.requests[0][2] == receiver.requests[2][2]
    log = await sandbox.control("GET", "/deliveries")
    assert [(e["attempt"], e["status"], e["ok"]) for e in log] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]


async def test_webhook_disabled_after_too_many_failures(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await sandbox.control("PATCH", "/config", {"webhook_disable_failures": 3, "webhook_retry_delays": []})
    await subscribe(sandbox, inst, receiver.url)
    receiver.fail_next = 100
    for i in range(5):
        await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": f"f{i}"}])
    await drain(sandbox)
    assert len(receiver.requests) == 4  # the 4th failure (> 3) disables the webhook
    hooks = (await sandbox.http.get("/acme/api/v4/webhooks", headers=inst.auth)).json()["_embedded"][
        "webhooks"
    ]
    assert hooks[0]["disabled"] is True
    await subscribe(sandbox, inst, receiver.url)  # re-saving re-enables it
    hooks = (await sandbox.http.get("/acme/api/v4/webhooks", headers=inst.auth)).json()["_embedded"][
        "webhooks"
    ]
    assert hooks[0]["disabled"] is False


async def test_duplicates_are_deterministic(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await sandbox.control("PATCH", "/config", {"duplicate_rate": 1.0})
    await subscribe(sandbox, inst, receiver.url)
    await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": "d"}])
    await drain(sandbox)
    assert len(receiver.requests) == 2
    assert receiver.requests[0][2] == receiver.requests[1][2]


async def test_reorder_shuffles_within_window(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await sandbox.control("PATCH", "/config", {"reorder": True, "reorder_window_ms": 200, "webhook_seed": 5})
    await subscribe(sandbox, inst, receiver.url)
    created = await sandbox.http.post(
        "/acme/api/v4/contacts", headers=inst.auth, json=[{"name": f"o{i}"} for i in range(8)]
    )
    ids = [c["id"] for c in created.json()["_embedded"]["contacts"]]
    await drain(sandbox)
    got = [int(dict(f)["contacts[add][0][id]"]) for f in receiver.forms()]
    assert sorted(got) == ids
    assert got != ids


# --- limits, faults, uninstall ----------------------------------------------------------------------------------


async def test_rate_limit_answers_429_past_7_per_second(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    await sandbox.control("PATCH", "/config", {"rate_limit_rps": 7})
    results = await asyncio.gather(
        *(sandbox.http.get("/acme/api/v4/account", headers=inst.auth) for _ in range(10))
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * 7 + [429] * 3
    limited = next(r for r in results if r.status_code == 429)
    assert_problem(
        limited,
        429,
        {
            "title": "Too Many Requests",
            "type": "https://httpstatus.es/429",
            "status": 429,
            "detail": "You have sent too many requests in a given amount of time. Try again later.",
            "retry_after": 300,
        },
    )
    await asyncio.sleep(1.05)
    assert (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code == 200
    stats = await sandbox.control("GET", "/stats")
    assert stats["rate_limited"] == 3
    assert stats["max_calls_in_1s"][inst.client_id] == 7


async def test_repeated_429s_escalate_to_403(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    await sandbox.control("PATCH", "/config", {"rate_limit_rps": 1, "block_after_429s": 2})
    codes = [
        (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code for _ in range(4)
    ]
    assert codes == [200, 429, 429, 403]


async def test_fault_injection(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    await sandbox.control("POST", "/faults", {"burst_429": 2})
    codes = [
        (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code for _ in range(3)
    ]
    assert codes == [429, 429, 200]

    await sandbox.control("POST", "/faults", {"error_rate": 1.0, "error_status": 503})
    failed = await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)
    assert failed.status_code == 503
    assert failed.json()["title"] == "ErrInternalServer"

    async def pattern() -> list[int]:
        await sandbox.control("POST", "/faults", {"error_rate": 0.5, "error_status": 500, "seed": 42})
        return [
            (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code for _ in range(12)
        ]

    first = await pattern()
    assert first == await pattern()
    assert {200, 500} == set(first)

    await sandbox.control("DELETE", "/faults")
    await sandbox.control("POST", "/faults", {"latency_ms": 200})
    started = time.monotonic()
    assert (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code == 200
    assert time.monotonic() - started >= 0.2
    assert (await sandbox.control("GET", "/stats"))["faults"]["burst_429"] == 2


async def test_a_lost_answer_is_a_write_done_and_answered_504(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    await sandbox.control("POST", "/faults", {"lost_answers": 1})
    assert (
        await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)
    ).status_code == 200  # reads pass
    body = [{"name": "Lost Answer"}]
    lost = await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=body)
    assert lost.status_code == 504
    assert lost.json()["title"] == "ErrInternalServer"
    listed = await sandbox.http.get(
        "/acme/api/v4/contacts", headers=inst.auth, params={"query": "Lost Answer"}
    )
    assert [c["name"] for c in listed.json()["_embedded"]["contacts"]] == ["Lost Answer"]  # it was done
    again = await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=[{"name": "Second"}])
    assert again.status_code == 200  # one lost answer, then normal answers
    assert (await sandbox.control("GET", "/stats"))["faults"]["lost_answer"] == 1


async def test_faults_aimed_at_one_endpoint_spare_the_others(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    await sandbox.control(
        "POST", "/faults", {"burst_429": 1, "lost_answers": 1, "only": "POST /api/v4/contacts"}
    )
    assert (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code == 200
    assert (await sandbox.http.get("/acme/api/v4/contacts", headers=inst.auth)).status_code in (200, 204)
    body = [{"name": "Aimed"}]
    codes = [(await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=body)).status_code]
    codes.append((await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=body)).status_code)
    codes.append((await sandbox.http.post("/acme/api/v4/contacts", headers=inst.auth, json=body)).status_code)
    assert codes == [429, 504, 200]
    assert (await sandbox.control("GET", "/faults"))["only"] == "POST /api/v4/contacts"
    bad = await sandbox.http.post("/_sandbox/faults", json={"only": 7})
    assert bad.status_code == 400
    await sandbox.control("DELETE", "/faults")
    assert (await sandbox.control("GET", "/faults"))["only"] is None


async def test_uninstall_calls_disable_hook_and_revokes_tokens(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox, hook=receiver.url)
    result = await sandbox.control("POST", "/uninstall", {"client_id": inst.client_id, "subdomain": "acme"})
    assert result["hook_status"] == 200
    assert result["revoked_tokens"] == 2
    method_query, headers, _body = receiver.requests[0]
    method, _, query = method_query.partition(" ")
    params = dict(parse_qsl(query))
    assert method == "GET"
    assert headers["user-agent"] == "amoService-oAuth-Code-Sender/1.0"
    assert params["client_uuid"] == inst.client_id
    assert params["account_id"] == str(inst.account_id)
    expected = hmac.new(
        inst.client_secret.encode(), f"{inst.client_id}|{inst.account_id}".encode(), hashlib.sha256
    ).hexdigest()
    assert params["signature"] == expected
    assert_problem(await sandbox.http.get("/acme/api/v4/account", headers=inst.auth), 401, UNAUTHORIZED)
    assert_problem(await refresh(sandbox, inst, inst.refresh), 401, REVOKED)


# --- seeding and scale ---------------------------------------------------------------------------------------------


def test_seed_is_deterministic_and_realistic() -> None:
    def run() -> list[tuple[str, list[str]]]:
        state = KommoSandboxState()
        state.create_account("acme")
        seed_contacts(state, "acme", 2_000, seed=9)
        account = state.accounts["acme"]
        email_id = 771908
        return [(c.name, [v for v, _e in (c.field_values(email_id) or [])]) for c in account.iter_live()]

    first = run()
    assert first == run()
    counts = {n: sum(1 for _name, emails in first if len(emails) == n) for n in range(5)}
    assert counts[4] == 0
    assert all(counts[n] > 0 for n in range(4))
    owners: dict[str, int] = {}
    for _name, emails in first:
        for e in set(emails):
            owners[e] = owners.get(e, 0) + 1
    assert 0 < sum(1 for n in owners.values() if n > 1) < 100  # a few emails are shared


async def test_deep_pages_stay_fast_at_100k(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    seed_contacts(sandbox.state, "acme", 100_000, seed=1)
    started = time.monotonic()
    last = await sandbox.http.get(
        "/acme/api/v4/contacts", params={"limit": 250, "page": 400}, headers=inst.auth
    )
    by_updated = await sandbox.http.get(
        "/acme/api/v4/contacts",
        params={"limit": 250, "page": 399, "order[updated_at]": "asc"},
        headers=inst.auth,
    )
    elapsed = time.monotonic() - started
    assert last.status_code == 200
    assert "next" not in last.json()["_links"]
    assert by_updated.status_code == 200
    stamps = [c["updated_at"] for c in by_updated.json()["_embedded"]["contacts"]]
    assert stamps == sorted(stamps)
    assert elapsed < 2.0, elapsed


async def test_user_fields_have_no_code(sandbox: Sandbox, receiver: Receiver) -> None:
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url, ["add_contact"])
    city = await sandbox.control(
        "POST", "/accounts/acme/custom_fields", {"name": "City", "type": "text"}, 201
    )
    created = await sandbox.http.post(
        "/acme/api/v4/contacts",
        headers=inst.auth,
        json=[
            {"name": "u", "custom_fields_values": [{"field_id": city["id"], "values": [{"value": "Recife"}]}]}
        ],
    )
    cid = created.json()["_embedded"]["contacts"][0]["id"]
    one = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()
    assert one["custom_fields_values"] == [
        {
            "field_id": city["id"],
            "field_name": "City",
            "field_code": None,
            "field_type": "text",
            "values": [{"value": "Recife"}],
        }
    ]
    await drain(sandbox)
    form = dict(receiver.forms()[0])
    assert form["contacts[add][0][custom_fields][0][values][0][value]"] == "Recife"
    assert "contacts[add][0][custom_fields][0][code]" not in form


# --- account hosts, the widget-install redirect and the widget token ------------------------------------------------


async def test_amocrm_ru_account_lives_on_its_own_host_only(sandbox: Sandbox, receiver: Receiver) -> None:
    integ = await sandbox.control("POST", "/integrations", {"redirect_uri": REDIRECT}, 201)
    ru = await sandbox.control("POST", "/accounts", {"subdomain": "etesttask", "domain": "amocrm.ru"}, 201)
    await sandbox.control("POST", "/accounts", {"subdomain": "acme"}, 201)
    assert ru["host"] == "etesttask.amocrm.ru"
    await sandbox.control("POST", "/accounts", {"subdomain": "x", "domain": "evil.com"}, 400)

    granted = await sandbox.control(
        "POST", "/authorize", {"client_id": integ["client_id"], "subdomain": "etesttask"}
    )
    q = parse_qs(urlsplit(granted["redirect_url"]).query)
    assert (q["referer"], q["platform"]) == (["etesttask.amocrm.ru"], ["1"])
    kommo = await sandbox.control(
        "POST", "/authorize", {"client_id": integ["client_id"], "subdomain": "acme"}
    )
    q_kommo = parse_qs(urlsplit(kommo["redirect_url"]).query)
    assert (q_kommo["referer"], q_kommo["platform"]) == (["acme.kommo.com"], ["2"])

    # The token endpoint and the API answer for the account only under its own host.
    for wrong in ("etesttask", "etesttask.kommo.com", "etesttask.amocrm.com"):
        resp = await exchange_code(sandbox, wrong, integ, granted["code"])
        assert resp.status_code == 404, wrong
        assert (
            resp.json()["detail"]
            == f"Cannot POST https://{wrong.split('.')[0]}.{wrong.partition('.')[2] or 'kommo.com'}/oauth2/access_token"
        )
    resp = await exchange_code(sandbox, "etesttask.amocrm.ru", integ, granted["code"])
    assert resp.status_code == 200, resp.text
    assert jwt_claims(resp.json()["access_token"])["base_domain"] == "amocrm.ru"
    auth = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    me = await sandbox.http.get("/etesttask.amocrm.ru/api/v4/account", headers=auth)
    assert (me.status_code, me.json()["id"]) == (200, ru["id"])
    other = await sandbox.http.get("/etesttask.kommo.com/api/v4/account", headers=auth)
    assert_problem(
        other,
        404,
        {
            "title": "Not Found",
            "type": "https://httpstatus.es/404",
            "status": 404,
            "detail": "Cannot GET https://etesttask.kommo.com/api/v4/account",
        },
    )
    stats = await sandbox.control("GET", "/stats")
    assert stats["by_host"]["etesttask.amocrm.ru"] == {
        "POST /oauth2/access_token": 1,
        "GET /api/v4/account": 1,
    }
    assert stats["by_account"]["etesttask"]["GET /api/v4/account"] == 2

    # A Kommo account answers under kommo.com, its former name amocrm.com and the short form; not amocrm.ru.
    inst = await install(sandbox, "acme")
    for segment, status in (
        ("acme", 200),
        ("acme.kommo.com", 200),
        ("acme.amocrm.com", 200),
        ("acme.amocrm.ru", 404),
    ):
        resp = await sandbox.http.get(f"/{segment}/api/v4/account", headers=inst.auth)
        assert resp.status_code == status, segment

    # Deliveries name the account's host.
    resp = await sandbox.http.post(
        "/etesttask.amocrm.ru/api/v4/webhooks",
        headers=auth,
        json={"destination": receiver.url, "settings": ["add_contact"], "sort": 10},
    )
    assert resp.status_code == 200, resp.text
    created = await sandbox.http.post(
        "/etesttask.amocrm.ru/api/v4/contacts", headers=auth, json=[{"name": "Ann"}]
    )
    assert created.status_code == 200
    assert created.json()["_links"]["self"]["href"].endswith("/etesttask.amocrm.ru/api/v4/contacts")
    await drain(sandbox)
    form = dict(receiver.forms()[0])
    assert (form["account[subdomain]"], form["account[_links][self]"]) == (
        "etesttask",
        "https://etesttask.amocrm.ru",
    )


async def test_install_widget_sends_the_stateless_redirect_once(sandbox: Sandbox, receiver: Receiver) -> None:
    integ = await sandbox.control("POST", "/integrations", {"redirect_uri": receiver.url}, 201)
    await sandbox.control("POST", "/accounts", {"subdomain": "etesttask", "domain": "amocrm.ru"}, 201)
    sent = await sandbox.control(
        "POST", "/install_widget", {"client_id": integ["client_id"], "subdomain": "etesttask"}
    )
    assert sent["status"] == 200
    assert sent["error"] is None
    assert len(receiver.requests) == 1
    method_query, _headers, _body = receiver.requests[0]
    method, _, query = method_query.partition(" ")
    assert method == "GET"
    assert parse_qsl(query) == [
        ("code", sent["code"]),
        ("referer", "etesttask.amocrm.ru"),
        ("platform", "1"),
        ("client_id", integ["client_id"]),
        ("from_widget", "1"),
    ]
    # A failing receiver is not retried: Kommo sends it once and ignores the answer.
    receiver.fail_next = 1
    sent = await sandbox.control(
        "POST", "/install_widget", {"client_id": integ["client_id"], "subdomain": "etesttask"}
    )
    assert sent["status"] == 500
    assert len(receiver.requests) == 2


async def test_widget_token_is_hs256_with_the_client_secret(sandbox: Sandbox) -> None:
    integ = await sandbox.control(
        "POST", "/integrations", {"redirect_uri": "https://sync.example.com:8443/auth/callback"}, 201
    )
    acct = await sandbox.control("POST", "/accounts", {"subdomain": "acme"}, 201)
    out = await sandbox.control(
        "POST", "/widget_token", {"client_id": integ["client_id"], "subdomain": "acme"}
    )
    header_b64, claims_b64, sig_b64 = out["token"].split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    assert header == {"typ": "JWT", "alg": "HS256"}
    expected = hmac.new(
        integ["client_secret"].encode(), f"{header_b64}.{claims_b64}".encode(), hashlib.sha256
    )
    assert base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4)) == expected.digest()
    claims = jwt_claims(out["token"])
    assert claims == out["claims"]
    assert claims["aud"] == "https://sync.example.com"  # scheme://host of the redirect URI
    assert claims["iss"] == "https://acme.kommo.com"
    assert (claims["account_id"], claims["subdomain"], claims["client_uuid"]) == (
        acct["id"],
        "acme",
        integ["client_id"],
    )
    assert claims["exp"] - claims["iat"] == 1800
    assert claims["is_admin"] is True
    # Bad tokens on demand.
    bad = await sandbox.control(
        "POST",
        "/widget_token",
        {"client_id": integ["client_id"], "subdomain": "acme", "claims": {"aud": "x"}, "alg": "none"},
    )
    assert bad["token"].endswith(".")
    assert jwt_claims_unsigned(bad["token"])["aud"] == "x"
    await sandbox.control("POST", "/widget_token", {"client_id": "nope", "subdomain": "acme"}, 404)


def jwt_claims_unsigned(token: str) -> dict[str, Any]:
    claims = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return decoded


# --- custom-field value shapes per type, users, the custom_fields seed ------------------------------------------


async def test_every_field_type_on_the_wire_follows_spec_8_2(sandbox: Sandbox, receiver: Receiver) -> None:
    """REST read and webhook form of one value per type: checkbox JSON true / "1", numeric a JSON string, dates a
    unix int by REST and a bare value in the form, radiobutton an object in the form, smart_address one item per
    part with its enum_code by REST and multitext's layout in the form."""
    inst = await install(sandbox)
    await subscribe(sandbox, inst, receiver.url, ["add_contact"])
    types = ["checkbox", "numeric", "date", "birthday", "radiobutton", "multiselect", "smart_address", "url"]
    fields = {}
    for t in types:
        body: dict[str, Any] = {"name": t.title(), "type": t}
        if t in ("radiobutton", "multiselect"):
            body["enums"] = ["One", "Two", "Three"]
        fields[t] = await sandbox.control("POST", "/accounts/acme/custom_fields", body, 201)
    parts = {e["value"]: e["id"] for e in fields["smart_address"]["enums"]}
    assert list(parts) == ["address_line_1", "address_line_2", "city", "state", "zip", "country"]

    def cf(t: str, *values: dict[str, Any]) -> dict[str, Any]:
        return {"field_id": fields[t]["id"], "values": list(values)}

    resp = await sandbox.http.post(
        "/acme/api/v4/contacts",
        headers=inst.auth,
        json=[
            {
                "name": "Types",
                "custom_fields_values": [
                    cf("checkbox", {"value": True}),
                    cf("numeric", {"value": 2.0}),
                    cf("date", {"value": "2024-05-01T00:00:00+00:00"}),
                    cf("birthday", {"value": 1465948800}),
                    cf("radiobutton", {"value": "Two"}),
                    cf("multiselect", {"enum_id": fields["multiselect"]["enums"][2]["id"]}, {"value": "One"}),
                    cf(
                        "smart_address",
                        {"value": "BR", "enum_code": "country"},
                        {"value": "Recife", "enum_id": parts["city"]},
                    ),
                    cf("url", {"value": "https://x.example"}),
                ],
            },
            {"name": "Off", "custom_fields_values": [cf("checkbox", {"value": False})]},
        ],
    )
    assert resp.status_code == 200, resp.text
    cid, off = (c["id"] for c in resp.json()["_embedded"]["contacts"])
    one = (await sandbox.http.get(f"/acme/api/v4/contacts/{cid}", headers=inst.auth)).json()
    rest = {v["field_type"]: v["values"] for v in one["custom_fields_values"]}
    radio, multi = fields["radiobutton"]["enums"], fields["multiselect"]["enums"]
    assert rest == {
        "checkbox": [{"value": True}],
        "numeric": [{"value": "2"}],
        "date": [{"value": 1714521600}],
        "birthday": [{"value": 1465948800}],
        "radiobutton": [{"value": "Two", "enum_id": radio[1]["id"], "enum_code": None}],
        "multiselect": [
            {"value": "Three", "enum_id": multi[2]["id"], "enum_code": None},
            {"value": "One", "enum_id": multi[0]["id"], "enum_code": None},
        ],
        "smart_address": [  # held in the parts' own order, not as written
            {"value": "Recife", "enum_id": parts["city"], "enum_code": "city"},
            {"value": "BR", "enum_id": parts["country"], "enum_code": "country"},
        ],
        "url": [{"value": "https://x.example"}],
    }

    await drain(sandbox)
    forms = [dict(f) for f in receiver.forms()]
    add = next(f for f in forms if f["contacts[add][0][id]"] == str(cid))
    p = "contacts[add][0][custom_fields]"
    by_name = {add[f"{p}[{i}][name]"]: i for i in range(len(types))}
    got = {
        name: sorted(
            (k[len(f"{p}[{i}][values]") :], v) for k, v in add.items() if k.startswith(f"{p}[{i}][values]")
        )
        for name, i in by_name.items()
    }
    assert got == {
        "Checkbox": [("[0][value]", "1")],
        "Numeric": [("[0][value]", "2")],
        "Date": [("[0]", "1714521600")],
        "Birthday": [("[0]", "1465948800")],
        "Radiobutton": [("[enum]", str(radio[1]["id"])), ("[value]", "Two")],
        "Multiselect": sorted(
            [
                ("[0][value]", "Three"),
                ("[0][enum]", str(multi[2]["id"])),
                ("[1][value]", "One"),
                ("[1][enum]", str(multi[0]["id"])),
            ]
        ),
        "Smart_Address": sorted(
            [
                ("[0][value]", "Recife"),
                ("[0][enum]", str(parts["city"])),
                ("[1][value]", "BR"),
                ("[1][enum]", str(parts["country"])),
            ]
        ),
        "Url": [("[0][value]", "https://x.example")],
    }
    off_form = next(f for f in forms if f["contacts[add][0][id]"] == str(off))
    assert off_form[f"{p}[0][values][0][value]"] == "0"


async def test_smart_address_parts_need_their_part(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    field = await sandbox.control(
        "POST", "/accounts/acme/custom_fields", {"name": "A", "type": "smart_address"}, 201
    )
    resp = await sandbox.http.post(
        "/acme/api/v4/contacts",
        headers=inst.auth,
        json=[
            {
                "custom_fields_values": [
                    {
                        "field_id": field["id"],
                        "values": [{"value": "Recife"}, {"value": "BR", "enum_code": "planet"}],
                    }
                ]
            }
        ],
    )
    assert resp.status_code == 400
    errors = resp.json()["validation-errors"][0]["errors"]
    assert [(e["code"], e["path"]) for e in errors] == [
        ("NotBlank", "custom_fields_values.0.values.0.enum_code"),
        ("NotSupportedChoice", "custom_fields_values.0.values.1.enum_code"),
    ]


async def test_users_list_pages_and_one_user(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    added = [
        await sandbox.control("POST", "/accounts/acme/users", {"name": f"User {n}"}, 201) for n in range(4)
    ]
    me = sandbox.state.accounts["acme"].current_user_id

    first = await sandbox.http.get("/acme/api/v4/users", params={"limit": 2}, headers=inst.auth)
    assert first.status_code == 200
    assert first.headers["content-type"] == HAL
    body = first.json()
    assert (body["_total_items"], body["_page"], body["_page_count"]) == (5, 1, 3)
    assert "next" in body["_links"]
    assert "prev" not in body["_links"]
    [mine, other] = body["_embedded"]["users"]
    assert (mine["id"], mine["name"], mine["rights"]["is_admin"]) == (me, "Admin", True)
    assert (other["id"], other["name"], other["rights"]["is_admin"]) == (added[0]["id"], "User 0", False)
    assert set(mine) == {"id", "name", "email", "lang", "rights", "_links"}
    assert {"leads", "contacts", "companies", "tasks", "is_admin", "is_free", "is_active"} <= set(
        mine["rights"]
    )
    last = (
        await sandbox.http.get("/acme/api/v4/users", params={"page": 3, "limit": 2}, headers=inst.auth)
    ).json()
    assert [u["name"] for u in last["_embedded"]["users"]] == ["User 3"]
    assert "next" not in last["_links"]
    assert "prev" in last["_links"]
    past = await sandbox.http.get("/acme/api/v4/users", params={"page": 4, "limit": 2}, headers=inst.auth)
    assert past.status_code == 204
    too_many = await sandbox.http.get("/acme/api/v4/users", params={"limit": 251}, headers=inst.auth)
    assert too_many.status_code == 422

    one = await sandbox.http.get(f"/acme/api/v4/users/{added[1]['id']}", headers=inst.auth)
    assert (one.status_code, one.json()["name"]) == (200, "User 1")
    assert (await sandbox.http.get("/acme/api/v4/users/1", headers=inst.auth)).status_code == 204


async def test_users_need_an_admin_token(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    patched = await sandbox.control("PATCH", "/accounts/acme", {"current_user_admin": False})
    assert patched["current_user_admin"] is False
    for path in (
        "/acme/api/v4/users",
        f"/acme/api/v4/users/{sandbox.state.accounts['acme'].current_user_id}",
    ):
        resp = await sandbox.http.get(path, headers=inst.auth)
        assert_problem(
            resp,
            403,
            {
                "title": "Forbidden",
                "type": "https://httpstatus.es/403",
                "status": 403,
                "detail": "Insufficient rights",
            },
        )
    assert (await sandbox.http.get("/acme/api/v4/account", headers=inst.auth)).status_code == 200


async def test_custom_field_definitions_page_up_to_250(sandbox: Sandbox) -> None:
    inst = await install(sandbox)
    for n in range(60):
        await sandbox.control("POST", "/accounts/acme/custom_fields", {"name": f"F{n}", "type": "text"}, 201)
    page = (
        await sandbox.http.get(
            "/acme/api/v4/contacts/custom_fields", params={"limit": 250}, headers=inst.auth
        )
    ).json()
    assert (page["_total_items"], page["_page_count"], len(page["_embedded"]["custom_fields"])) == (62, 1, 62)
    assert "next" not in page["_links"]
    default = (await sandbox.http.get("/acme/api/v4/contacts/custom_fields", headers=inst.auth)).json()
    assert len(default["_embedded"]["custom_fields"]) == 50
    assert default["_links"]["next"]["href"].endswith("/acme/api/v4/contacts/custom_fields?page=2&limit=50")


def test_custom_fields_seed_fills_every_type_and_keeps_the_rest_of_the_seed() -> None:
    def run(custom_fields: bool) -> KommoSandboxState:
        state = KommoSandboxState()
        # Seeded timestamps count back from the clock's now: one fixed now, so the runs compare across a second.
        state.clock.now = lambda: 1_750_000_000  # type: ignore[method-assign]
        state.create_account("acme")
        seed_contacts(state, "acme", 400, seed=4, custom_fields=custom_fields)
        seed_contacts(state, "acme", 100, seed=5, custom_fields=custom_fields)  # fields and users made once
        return state

    plain, rich, again = run(False), run(True), run(True)
    account, plain_account = rich.accounts["acme"], plain.accounts["acme"]

    def base(c: Contact) -> tuple[Any, ...]:
        return (c.id, c.name, c.created_at, c.updated_at, [f for f in c.fields if f[0] in (771906, 771908)])

    assert [base(c) for c in account.iter_live()] == [base(c) for c in plain_account.iter_live()]
    assert {c.responsible_user_id for c in plain_account.iter_live()} == {plain_account.current_user_id}
    assert len(plain_account.fields) == 2
    assert len(plain_account.users) == 1

    def full(state: KommoSandboxState) -> list[tuple[Any, ...]]:
        return [(c.responsible_user_id, c.fields) for c in state.accounts["acme"].iter_live()]

    assert full(rich) == full(again)
    user_fields = [f for f in account.fields.values() if not f.is_predefined]
    assert sorted(f.type for f in user_fields) == sorted(
        [
            "text",
            "textarea",
            "numeric",
            "checkbox",
            "select",
            "multiselect",
            "radiobutton",
            "date",
            "date_time",
            "birthday",
            "url",
            "streetaddress",
            "smart_address",
        ]
    )
    assert all(
        len(f.enums or []) in (3, 4)
        for f in user_fields
        if f.type in ("select", "multiselect", "radiobutton")
    )
    held = Counter(account.fields[fid].type for c in account.iter_live() for fid, _v in c.fields)
    assert all(held[f.type] > 100 for f in user_fields)
    assert any(all(fid in (771906, 771908) for fid, _v in c.fields) for c in account.iter_live())
    assert Counter(c.responsible_user_id for c in account.iter_live()).keys() == {u.id for u in account.users}
    assert len(account.users) == 4
