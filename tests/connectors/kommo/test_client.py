"""KommoClient and KommoOAuth against httpx.MockTransport: requests sent, responses and errors mapped."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.connectors.base import ContactPage, OAuthTokens
from app.connectors.errors import (
    AuthError,
    ForbiddenError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RequestError,
    TransientError,
)
from app.connectors.kommo.client import KommoClient
from app.connectors.kommo.exceptions import (
    DEFAULT_RETRY_AFTER,
    KommoAuthError,
    KommoError,
    KommoForbidden,
    KommoInvalidGrant,
    KommoNotFound,
    KommoPaymentRequired,
    KommoRateLimited,
    KommoRequestError,
    KommoTransientError,
    KommoValidationError,
)
from app.connectors.kommo.hosts import AccountHost, host_of_link, parse_account_host
from app.connectors.kommo.oauth import (
    KommoOAuth,
    disable_signature,
    verify_disable_signature,
)

BASE = "https://acme.kommo.com"
PROBLEM = {"content-type": "application/problem+json"}

Handler = Callable[[httpx.Request], httpx.Response]


class RecordingLimiter:
    """Counts acquisitions and records pauses (the one class under test is the client)."""

    def __init__(self) -> None:
        self.acquired = 0
        self.returns = 0
        self.pauses: list[float] = []

    async def acquire(self, cost: float = 1.0) -> None:
        self.acquired += 1

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)

    def returned(self) -> None:
        self.returns += 1


def make_client(
    handler: Handler, limiter: RecordingLimiter | None = None
) -> tuple[KommoClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    client = KommoClient(
        http, base_url=BASE + "/", access_token="tok-123", limiter=limiter or RecordingLimiter()
    )
    return client, seen


def contact_json(
    contact_id: int, *, email: str | None = None, updated_at: int = 1700000000
) -> dict[str, Any]:
    fields = None
    if email is not None:
        fields = [
            {
                "field_id": 3,
                "field_name": "Phone",
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": [{"value": "+7912", "enum_id": 1, "enum_code": "WORK"}],
            },
            {
                "field_id": 5,
                "field_name": "Email",
                "field_code": "EMAIL",
                "field_type": "multitext",
                "values": [{"value": email, "enum_id": 2, "enum_code": "WORK"}],
            },
        ]
    return {
        "id": contact_id,
        "name": f"C{contact_id}",
        "first_name": "",
        "last_name": "",
        "responsible_user_id": 1,
        "created_at": 1,
        "updated_at": updated_at,
        "custom_fields_values": fields,
        "account_id": 9,
        "_embedded": {"tags": [{"id": 1, "name": "vip", "color": None}], "companies": []},
    }


def page_json(contacts: list[dict[str, Any]], *, page: int, has_next: bool) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": f"{BASE}/api/v4/contacts?page={page}&limit=250"}}
    if has_next:
        links["next"] = {"href": f"{BASE}/api/v4/contacts?page={page + 1}&limit=250"}
    return {"_page": page, "_links": links, "_embedded": {"contacts": contacts}}


# --- requests -----------------------------------------------------------------------------------------------


async def test_list_contacts_sends_auth_paging_and_incremental_filter() -> None:
    limiter = RecordingLimiter()
    client, seen = make_client(
        lambda r: httpx.Response(
            200, json=page_json([contact_json(1, email="a@x.com")], page=2, has_next=True)
        ),
        limiter,
    )

    result = await client.list_contacts(page=2, limit=999, updated_since=1700000000)

    [request] = seen
    assert request.method == "GET"
    assert request.url.path == "/api/v4/contacts"
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.url.params.multi_items() == [
        ("page", "2"),
        ("limit", "250"),
        ("filter[updated_at][from]", "1700000000"),
        ("order[updated_at]", "asc"),
    ]
    assert limiter.acquired == 1
    assert result.next_page == 3
    [contact] = result.contacts
    assert (contact.id, contact.emails, contact.tags) == (1, ("a@x.com",), ("vip",))


async def test_the_budget_hears_of_the_return_before_the_body_is_read() -> None:
    """Kommo counted the call before it began to answer: the budget's window may run from the answer's
    headers, not from the end of reading (and decoding) a large page on a busy event loop."""
    order: list[str] = []

    class Ordering(RecordingLimiter):
        def returned(self) -> None:
            order.append("returned")
            super().returned()

    async def body() -> Any:
        order.append("body read")
        yield json.dumps(page_json([contact_json(1, email="a@x.com")], page=1, has_next=False)).encode()

    limiter = Ordering()
    client, _ = make_client(lambda r: httpx.Response(200, content=body()), limiter)
    result = await client.list_contacts(page=1)

    assert order == ["returned", "body read"]
    assert (limiter.acquired, limiter.returns) == (1, 1)
    assert [c.id for c in result.contacts] == [1]


async def test_list_contacts_without_next_link_or_with_204_ends() -> None:
    client, seen = make_client(
        lambda r: httpx.Response(200, json=page_json([contact_json(1)], page=1, has_next=False))
    )
    assert (await client.list_contacts()).next_page is None
    assert "filter[updated_at][from]" not in seen[0].url.params

    client, _ = make_client(lambda r: httpx.Response(204))
    assert await client.list_contacts(page=7) == ContactPage(contacts=[], next_page=None)


async def test_contact_text_is_cleaned_of_control_characters_and_lone_surrogates() -> None:
    """JSON can carry what PostgreSQL cannot store (\\u0000) or UTF-8 cannot encode (a lone \\ud800): the
    client maps contacts without them; tab, LF and CR stay."""
    raw = contact_json(1, email="a\u0000b@x.com")
    raw.update(name="Mary\u0000\u0007\u0085\ud800 Ann\t\n", first_name="M\u0000", last_name="\u001bA")
    raw["_embedded"]["tags"] = [{"id": 1, "name": "v\u0000ip"}]
    body = json.dumps(page_json([raw], page=1, has_next=False))  # \ud800 travels as a JSON escape
    client, _ = make_client(
        lambda r: httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/hal+json"})
    )
    [contact] = (await client.list_contacts()).contacts
    assert contact.name == "Mary Ann\t\n"
    assert (contact.first_name, contact.last_name) == ("M", "A")
    assert contact.emails == ("ab@x.com",)
    assert contact.tags == ("vip",)


async def test_iter_contacts_follows_pages_until_204() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if page > 3:
            return httpx.Response(204)
        ids = [page * 10 + i for i in range(2)]
        return httpx.Response(200, json=page_json([contact_json(i) for i in ids], page=page, has_next=True))

    client, seen = make_client(handler)
    ids = [c.id async for c in client.iter_contacts(limit=2)]
    assert ids == [10, 11, 20, 21, 30, 31]
    assert [r.url.params["page"] for r in seen] == ["1", "2", "3", "4"]


async def test_get_contacts_chunks_ids_by_250_with_array_filter() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ids = [int(v) for v in request.url.params.get_list("filter[id][]")]
        return httpx.Response(
            200, json=page_json([contact_json(i) for i in ids if i % 2], page=1, has_next=False)
        )

    client, seen = make_client(handler)
    ids = list(range(1, 601))
    found = await client.get_contacts([*ids, 1, 3])  # duplicates asked once

    assert [len(r.url.params.get_list("filter[id][]")) for r in seen] == [250, 250, 100]
    assert "filter[id]" not in seen[0].url.params
    assert [c.id for c in found] == [i for i in ids if i % 2]


async def test_add_contact_tags_patches_tags_to_add() -> None:
    client, seen = make_client(lambda r: httpx.Response(200, json={"_embedded": {"contacts": [{"id": 5}]}}))
    await client.add_contact_tags(5, ["unsubscribed", "unsubscribed", "vip"])

    [request] = seen
    assert (request.method, request.url.path) == ("PATCH", "/api/v4/contacts/5")
    assert json.loads(request.content) == {"tags_to_add": [{"name": "unsubscribed"}, {"name": "vip"}]}
    await client.add_contact_tags(5, [])
    assert len(seen) == 1  # nothing to add, no call


async def test_webhook_registry_calls() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            return httpx.Response(
                200,
                json={
                    "id": 1,
                    "destination": body["destination"],
                    "settings": body["settings"],
                    "disabled": False,
                    "sort": 10,
                },
            )
        if request.method == "GET":
            return httpx.Response(
                200,
                json={
                    "_total_items": 1,
                    "_embedded": {
                        "webhooks": [
                            {
                                "id": 1,
                                "destination": "https://hook.example/x",
                                "settings": ["add_contact"],
                                "disabled": False,
                            }
                        ]
                    },
                },
            )
        return httpx.Response(204)

    client, seen = make_client(handler)
    await client.register_webhook("https://hook.example/x", ["add_contact", "update_contact"])
    hooks = await client.list_webhooks("https://hook.example/x")
    await client.delete_webhook("https://hook.example/x")

    assert json.loads(seen[0].content) == {
        "destination": "https://hook.example/x",
        "settings": ["add_contact", "update_contact"],
        "sort": 10,
    }
    assert seen[1].url.params["filter[destination]"] == "https://hook.example/x"
    assert [h.destination for h in hooks] == ["https://hook.example/x"]
    assert (seen[2].method, json.loads(seen[2].content)) == (
        "DELETE",
        {"destination": "https://hook.example/x"},
    )


async def test_get_account() -> None:
    client, _ = make_client(
        lambda r: httpx.Response(
            200,
            json={
                "id": 123,
                "name": "yourname",
                "subdomain": "acme",
                "created_at": 1,
                "current_user_id": 5,
                "country": "BR",
            },
        )
    )
    account = await client.get_account()
    assert (account.id, account.subdomain) == (123, "acme")


def _list_page(
    key: str, path: str, items: list[dict[str, Any]], page: int, next_page: int | None
) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": f"{BASE}{path}?page={page}&limit=250"}}
    if next_page is not None:
        links["next"] = {"href": f"{BASE}{path}?page={next_page}&limit=250"}
    return {"_total_items": 3, "_page": page, "_page_count": 2, "_links": links, "_embedded": {key: items}}


async def test_get_custom_fields_reads_every_page() -> None:
    path = "/api/v4/contacts/custom_fields"
    pages = {
        "1": _list_page(
            "custom_fields",
            path,
            [
                {
                    "id": 3,
                    "name": "Phone",
                    "type": "multitext",
                    "code": "PHONE",
                    "enums": [{"id": 1, "value": "WORK"}],
                },
                {
                    "id": 5,
                    "name": "Email",
                    "type": "multitext",
                    "code": "EMAIL",
                    "enums": [{"id": 2, "value": "WORK"}],
                },
            ],
            1,
            2,
        ),
        "2": _list_page(
            "custom_fields",
            path,
            [{"id": 7, "name": "Plan", "type": "select", "code": None, "enums": [{"id": 9, "value": "Pro"}]}],
            2,
            None,
        ),
    }
    client, seen = make_client(lambda r: httpx.Response(200, json=pages[r.url.params["page"]]))

    fields = await client.get_custom_fields()

    assert [(f.id, f.code, f.options) for f in fields] == [
        (3, "PHONE", ("WORK",)),
        (5, "EMAIL", ("WORK",)),
        (7, None, ("Pro",)),
    ]
    assert [(r.url.path, r.url.params.multi_items()) for r in seen] == [
        (path, [("page", "1"), ("limit", "250")]),
        (path, [("page", "2"), ("limit", "250")]),
    ]


async def test_get_custom_fields_204_is_none_and_a_backward_next_link_is_refused() -> None:
    client, _ = make_client(lambda r: httpx.Response(204))
    assert await client.get_custom_fields() == []

    loop = _list_page(
        "custom_fields", "/api/v4/contacts/custom_fields", [{"id": 1, "name": "A", "type": "text"}], 1, 1
    )
    client, _ = make_client(lambda r: httpx.Response(200, json=loop))
    with pytest.raises(KommoError, match="points back"):
        await client.get_custom_fields()


async def test_get_users_reads_every_page_until_204() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["page"] == "1":
            users = [{"id": 1, "name": "Ann", "email": "a@x.com"}, {"id": 2, "name": "Bo\x00b"}]
            return httpx.Response(200, json=_list_page("users", "/api/v4/users", users, 1, 2))
        return httpx.Response(204)  # the page a stale next link promised is empty

    client, seen = make_client(handler)

    users = await client.get_users()

    assert [(u.id, u.name) for u in users] == [(1, "Ann"), (2, "Bob")]
    assert [r.url.path for r in seen] == ["/api/v4/users", "/api/v4/users"]


async def test_get_users_of_a_non_admin_token_is_forbidden() -> None:
    body = {
        "title": "Forbidden",
        "type": "https://httpstatus.es/403",
        "status": 403,
        "detail": "Insufficient rights",
    }
    client, _ = make_client(lambda r: httpx.Response(403, json=body, headers=PROBLEM))
    with pytest.raises(KommoForbidden):
        await client.get_users()


# --- error mapping ------------------------------------------------------------------------------------------

VALIDATION_400 = {
    "validation-errors": [
        {
            "request_id": "0",
            "errors": [
                {
                    "code": "NotSupportedChoice",
                    "path": "custom_fields_values.0.field_id",
                    "detail": "Not a valid choice.",
                },
                {"code": "InvalidType", "path": "status_id", "detail": "This value should be of type array."},
            ],
        }
    ],
    "title": "Bad Request",
    "type": "https://httpstatus.es/400",
    "status": 400,
    "detail": "Request validation failed",
}


@pytest.mark.parametrize(
    ("response", "kommo_class", "category"),
    [
        (
            httpx.Response(
                500, json={"title": "ErrInternalServer", "status": 500, "detail": "x"}, headers=PROBLEM
            ),
            KommoTransientError,
            TransientError,
        ),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), KommoTransientError, TransientError),
        (httpx.Response(503), KommoTransientError, TransientError),
        (
            httpx.Response(429, json={"title": "Too Many Requests", "status": 429, "retry_after": 3}),
            KommoRateLimited,
            RateLimitedError,
        ),
        (
            httpx.Response(
                401, json={"title": "Unauthorized", "status": 401, "detail": "Invalid user name or password"}
            ),
            KommoAuthError,
            AuthError,
        ),
        (
            httpx.Response(
                401, json={"hint": "Token has been revoked", "status": 401, "title": "Некорректный запрос"}
            ),
            KommoInvalidGrant,
            AuthError,
        ),
        (
            httpx.Response(402, json={"title": "Payment Required", "status": 402}),
            KommoPaymentRequired,
            ForbiddenError,
        ),
        (httpx.Response(403, text="403 Forbidden"), KommoForbidden, ForbiddenError),
        (
            httpx.Response(404, json={"title": "Not Found", "status": 404, "detail": "Cannot GET /x"}),
            KommoNotFound,
            NotFoundError,
        ),
        (httpx.Response(400, json=VALIDATION_400), KommoValidationError, RequestError),
        (
            httpx.Response(
                422, json={"title": "Unprocessable Entity", "status": 422, "detail": "Limit of 250 per page"}
            ),
            KommoValidationError,
            RequestError,
        ),
        (
            httpx.Response(405, json={"title": "Method Not Allowed", "status": 405}),
            KommoRequestError,
            RequestError,
        ),
    ],
)
async def test_status_classes_map_onto_the_error_tree(
    response: httpx.Response, kommo_class: type[KommoError], category: type[Exception]
) -> None:
    client, _ = make_client(lambda r: response)
    with pytest.raises(kommo_class) as caught:
        await client.get_account()
    assert type(caught.value) is kommo_class
    assert isinstance(caught.value, category)
    assert caught.value.status_code == response.status_code
    assert caught.value.retryable is isinstance(caught.value, TransientError)


async def test_validation_errors_are_kept() -> None:
    client, _ = make_client(
        lambda r: httpx.Response(400, json=VALIDATION_400, headers={"x-request-id": "req-1"})
    )
    with pytest.raises(KommoValidationError) as caught:
        await client.add_contact_tags(1, ["x"])
    assert [(e.request_id, e.code, e.path) for e in caught.value.errors] == [
        ("0", "NotSupportedChoice", "custom_fields_values.0.field_id"),
        ("0", "InvalidType", "status_id"),
    ]
    assert caught.value.request_id == "req-1"
    assert "Request validation failed" in str(caught.value)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(429, json={"status": 429, "retry_after": 300}, headers={"retry-after": "5"}), 300.0),
        (httpx.Response(429, json={"status": 429}, headers={"retry-after": "5"}), 5.0),
        (httpx.Response(429, text="Too Many Requests", headers={"retry-after": "2.5"}), 2.5),
        (httpx.Response(429, text="slow down"), DEFAULT_RETRY_AFTER),
        (
            httpx.Response(429, json={"retry_after": "nonsense"}, headers={"retry-after": "-3"}),
            DEFAULT_RETRY_AFTER,
        ),
    ],
)
async def test_429_reads_retry_after_and_pauses_the_limiter(
    response: httpx.Response, expected: float
) -> None:
    limiter = RecordingLimiter()
    client, seen = make_client(lambda r: response, limiter)
    with pytest.raises(KommoRateLimited) as caught:
        await client.list_contacts()
    assert caught.value.retry_after == expected
    assert limiter.pauses == [expected]
    assert len(seen) == 1  # no retry inside the client


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectTimeout("t"),
        httpx.ReadTimeout("t"),
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("eof"),
    ],
)
async def test_transport_failures_are_transient(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client, _ = make_client(handler)
    with pytest.raises(KommoTransientError) as caught:
        await client.list_contacts()
    assert caught.value.__cause__ is exc


async def test_unreadable_success_bodies() -> None:
    client, _ = make_client(lambda r: httpx.Response(200, text="<html>captive portal</html>"))
    with pytest.raises(KommoTransientError):
        await client.list_contacts()
    client, _ = make_client(lambda r: httpx.Response(200, json={"_embedded": {"contacts": [{"id": "x"}]}}))
    with pytest.raises(KommoError) as caught:
        await client.list_contacts()
    assert (
        isinstance(caught.value, PermanentError) is False
    )  # a plain KommoError: not retryable, not a category
    assert caught.value.retryable is False


# --- OAuth --------------------------------------------------------------------------------------------------

TOKEN_OK = {
    "token_type": "Bearer",
    "expires_in": 86400,
    "server_time": 1726573127,
    "access_token": "eyJ.a.b",
    "refresh_token": "def50200r2",
}


def make_oauth(handler: Handler) -> tuple[KommoOAuth, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    oauth = KommoOAuth(
        httpx.AsyncClient(transport=httpx.MockTransport(record)),
        auth_url="https://www.kommo.com/oauth",
        base_url=BASE,
        client_id="cid",
        client_secret="csecret",
        redirect_uri="https://app.example/auth/callback",
    )
    return oauth, seen


def test_authorize_url() -> None:
    oauth, _ = make_oauth(lambda r: httpx.Response(500))
    assert (
        oauth.authorize_url("s t&1")
        == "https://www.kommo.com/oauth?client_id=cid&state=s+t%261&mode=post_message"
    )


async def test_exchange_and_refresh_post_json_to_the_account_host() -> None:
    oauth, seen = make_oauth(lambda r: httpx.Response(200, json=TOKEN_OK))
    tokens = await oauth.exchange_code("def502code")
    await oauth.refresh("def50200r1")

    assert tokens == OAuthTokens(
        access_token="eyJ.a.b", refresh_token="def50200r2", expires_in=86400, server_time=1726573127
    )
    assert [str(r.url) for r in seen] == [f"{BASE}/oauth2/access_token"] * 2
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == {
        "client_id": "cid",
        "client_secret": "csecret",
        "grant_type": "authorization_code",
        "code": "def502code",
        "redirect_uri": "https://app.example/auth/callback",
    }
    assert json.loads(seen[1].content)["grant_type"] == "refresh_token"
    assert json.loads(seen[1].content)["refresh_token"] == "def50200r1"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(
                401,
                json={
                    "hint": "Token has been revoked",
                    "title": "Некорректный запрос",
                    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                    "status": 401,
                    "detail": "В запросе отсутствует ряд параметров или параметры невалидны",
                },
            ),
            KommoInvalidGrant,
        ),
        (
            httpx.Response(400, json={"hint": "Authorization code has expired", "status": 400}),
            KommoInvalidGrant,
        ),
        (httpx.Response(400, text="bad"), KommoInvalidGrant),
        (
            httpx.Response(
                401, json={"title": "Некорректный клиент", "detail": "Авторизация клиента не прошла"}
            ),
            KommoAuthError,
        ),
        (httpx.Response(503, text="unavailable"), KommoTransientError),
    ],
)
async def test_token_endpoint_errors(response: httpx.Response, expected: type[KommoError]) -> None:
    oauth, _ = make_oauth(lambda r: response)
    with pytest.raises(expected) as caught:
        await oauth.refresh("def50200old")
    assert type(caught.value) is expected


def test_disable_signature() -> None:
    sig = disable_signature(32720107, client_id="cid", client_secret="csecret")
    # Independent computation of the documented formula.
    assert sig == hmac.new(b"csecret", b"cid|32720107", hashlib.sha256).hexdigest()
    ok = {"client_id": "cid", "client_secret": "csecret"}
    assert verify_disable_signature("cid", "32720107", sig, **ok)
    assert verify_disable_signature("cid", 32720107, sig.upper(), **ok)
    assert not verify_disable_signature("other", "32720107", sig, **ok)
    assert not verify_disable_signature("cid", "32720108", sig, **ok)
    assert not verify_disable_signature("cid", "32720107", sig[:-1] + "0", **ok)
    assert not verify_disable_signature("cid", "32720107", "", **ok)
    assert not verify_disable_signature("cid", "1 OR 1", sig, **ok)


@pytest.mark.parametrize(
    ("referer", "expected"),
    [
        ("acme.kommo.com", AccountHost("acme", "kommo.com")),
        ("Acme.Kommo.com", AccountHost("acme", "kommo.com")),
        ("etesttask.amocrm.ru", AccountHost("etesttask", "amocrm.ru")),
        ("my-shop.amocrm.com", AccountHost("my-shop", "amocrm.com")),
    ],
)
def test_parse_account_host(referer: str, expected: AccountHost) -> None:
    assert parse_account_host(referer) == expected
    assert parse_account_host(referer).host == referer.lower()


@pytest.mark.parametrize(
    "referer",
    [
        "evil.com",
        "acme.kommo.com.evil.com",
        "kommo.com",
        "www.kommo.com",
        "a.b.kommo.com",
        "",
        "-x.kommo.com",
        "acme.evilkommo.com",
        # Only a bare host, as Kommo sends it: no scheme, port, path, user info, whitespace or trailing dot.
        "https://acme.kommo.com",
        "acme.kommo.com:443",
        "acme.kommo.com/",
        "acme.kommo.com/x",
        "user@acme.kommo.com",
        "acme.kommo.com@evil.com",
        " acme.kommo.com",
        "acme.kommo.com.",
        "acme.kommo.com\n",
        "\uff41cme.kommo.com",
    ],
)
def test_parse_account_host_rejects(referer: str) -> None:
    with pytest.raises(ValueError, match="Kommo account host"):
        parse_account_host(referer)


def test_parse_account_host_uses_the_allow_list() -> None:
    assert parse_account_host("acme.amocrm.ru", domains=["amocrm.ru"]).domain == "amocrm.ru"
    with pytest.raises(ValueError, match="Kommo account host"):
        parse_account_host("acme.kommo.com", domains=["amocrm.ru"])


def test_same_account_across_kommo_and_its_former_domain_only() -> None:
    kommo = AccountHost("acme", "kommo.com")
    assert kommo.same_account(AccountHost("acme", "amocrm.com"))
    assert not kommo.same_account(AccountHost("acme", "amocrm.ru"))
    assert not kommo.same_account(AccountHost("other", "kommo.com"))
    assert host_of_link("https://acme.amocrm.ru") == AccountHost("acme", "amocrm.ru")
    assert host_of_link("https://acme.kommo.com/") == AccountHost("acme", "kommo.com")
    assert host_of_link("not a link") is None
