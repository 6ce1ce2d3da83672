"""Contract tests: the Kommo connector against the Kommo sandbox over real HTTP on loopback.

The sandbox is written independently from the spec (no shared code), so these tests check that our
encoder/decoder and its agree on the wire: OAuth, paging, filters, tags, webhooks, limits and faults.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.connectors.base import CrmAction, CrmContact, CrmFieldValue
from app.connectors.kommo.client import KommoClient
from app.connectors.kommo.exceptions import (
    KommoAuthError,
    KommoForbidden,
    KommoInvalidGrant,
    KommoRateLimited,
    KommoTransientError,
    KommoValidationError,
)
from app.connectors.kommo.hosts import parse_account_host
from app.connectors.kommo.oauth import KommoOAuth, verify_disable_signature
from app.connectors.kommo.webhooks import parse_webhook
from app.connectors.ratelimit import RateLimiter
from app.context import kommo_budget, tls_context
from app.servers import serve_in_background
from sandbox.kommo import create_kommo_sandbox
from tests.support.limits import TokenBucket, Unlimited

SUBDOMAIN = "acme"
REDIRECT_URI = "https://contactsync.example/auth/kommo/callback"


def kommo_rate() -> RateLimiter:
    """The budget the app gives each Kommo integration (7 calls a second): every contract test runs under it."""
    return kommo_budget(7)


# --- a receiver for webhook deliveries and the disable hook -----------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A minimal ASGI app that records every request and answers 200."""

    requests: list[Received] = field(default_factory=list)

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        for _ in range(10_000):  # bounded: a body arrives in a few chunks
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(
            Received(
                method=scope["method"],
                path=scope["path"],
                query=scope["query_string"].decode(),
                headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
                body=body,
            )
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


# --- fixtures -----------------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    url: str
    control: httpx.AsyncClient
    http: httpx.AsyncClient
    client_id: str
    client_secret: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/{SUBDOMAIN}"

    async def ctl(self, method: str, path: str, json: Any = None, **params: str) -> Any:
        response = await self.control.request(method, f"{self.url}/_sandbox{path}", json=json, params=params)
        assert response.is_success, (path, response.status_code, response.text)
        return response.json() if response.content else None

    async def tokens(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.ctl(
            "POST", "/tokens", {"client_id": self.client_id, "subdomain": SUBDOMAIN}
        )
        return out

    async def client(self, limiter: RateLimiter | None = None) -> KommoClient:
        tokens = await self.tokens()
        return KommoClient(
            self.http,
            base_url=self.base_url,
            access_token=tokens["access_token"],
            limiter=limiter or kommo_rate(),
        )

    def oauth(self) -> KommoOAuth:
        return KommoOAuth(
            self.http,
            auth_url=f"{self.url}/oauth",
            base_url=self.base_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            redirect_uri=REDIRECT_URI,
        )


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    app = create_kommo_sandbox()
    async with (
        serve_in_background(app) as url,
        # Longer than any drain the tests ask the sandbox for (it answers when its deliveries are done).
        httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(40.0, connect=5.0)) as control,
        httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(10.0, connect=5.0)) as http,
    ):
        response = await control.post(f"{url}/_sandbox/accounts", json={"subdomain": SUBDOMAIN})
        assert response.status_code == 201, response.text
        response = await control.post(
            f"{url}/_sandbox/integrations", json={"redirect_uri": REDIRECT_URI, "name": "contactsync"}
        )
        assert response.status_code == 201, response.text
        integration = response.json()
        yield Sandbox(url, control, http, integration["client_id"], integration["client_secret"])


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    app = Receiver()
    async with serve_in_background(app) as url:  # type: ignore[arg-type]
        yield app, url


# --- OAuth --------------------------------------------------------------------------------------------------


async def test_authorize_url_reaches_the_consent_page(sandbox: Sandbox) -> None:
    url = sandbox.oauth().authorize_url("csrf-1")
    response = await sandbox.http.get(url)
    assert response.status_code == 200
    assert "contactsync" in response.text
    assert 'name="state" value="csrf-1"' in response.text


async def test_oauth_exchange_then_refresh(sandbox: Sandbox) -> None:
    granted = await sandbox.ctl(
        "POST", "/authorize", {"client_id": sandbox.client_id, "subdomain": SUBDOMAIN, "state": "csrf-1"}
    )
    query = parse_qs(urlsplit(granted["redirect_url"]).query)
    assert query["state"] == ["csrf-1"]
    assert parse_account_host(query["referer"][0]).subdomain == SUBDOMAIN
    oauth = sandbox.oauth()

    first = await oauth.exchange_code(query["code"][0])
    assert first.expires_in == 86_400
    assert first.server_time is not None
    account = await KommoClient(
        sandbox.http, base_url=sandbox.base_url, access_token=first.access_token, limiter=kommo_rate()
    ).get_account()
    assert account.subdomain == SUBDOMAIN

    second = await oauth.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    account = await KommoClient(
        sandbox.http, base_url=sandbox.base_url, access_token=second.access_token, limiter=kommo_rate()
    ).get_account()
    assert account.id > 0

    # An authorization code is single use.
    with pytest.raises(KommoInvalidGrant):
        await oauth.exchange_code(query["code"][0])


async def test_reusing_a_spent_refresh_token_is_invalid_grant(sandbox: Sandbox) -> None:
    oauth = sandbox.oauth()
    issued = await sandbox.tokens()
    newer = await oauth.refresh(issued["refresh_token"])
    await oauth.refresh(newer.refresh_token)  # the successor is used: the first one is certainly dead

    with pytest.raises(KommoInvalidGrant) as caught:
        await oauth.refresh(issued["refresh_token"])
    assert caught.value.status_code == 401
    assert caught.value.hint == "Token has been revoked"


async def test_wrong_client_secret_is_an_auth_error_not_invalid_grant(sandbox: Sandbox) -> None:
    issued = await sandbox.tokens()
    oauth = KommoOAuth(
        sandbox.http,
        auth_url=f"{sandbox.url}/oauth",
        base_url=sandbox.base_url,
        client_id=sandbox.client_id,
        client_secret="wrong",
        redirect_uri=REDIRECT_URI,
    )
    with pytest.raises(KommoAuthError) as caught:
        await oauth.refresh(issued["refresh_token"])
    assert type(caught.value) is KommoAuthError


async def test_uninstall_calls_the_disable_hook_and_kills_tokens(
    sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    hook, hook_url = receiver
    integration = await sandbox.ctl(
        "POST",
        "/integrations",
        {"redirect_uri": REDIRECT_URI, "disable_hook_url": f"{hook_url}/kommo/disabled"},
    )
    sandbox.client_id, sandbox.client_secret = integration["client_id"], integration["client_secret"]
    client = await sandbox.client()
    issued = await sandbox.tokens()
    await client.get_account()

    result = await sandbox.ctl("POST", "/uninstall", {"client_id": sandbox.client_id, "subdomain": SUBDOMAIN})

    assert result["hook_status"] == 200
    [call] = hook.requests
    query = {k: v[0] for k, v in parse_qs(call.query).items()}
    assert verify_disable_signature(
        query["client_uuid"],
        query["account_id"],
        query["signature"],
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
    )
    assert not verify_disable_signature(
        query["client_uuid"],
        query["account_id"],
        query["signature"],
        client_id=sandbox.client_id,
        client_secret="another-secret",
    )
    with pytest.raises(KommoAuthError):
        await client.get_account()
    with pytest.raises(KommoInvalidGrant):
        await sandbox.oauth().refresh(issued["refresh_token"])


# --- contacts -----------------------------------------------------------------------------------------------


async def test_pagination_returns_each_of_1001_contacts_once(sandbox: Sandbox) -> None:
    seeded = await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/seed", {"count": 1001, "seed": 7})
    assert seeded["created"] == 1001
    await sandbox.ctl("DELETE", "/stats")
    client = await sandbox.client()

    contacts = [c async for c in client.iter_contacts()]

    ids = [c.id for c in contacts]
    assert len(ids) == len(set(ids)) == 1001
    assert set(ids) == set(range(seeded["first_id"], seeded["last_id"] + 1))
    assert sum(len(c.emails) for c in contacts) > 900  # seeded contacts carry 0–3 emails, ~1.4 on average
    stats = await sandbox.ctl("GET", "/stats")
    assert stats["responses"] == {"GET /api/v4/contacts 200": 5}  # 4×250 + 1, no extra call past the end
    assert stats["rate_limited"] == 0


async def test_page_past_the_end_is_empty(sandbox: Sandbox) -> None:
    await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/seed", {"count": 3})
    client = await sandbox.client()
    page = await client.list_contacts(page=2, limit=250)
    assert page.contacts == []
    assert page.next_page is None


async def test_incremental_filter_returns_only_newer_contacts_oldest_first(sandbox: Sandbox) -> None:
    seeded = await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/seed", {"count": 30})
    await sandbox.ctl("POST", "/clock/advance", {"seconds": 3600})
    cutoff = (await sandbox.ctl("GET", "/clock"))["now"]
    changed = [seeded["first_id"] + 20, seeded["first_id"] + 3, seeded["first_id"] + 11]
    for n, contact_id in enumerate(changed):
        await sandbox.ctl(
            "PATCH",
            f"/accounts/{SUBDOMAIN}/contacts",
            [{"id": contact_id, "name": f"Changed {n}"}],
            webhooks="0",
        )
        await sandbox.ctl("POST", "/clock/advance", {"seconds": 5})
    client = await sandbox.client()

    page = await client.list_contacts(updated_since=cutoff, limit=2)
    rest = [c async for c in client.iter_contacts(updated_since=cutoff, limit=2)]

    assert [c.id for c in page.contacts] == changed[:2]
    assert page.next_page == 2
    assert [c.id for c in rest] == changed  # ordered by updated_at, across pages
    assert all(c.updated_at >= cutoff for c in rest)
    assert [c.name for c in rest] == ["Changed 0", "Changed 1", "Changed 2"]


async def test_get_contacts_by_ids_across_chunks(sandbox: Sandbox) -> None:
    seeded = await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/seed", {"count": 300})
    client = await sandbox.client()
    wanted = list(range(seeded["first_id"], seeded["last_id"] + 1, 1))[:260]
    missing = seeded["last_id"] + 1000

    found = await client.get_contacts([*wanted, missing])

    assert sorted(c.id for c in found) == wanted
    assert await client.get_contacts([missing]) == []


async def test_add_contact_tags_keeps_existing_tags(sandbox: Sandbox) -> None:
    created = await sandbox.ctl(
        "POST",
        f"/accounts/{SUBDOMAIN}/contacts",
        [
            {
                "name": "Tagged",
                "_embedded": {"tags": [{"name": "vip"}]},
                "custom_fields_values": [
                    {"field_code": "EMAIL", "values": [{"value": "t@example.com", "enum_code": "WORK"}]}
                ],
            }
        ],
        webhooks="0",
    )
    contact_id = created["_embedded"]["contacts"][0]["id"]
    client = await sandbox.client()

    await client.add_contact_tags(contact_id, ["unsubscribed"])

    [contact] = await client.get_contacts([contact_id])
    assert sorted(contact.tags) == ["unsubscribed", "vip"]
    assert contact.emails == ("t@example.com",)
    raw = await sandbox.ctl("GET", f"/accounts/{SUBDOMAIN}/contacts/{contact_id}")
    assert sorted(t["name"] for t in raw["_embedded"]["tags"]) == ["unsubscribed", "vip"]


# --- webhooks -----------------------------------------------------------------------------------------------


async def test_webhook_registration_and_delivered_bodies_parse(
    sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    hook, hook_url = receiver
    destination = f"{hook_url}/webhooks/kommo/1?token=t0k"
    client = await sandbox.client()
    events = ["add_contact", "update_contact", "delete_contact", "restore_contact"]

    await client.register_webhook(destination, events)

    [registered] = await client.list_webhooks(destination)
    assert registered.destination == destination
    assert sorted(registered.settings) == sorted(events)
    assert registered.disabled is False

    created = await sandbox.ctl(
        "POST",
        f"/accounts/{SUBDOMAIN}/contacts",
        [
            {
                "name": "Webhook Person",
                "custom_fields_values": [
                    {"field_code": "PHONE", "values": [{"value": "+100", "enum_code": "WORK"}]},
                    {
                        "field_code": "EMAIL",
                        "values": [
                            {"value": "hook@example.com", "enum_code": "WORK"},
                            {"value": "hook2@example.com", "enum_code": "PRIV"},
                        ],
                    },
                ],
            }
        ],
    )
    contact_id = created["_embedded"]["contacts"][0]["id"]
    await client.add_contact_tags(contact_id, ["x"])
    await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/contacts/{contact_id}/delete")
    await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/contacts/{contact_id}/restore")
    drained = await sandbox.ctl("POST", "/deliveries/drain", {"timeout": 30})
    assert drained["drained"] is True

    assert hook.requests, "no webhook was delivered"
    seen: list[tuple[CrmAction, int, tuple[str, ...] | None]] = []
    for request in hook.requests:
        assert request.method == "POST"
        assert request.query == "token=t0k"
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        batch = parse_webhook(request.body)
        assert batch.subdomain == SUBDOMAIN
        assert batch.account_id is not None
        seen += [(e.action, e.contact_id, e.contact.emails if e.contact else None) for e in batch.events]
    both = ("hook@example.com", "hook2@example.com")
    assert seen == [
        (CrmAction.ADD, contact_id, both),
        (CrmAction.UPDATE, contact_id, both),
        (CrmAction.DELETE, contact_id, None),
        (CrmAction.RESTORE, contact_id, both),
    ]

    await client.delete_webhook(destination)
    assert await client.list_webhooks() == []


async def test_batched_bodies_with_many_contacts_and_actions_parse(
    sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    hook, hook_url = receiver
    await sandbox.ctl("PATCH", "/config", {"batch_window_ms": 300, "account_block_first": False})
    client = await sandbox.client()
    await client.register_webhook(f"{hook_url}/hook", ["add_contact", "update_contact", "delete_contact"])

    created = await sandbox.ctl(
        "POST",
        f"/accounts/{SUBDOMAIN}/contacts",
        [
            {
                "name": f"Batch {n}",
                "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": f"b{n}@example.com"}]}],
            }
            for n in range(3)
        ],
    )
    ids = [c["id"] for c in created["_embedded"]["contacts"]]
    await sandbox.ctl("PATCH", f"/accounts/{SUBDOMAIN}/contacts", [{"id": ids[1], "name": "Batch 1b"}])
    await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/contacts/{ids[2]}/delete")
    drained = await sandbox.ctl("POST", "/deliveries/drain", {"timeout": 30})
    assert drained["drained"] is True

    batches = [parse_webhook(request.body) for request in hook.requests]
    events = [e for batch in batches for e in batch.events]
    assert max(len(batch.events) for batch in batches) > 1  # several contacts/actions shared a body
    assert all(batch.subdomain == SUBDOMAIN for batch in batches)
    assert sorted((e.action.value, e.contact_id) for e in events) == sorted(
        [("add", i) for i in ids] + [("update", ids[1]), ("delete", ids[2])]
    )
    adds = {e.contact_id: e.contact.emails for e in events if e.action is CrmAction.ADD and e.contact}
    assert adds == {i: (f"b{n}@example.com",) for n, i in enumerate(ids)}


async def test_invalid_webhook_destination_is_a_validation_error(sandbox: Sandbox) -> None:
    client = await sandbox.client()
    with pytest.raises(KommoValidationError) as caught:
        await client.register_webhook("not a url", ["add_contact"])
    assert [e.path for e in caught.value.errors] == ["destination.destination"]


# --- limits and faults --------------------------------------------------------------------------------------


async def calls_until_rate_limited(client: KommoClient, limit: int) -> tuple[int, KommoRateLimited]:
    """How many calls succeeded before the first 429, and that 429 (fails if none came within ``limit``)."""
    for calls in range(limit):
        try:
            await client.get_account()
        except KommoRateLimited as exc:
            return calls, exc
    pytest.fail(f"no 429 within {limit} calls")


async def test_rate_limit_is_honoured_by_the_apps_budget(sandbox: Sandbox) -> None:
    client = await sandbox.client(kommo_rate())
    await sandbox.ctl("DELETE", "/stats")

    started = time.monotonic()
    for _ in range(30):
        await client.get_account()
    elapsed = time.monotonic() - started

    stats = await sandbox.ctl("GET", "/stats")
    assert stats["rate_limited"] == 0
    assert stats["responses"] == {"GET /api/v4/account 200": 30}
    assert max(stats["max_calls_in_1s"].values()) <= 7
    # Call n+7 leaves a second after call n returned: calls 8, 15, 22 and 29 each wait for one.
    assert elapsed >= 4 * 1.0 - 0.05


async def test_default_burst_bucket_overruns_kommos_sliding_window(sandbox: Sandbox) -> None:
    # Documents why the app's budget is a window, not a bucket: 7 immediate calls, then one 1/7 s later = 8 in
    # one second.
    client = await sandbox.client(TokenBucket(7))
    calls, _ = await calls_until_rate_limited(client, 30)
    assert calls >= 7  # 7 on an idle machine: the 8th call comes 1/7 s after the first


async def test_concurrent_callers_share_the_budget(sandbox: Sandbox) -> None:
    limiter = kommo_rate()
    clients = [await sandbox.client(limiter) for _ in range(3)]  # one limiter per credential, many jobs
    await sandbox.ctl("DELETE", "/stats")

    await asyncio.gather(*(c.get_account() for c in clients for _ in range(5)))

    stats = await sandbox.ctl("GET", "/stats")
    assert stats["rate_limited"] == 0
    assert stats["responses"] == {"GET /api/v4/account 200": 15}
    assert max(stats["max_calls_in_1s"].values()) <= 7


async def test_app_kommo_budget_allows_bursts_without_429(sandbox: Sandbox) -> None:
    # The limiter the app uses for Kommo (ProcessContext.kommo_limiter). A plain sliding window, even with a
    # 25 % margin, drew an occasional 429 with concurrent callers on a loaded 2-CPU box.
    client = await sandbox.client(kommo_budget(7))
    await sandbox.ctl("DELETE", "/stats")

    started = time.monotonic()
    await asyncio.gather(*(client.get_account() for _ in range(15)))
    elapsed = time.monotonic() - started

    stats = await sandbox.ctl("GET", "/stats")
    assert stats["rate_limited"] == 0
    assert max(stats["max_calls_in_1s"].values()) == 7  # full bursts of 7, never 8
    assert elapsed >= 2 * 1.0 - 0.1


async def test_unlimited_burst_meets_429_with_retry_after(sandbox: Sandbox) -> None:
    await sandbox.ctl("PATCH", "/config", {"retry_after": 2})
    client = await sandbox.client(kommo_budget(100))  # the app's kind of budget, far above Kommo's 7/s

    _, error = await calls_until_rate_limited(client, 20)
    assert error.retry_after == 2.0
    assert error.status_code == 429

    # The client paused its limiter: the next call waits out retry_after, then succeeds.
    started = time.monotonic()
    await client.get_account()
    assert time.monotonic() - started >= 1.9


async def test_repeated_429s_escalate_to_a_403_block(sandbox: Sandbox) -> None:
    await sandbox.ctl("PATCH", "/config", {"rate_limit_rps": 1, "block_after_429s": 1, "block_seconds": 60})
    client = await sandbox.client(Unlimited())  # no client-side budget: provoke the provider

    await client.get_account()
    with pytest.raises(KommoRateLimited):
        await client.get_account()
    with pytest.raises(KommoForbidden) as caught:
        await client.get_account()
    assert caught.value.status_code == 403
    assert caught.value.retryable is False


async def test_injected_5xx_is_transient(sandbox: Sandbox) -> None:
    client = await sandbox.client()
    await sandbox.ctl("POST", "/faults", {"error_rate": 1, "error_status": 503})
    with pytest.raises(KommoTransientError) as caught:
        await client.list_contacts()
    assert caught.value.status_code == 503
    assert caught.value.retryable is True

    await sandbox.ctl("DELETE", "/faults")
    await client.get_account()


async def test_injected_429_burst_is_rate_limited(sandbox: Sandbox) -> None:
    await sandbox.ctl("PATCH", "/config", {"retry_after": 1})
    client = await sandbox.client()
    await sandbox.ctl("POST", "/faults", {"burst_429": 1})

    with pytest.raises(KommoRateLimited) as caught:
        await client.get_contacts([1, 2, 3])
    assert caught.value.retry_after == 1.0

    started = time.monotonic()
    await client.get_account()
    assert time.monotonic() - started >= 0.9


async def test_sandbox_latency_beyond_our_timeout_is_transient(sandbox: Sandbox) -> None:
    await sandbox.ctl("POST", "/faults", {"latency_ms": 1500})
    tokens = await sandbox.tokens()
    async with httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(0.5, connect=2.0)) as impatient:
        client = KommoClient(
            impatient, base_url=sandbox.base_url, access_token=tokens["access_token"], limiter=kommo_rate()
        )
        with pytest.raises(KommoTransientError) as caught:
            await client.get_account()
    assert caught.value.code == "timeout"
    await sandbox.ctl("DELETE", "/faults")


async def test_bad_token_is_an_auth_error(sandbox: Sandbox) -> None:
    client = KommoClient(
        sandbox.http, base_url=sandbox.base_url, access_token="not-a-token", limiter=kommo_rate()
    )
    with pytest.raises(KommoAuthError) as caught:
        await client.list_contacts()
    assert caught.value.status_code == 401


# --- custom fields of every type, users ---------------------------------------------------------------------


async def _field(sandbox: Sandbox, name: str, type_: str, enums: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "type": type_}
    if enums is not None:
        body["enums"] = enums
    made: dict[str, Any] = await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/custom_fields", body)
    return made


async def _webhook_contacts(
    sandbox: Sandbox, hook: Receiver, client: KommoClient
) -> dict[tuple[CrmAction, int], CrmContact]:
    drained = await sandbox.ctl("POST", "/deliveries/drain", {"timeout": 30})
    assert drained["drained"] is True
    out: dict[tuple[CrmAction, int], CrmContact] = {}
    for request in hook.requests:
        for event in parse_webhook(request.body).events:
            assert event.contact is not None
            out[(event.action, event.contact_id)] = event.contact
    return out


def _mapped(contact: CrmContact) -> tuple[object, ...]:
    return (contact.fields, contact.responsible_user_id, contact.created_at, contact.emails)


async def test_every_field_type_reads_the_same_by_rest_and_by_webhook(
    sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    hook, hook_url = receiver
    client = await sandbox.client()
    await client.register_webhook(f"{hook_url}/hook", ["add_contact", "update_contact"])
    owner = await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/users", {"name": "Owner"})
    f = {
        t: await _field(sandbox, f"F {t}", t, ["Free", "Pro", "Max"] if t in options else None)
        for options in [{"select", "multiselect", "radiobutton"}]
        for t in [
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
    }
    enum = {t: [e["id"] for e in f[t]["enums"] or []] for t in f}

    def value(t: str, *values: dict[str, Any]) -> dict[str, Any]:
        return {"field_id": f[t]["id"], "values": list(values)}

    created = await sandbox.ctl(
        "POST",
        f"/accounts/{SUBDOMAIN}/contacts",
        [
            {
                "name": "Every Type",
                "responsible_user_id": owner["id"],
                "created_at": 1700000000,
                "custom_fields_values": [
                    {"field_code": "EMAIL", "values": [{"value": "every@example.com"}]},
                    value("text", {"value": "Recife"}),
                    value("textarea", {"value": "two\nlines"}),
                    value("numeric", {"value": 3.0}),
                    value("checkbox", {"value": True}),
                    value("select", {"value": "Pro"}),
                    value(
                        "multiselect",
                        {"enum_id": enum["multiselect"][2]},
                        {"enum_id": enum["multiselect"][0]},
                    ),
                    value("radiobutton", {"enum_id": enum["radiobutton"][1]}),
                    value("date", {"value": "2024-05-01T00:00:00+00:00"}),  # as Kommo's PHP library writes it
                    value("date_time", {"value": 1714560000}),
                    value("birthday", {"value": 1465948800}),
                    value("url", {"value": "https://every.example.com/"}),
                    value("streetaddress", {"value": "Rua A, 1"}),
                    value(
                        "smart_address",
                        {"value": "Recife", "enum_code": "city"},
                        {"value": "Rua A, 1", "enum_code": "address_line_1"},
                        {"value": "BR", "enum_code": "country"},
                    ),
                ],
            },
            {
                "name": "Unchecked",
                "custom_fields_values": [
                    value("checkbox", {"value": False}),
                    value("numeric", {"value": "1.5"}),
                ],
            },
        ],
    )
    every, unchecked = (c["id"] for c in created["_embedded"]["contacts"])
    await sandbox.ctl(
        "PATCH",
        f"/accounts/{SUBDOMAIN}/contacts",
        [{"id": every, "custom_fields_values": [value("text", {"value": "Olinda"})]}],
    )

    by_webhook = await _webhook_contacts(sandbox, hook, client)
    listed = {c.id: c for c in (await client.list_contacts()).contacts}
    fetched = {c.id: c for c in await client.get_contacts([every, unchecked])}

    expected = (
        (
            CrmFieldValue(sandbox_field_id("EMAIL"), ("every@example.com",)),
            CrmFieldValue(f["text"]["id"], ("Olinda",)),
            CrmFieldValue(f["textarea"]["id"], ("two\nlines",)),
            CrmFieldValue(f["numeric"]["id"], ("3",)),
            CrmFieldValue(f["checkbox"]["id"], ("1",)),
            CrmFieldValue(f["select"]["id"], ("Pro",)),
            CrmFieldValue(f["multiselect"]["id"], ("Max", "Free")),
            CrmFieldValue(f["radiobutton"]["id"], ("Pro",)),
            CrmFieldValue(f["date"]["id"], ("1714521600",)),
            CrmFieldValue(f["date_time"]["id"], ("1714560000",)),
            CrmFieldValue(f["birthday"]["id"], ("1465948800",)),
            CrmFieldValue(f["url"]["id"], ("https://every.example.com/",)),
            CrmFieldValue(f["streetaddress"]["id"], ("Rua A, 1",)),
            CrmFieldValue(f["smart_address"]["id"], ("Rua A, 1", "Recife", "BR")),  # parts in their own order
        ),
        owner["id"],
        1700000000,
        ("every@example.com",),
    )
    assert _mapped(listed[every]) == _mapped(fetched[every]) == expected
    assert _mapped(by_webhook[(CrmAction.UPDATE, every)]) == expected
    # The add delivery carried the contact before the PATCH: only the text differs.
    added = by_webhook[(CrmAction.ADD, every)]
    assert added.fields[1] == CrmFieldValue(f["text"]["id"], ("Recife",))
    assert added.fields[2:] == expected[0][2:]  # type: ignore[index]

    assert listed[unchecked].fields == (
        CrmFieldValue(f["checkbox"]["id"], ("0",)),
        CrmFieldValue(f["numeric"]["id"], ("1.5",)),
    )
    assert (
        _mapped(by_webhook[(CrmAction.ADD, unchecked)])
        == _mapped(fetched[unchecked])
        == _mapped(listed[unchecked])
    )


def sandbox_field_id(code: str) -> int:
    """Ids of the predefined fields of the first sandbox account (its docstring: EMAIL 771908)."""
    return {"PHONE": 771906, "EMAIL": 771908}[code]


async def test_seeded_contacts_with_every_type_read_the_same_by_rest_and_by_webhook(
    sandbox: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    hook, hook_url = receiver
    client = await sandbox.client()
    await client.register_webhook(f"{hook_url}/hook", ["add_contact"])
    await sandbox.ctl(
        "POST",
        f"/accounts/{SUBDOMAIN}/seed",
        {"count": 300, "seed": 5, "custom_fields": True, "fire_webhooks": True},
    )

    by_webhook = await _webhook_contacts(sandbox, hook, client)
    by_rest = [c async for c in client.iter_contacts()]

    assert len(by_rest) == len(by_webhook) == 300
    for contact in by_rest:
        assert _mapped(by_webhook[(CrmAction.ADD, contact.id)]) == _mapped(contact), contact.id
    definitions = {d.id: d for d in await client.get_custom_fields()}
    seen_types = {definitions[v.field_id].type for c in by_rest for v in c.fields}
    assert seen_types >= {
        "text", "textarea", "numeric", "checkbox", "select", "multiselect", "radiobutton",
        "date", "date_time", "birthday", "url", "streetaddress", "smart_address", "multitext",
    }  # fmt: skip
    assert any(not ({definitions[v.field_id].type for v in c.fields} - {"multitext"}) for c in by_rest)
    users = {u.id for u in await client.get_users()}
    assert {c.responsible_user_id for c in by_rest} <= users
    assert len({c.responsible_user_id for c in by_rest}) > 1


async def test_get_custom_fields_and_get_users_read_every_page(sandbox: Sandbox) -> None:
    made = [await _field(sandbox, f"Field {n}", "text") for n in range(260)]
    added = [
        await sandbox.ctl("POST", f"/accounts/{SUBDOMAIN}/users", {"name": f"User {n}"}) for n in range(260)
    ]
    await sandbox.ctl("DELETE", "/stats")
    client = await sandbox.client()

    fields = await client.get_custom_fields()
    users = await client.get_users()

    assert [(d.code, d.type) for d in fields[:2]] == [("PHONE", "multitext"), ("EMAIL", "multitext")]
    assert fields[1].options == ("WORK", "PRIV", "OTHER")
    assert [(d.id, d.name, d.code) for d in fields[2:]] == [(m["id"], m["name"], None) for m in made]
    assert [(u.id, u.name) for u in users[1:]] == [(a["id"], a["name"]) for a in added]
    assert users[0].name == "Admin"  # the account's own user, whom the tokens act as
    stats = await sandbox.ctl("GET", "/stats")
    assert stats["responses"] == {"GET /api/v4/contacts/custom_fields 200": 2, "GET /api/v4/users 200": 2}


async def test_get_users_with_a_non_admin_token_is_forbidden(sandbox: Sandbox) -> None:
    await sandbox.ctl("PATCH", f"/accounts/{SUBDOMAIN}", {"current_user_admin": False})
    client = await sandbox.client()
    with pytest.raises(KommoForbidden) as caught:
        await client.get_users()
    assert caught.value.status_code == 403
    assert await client.get_custom_fields()  # other calls are not admin-only
