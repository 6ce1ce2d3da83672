"""Contract tests: UnisenderClient against the Unisender sandbox over real HTTP on loopback.

The sandbox (sandbox.unisender) is written from the same spec by another hand and shares no code with the
client, so a wire-format mistake on our side shows up here as a failing call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from app.connectors.base import ImportRow, RowOutcome
from app.connectors.errors import RateLimitedError, TransientError
from app.connectors.ratelimit import RateLimiter
from app.connectors.unisender import (
    HookEvent,
    UnisenderAccessDenied,
    UnisenderAuthError,
    UnisenderClient,
    UnisenderNotFound,
    UnisenderRateLimited,
    UnisenderRequestError,
    UnisenderTransientError,
    read_delivery,
    verify_hook_auth,
)
from app.context import tls_context, unisender_budget
from app.servers import serve_in_background
from tests.support.limits import Unlimited

sandbox = pytest.importorskip("sandbox.unisender", reason="Unisender sandbox not available")

API_KEY = "contract-key-1"
LOGIN = "acme"


class Env:
    """A running sandbox plus a client and a control-API helper."""

    def __init__(self, url: str, http: httpx.AsyncClient, app: FastAPI) -> None:
        self.url = url
        self.http = http
        self.app = app

    def client(
        self, *, api_key: str = API_KEY, limiter: RateLimiter | None = None, **kwargs: Any
    ) -> UnisenderClient:
        return UnisenderClient(
            self.http, base_url=self.url, api_key=api_key, limiter=limiter or Unlimited(), **kwargs
        )

    async def control(self, method: str, path: str, json: Any = None) -> Any:
        response = await self.http.request(method, f"{self.url}/_sandbox{path}", json=json)
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def running_sandbox(**config: Any) -> AsyncIterator[Env]:
    cfg = sandbox.UnisenderSandboxConfig(accounts={API_KEY: LOGIN}, **config)
    app = sandbox.create_unisender_sandbox(cfg)
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(10.0, connect=2.0)) as http,
    ):
        yield Env(url, http, app)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with running_sandbox() as e:
        yield e


async def wait_for(predicate: Callable[[], Awaitable[bool]], *, seconds: float = 5.0) -> None:
    """Poll ``predicate`` every 20 ms, bounded."""
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


# --- credentials ---------------------------------------------------------------------------------------------


async def test_credential_check_ok_and_invalid_key(env: Env) -> None:
    await env.client().check_credentials()
    with pytest.raises(UnisenderAuthError) as caught:
        await env.client(api_key="wrong-key").check_credentials()
    assert caught.value.code == "invalid_api_key"


async def test_access_denied_and_unknown_method(env: Env) -> None:
    client = env.client()
    with pytest.raises(UnisenderRequestError) as caught:
        await client.call("noSuchMethod")
    assert caught.value.code == "unknown_method"
    await env.control("POST", f"/accounts/{API_KEY}/access", {"denied": True})
    with pytest.raises(UnisenderAccessDenied):
        await client.get_lists()


# --- import ----------------------------------------------------------------------------------------------------


async def test_600_row_import_is_split_500_100_and_every_address_lands(env: Env) -> None:
    client = env.client()
    list_id = await client.create_list("CRM mirror")
    rows = [
        ImportRow(email=f"user{i:03d}@example.com", fields=(("Name", f"User {i}"),), list_ids=(list_id,))
        for i in range(600)
    ]
    results = await client.import_contacts(rows)

    assert [r.index for r in results] == list(range(600))
    assert all(r.outcome is RowOutcome.OK for r in results)
    stats = await env.control("GET", "/stats")
    assert stats["by_account"][API_KEY]["importContacts"] == 2
    ledger = (await env.control("GET", f"/accounts/{API_KEY}/ledger"))["entries"]
    per_call: dict[int, int] = {}
    for entry in ledger:
        per_call[entry["call"]] = per_call.get(entry["call"], 0) + 1
    assert sorted(per_call.values(), reverse=True) == [500, 100]
    contacts = await env.control("GET", f"/accounts/{API_KEY}/contacts?limit=1000")
    assert contacts["total"] == 600
    assert {c["email"] for c in contacts["contacts"]} == {row.email for row in rows}
    account = await env.control("GET", f"/accounts/{API_KEY}")
    assert [lst["members"] for lst in account["lists"] if lst["id"] == list_id] == [600]
    ann = await client.get_contact("user123@example.com")
    assert ann is not None
    assert ann.fields.get("Name") == "User 123"


@pytest.mark.parametrize("index_as_string", [True, False])
async def test_rejected_rows_map_to_their_input_index(index_as_string: bool) -> None:
    async with running_sandbox(log_index_as_string=index_as_string) as env:
        client = env.client()
        rows = [ImportRow(email=f"ok{i}@example.com") for i in range(520)]
        rows[2] = ImportRow(email="info@example.com")  # role address
        rows[507] = ImportRow(email="not an address")  # second batch, batch index 7
        results = await client.import_contacts(rows)

        rejected = {r.index: r.code for r in results if r.outcome is RowOutcome.REJECTED}
        assert rejected == {2: "role_address", 507: "invalid_email"}
        assert results[507].message  # the sandbox's human text travels along
        contacts = await env.control("GET", f"/accounts/{API_KEY}/contacts?limit=1000")
        assert contacts["total"] == 518


async def test_delete_column_removes_contacts(env: Env) -> None:
    client = env.client()
    rows = [ImportRow(email=f"d{i}@example.com", fields=(("Name", f"D{i}"),)) for i in range(3)]
    await client.import_contacts(rows)
    results = await client.import_contacts(
        [
            ImportRow(email="d1@example.com", delete=True),
            ImportRow(email="d3@example.com", fields=(("Name", "D3"),)),
        ]
    )
    assert all(r.outcome is RowOutcome.OK for r in results)
    assert await client.get_contact("d1@example.com") is None
    assert await client.get_contact("d0@example.com") is not None
    assert await client.get_contact("d3@example.com") is not None
    ledger = (await env.control("GET", f"/accounts/{API_KEY}/ledger?email=d1@example.com"))["entries"]
    assert [e["op"] for e in ledger] == ["upsert", "delete"]


async def test_unsubscribed_row_never_activates_anything(env: Env) -> None:
    client = env.client()
    list_id = await client.create_list("news")
    await client.import_contacts([ImportRow(email="u@example.com", list_ids=(list_id,))])
    # A fresh address is "new": Unisender refuses to change its status by import; the row reports that.
    (result,) = await client.import_contacts([ImportRow(email="u@example.com", unsubscribed=True)])
    assert result.outcome is RowOutcome.REJECTED
    assert result.code == "status_change_denied"
    contact = await client.get_contact("u@example.com")
    assert contact is not None
    assert contact.status == "new"


# --- reading, lists, fields ---------------------------------------------------------------------------------------


async def test_get_contact_lists_and_fields(env: Env) -> None:
    client = env.client()
    list_a = await client.create_list("A")
    list_b = await client.create_list("B")
    await client.import_contacts(
        [ImportRow(email="Ivan@Example.ru", fields=(("Name", "Иван"),), list_ids=(list_a, list_b))]
    )

    contact = await client.get_contact("ivan@example.ru")
    assert contact is not None
    assert contact.email == "ivan@example.ru"
    assert contact.status == "new"
    assert sorted(contact.list_ids) == sorted([list_a, list_b])
    assert contact.fields["Name"] == "Иван"
    assert await client.get_contact("nobody@example.com") is None

    await client.exclude("ivan@example.ru", [list_b])
    contact = await client.get_contact("ivan@example.ru")
    assert contact is not None
    assert contact.list_ids == (list_a,)
    await client.exclude("nobody@example.com")  # idempotent
    with pytest.raises(UnisenderNotFound):
        await client.exclude("nobody@example.com", missing_ok=False)


async def test_list_and_field_creation(env: Env) -> None:
    client = env.client()
    before = await client.get_lists()
    list_id = await client.create_list("Kommo contacts")
    lists = await client.get_lists()
    assert [(x.id, x.title) for x in lists if x not in before] == [(list_id, "Kommo contacts")]
    with pytest.raises(UnisenderRequestError):
        await client.create_list("Kommo contacts")  # titles are unique

    fields = await client.get_fields()
    assert "Name" in {f.name for f in fields}
    field_id = await client.create_field("city", "string", public_name="Город")
    assert (field_id, "city", "string") in {(f.id, f.name, f.type) for f in await client.get_fields()}
    with pytest.raises(UnisenderRequestError):
        await client.create_field("bad name", "string")


# --- user fields, phone and per-list membership ----------------------------------------------------------------


async def snapshot(env: Env) -> dict[str, Any]:
    contacts: dict[str, Any] = (await env.control("GET", f"/accounts/{API_KEY}/snapshot"))["contacts"]
    return contacts


async def list_statuses(client: UnisenderClient, email: str) -> dict[int, str]:
    """Per-list status as getContact(include_lists=1) answers it (EspContact keeps only the ids)."""
    raw = await client.call("getContact", [("email", email), ("include_lists", "1")])
    return {int(m["id"]): m["status"] for m in raw["lists"]}


async def create_fields(client: UnisenderClient, **types: str) -> None:
    for name, kind in types.items():
        await client.create_field(name, kind)


async def test_fields_phone_joins_excludes_and_unsubscribed_lists_land_exactly(env: Env) -> None:
    client = env.client()
    a, b, c, d = [await client.create_list(title) for title in "ABCD"]
    await create_fields(client, city="string", age="number", born="date", vip="bool", notes="text")
    await client.import_contacts([ImportRow(email="ivan@example.ru", list_ids=(c, d))])

    fields = (
        ("Name", "Иван"),
        ("city", "Москва"),
        ("age", "42.5"),
        ("born", "1990-05-17"),
        ("vip", "1"),
        ("notes", "line 1\nline 2"),
    )
    rows = [
        ImportRow(
            email="ivan@example.ru",
            fields=fields,
            phone="+79261232323",
            list_ids=(a, b),
            excluded_list_ids=(c,),
            unsubscribed_list_ids=(d,),
        ),
        ImportRow(email="ann@example.com", fields=(("Name", "Ann"),), list_ids=(a,)),
    ]
    results = await client.import_contacts(rows)

    assert [r.outcome for r in results] == [RowOutcome.OK, RowOutcome.OK]
    ivan = await client.get_contact("ivan@example.ru")
    assert ivan is not None
    assert ivan.fields == dict(fields)
    assert await list_statuses(client, "ivan@example.ru") == {a: "active", b: "active", d: "unsubscribed"}
    assert await snapshot(env) == {
        "ivan@example.ru": {
            "status": "new",
            "phone": "+79261232323",
            "fields": dict(fields),
            "lists": {
                str(a): {"status": "active"},
                str(b): {"status": "active"},
                str(d): {"status": "unsubscribed"},
            },
        },
        "ann@example.com": {
            "status": "new",
            "phone": None,
            "fields": {"Name": "Ann"},
            "lists": {str(a): {"status": "active"}},
        },
    }


async def test_an_empty_cell_clears_its_field_and_a_missing_one_leaves_it(env: Env) -> None:
    client = env.client()
    await create_fields(client, city="string")
    await client.import_contacts(
        [
            ImportRow(email="a@example.com", fields=(("Name", "A"), ("city", "Riga"))),
            ImportRow(email="b@example.com", fields=(("Name", "B"), ("city", "Oslo"))),
        ]
    )
    calls_before = (await env.control("GET", "/stats"))["by_account"][API_KEY]["importContacts"]

    # Three field sets in one import_contacts call: three importContacts calls, each with its own columns.
    results = await client.import_contacts(
        [
            ImportRow(email="a@example.com", fields=(("Name", "A2"),)),  # city must stay
            ImportRow(email="b@example.com", fields=(("city", ""),)),  # Name must stay, city cleared
            ImportRow(email="c@example.com", fields=(("Name", "C"), ("city", "Rome"))),
        ]
    )

    assert all(r.outcome is RowOutcome.OK for r in results)
    stats = await env.control("GET", "/stats")
    assert stats["by_account"][API_KEY]["importContacts"] == calls_before + 3
    ledger = (await env.control("GET", f"/accounts/{API_KEY}/ledger"))["entries"]
    last = {e["email"]: (e["call"], e["data"]) for e in ledger[-3:]}
    assert len({call for call, _ in last.values()}) == 3
    assert {email: data for email, (_, data) in last.items()} == {
        "a@example.com": {"email": "a@example.com", "Name": "A2"},
        "b@example.com": {"email": "b@example.com", "city": ""},
        "c@example.com": {"email": "c@example.com", "Name": "C", "city": "Rome"},
    }
    state = await snapshot(env)
    assert {email: c["fields"] for email, c in state.items()} == {
        "a@example.com": {"Name": "A2", "city": "Riga"},
        "b@example.com": {"Name": "B"},
        "c@example.com": {"Name": "C", "city": "Rome"},
    }
    b = await client.get_contact("b@example.com")
    assert b is not None
    assert b.fields == {"Name": "B"}


async def test_bad_date_number_and_phone_reject_their_rows_and_the_rest_land(env: Env) -> None:
    client = env.client()
    await create_fields(client, age="number", born="date")
    await client.import_contacts([ImportRow(email="keep@example.com", fields=(("age", "30"),))])

    rows = [
        ImportRow(email="ok1@example.com", fields=(("age", "7"), ("born", "17.05.1990"))),
        ImportRow(email="baddate@example.com", fields=(("age", "7"), ("born", "1990-02-31"))),
        ImportRow(email="badnum@example.com", fields=(("age", "4,5"), ("born", "1990-02-03"))),
        ImportRow(email="badphone@example.com", fields=(("age", "1"),), phone="89261232323"),
        ImportRow(email="keep@example.com", fields=(("age", "thirty"),)),
        ImportRow(email="ok2@example.com", fields=(("age", "-3"),), phone="+4930123456"),
    ]
    results = await client.import_contacts(rows)

    rejected = {r.index: r.code for r in results if r.outcome is RowOutcome.REJECTED}
    assert rejected == {
        1: "invalid_field_value",
        2: "invalid_field_value",
        3: "invalid_phone",
        4: "invalid_field_value",
    }
    assert all(results[i].message for i in rejected)
    state = await snapshot(env)
    assert set(state) == {"keep@example.com", "ok1@example.com", "ok2@example.com"}
    assert state["keep@example.com"]["fields"] == {"age": "30"}  # the rejected row changed nothing
    assert state["ok1@example.com"]["fields"] == {"age": "7", "born": "17.05.1990"}
    assert (state["ok2@example.com"]["fields"], state["ok2@example.com"]["phone"]) == (
        {"age": "-3"},
        "+4930123456",
    )


async def test_an_address_unsubscribed_from_a_list_is_not_made_active_there_by_a_later_row(env: Env) -> None:
    client = env.client()
    list_a = await client.create_list("A")
    list_b = await client.create_list("B")
    await client.import_contacts([ImportRow(email="x@example.com", list_ids=(list_a,))])
    # The contact clicks the unsubscribe link of list A.
    await env.control("POST", f"/accounts/{API_KEY}/contacts/x@example.com/unsubscribe", {"list_id": list_a})

    (result,) = await client.import_contacts([ImportRow(email="x@example.com", list_ids=(list_a, list_b))])

    assert result.outcome is RowOutcome.OK
    assert await list_statuses(client, "x@example.com") == {list_a: "unsubscribed", list_b: "active"}
    assert (await snapshot(env))["x@example.com"]["lists"] == {
        str(list_a): {"status": "unsubscribed"},
        str(list_b): {"status": "active"},
    }


async def test_rows_with_more_than_fifty_fields_land_whole_in_several_calls(env: Env) -> None:
    client = env.client()
    list_id = await client.create_list("many")
    names = [f"f{i:02d}" for i in range(55)]
    await create_fields(client, **dict.fromkeys(names, "string"))
    many = tuple((name, f"v{name}") for name in names)
    rows = [
        ImportRow(email="m1@example.com", fields=many, phone="+79261230001", list_ids=(list_id,)),
        ImportRow(email="m2@example.com", fields=many, phone="12345", list_ids=(list_id,)),  # bad phone
        ImportRow(email="m3@example.com", fields=many, phone="+79261230003", list_ids=(list_id,)),
    ]
    results = await client.import_contacts(rows)

    assert [(r.outcome, r.code) for r in results] == [
        (RowOutcome.OK, None),
        (RowOutcome.REJECTED, "invalid_phone"),
        (RowOutcome.OK, None),
    ]
    # One group, 55 fields: the sandbox refuses a call with more than 50, so this took two.
    assert (await env.control("GET", "/stats"))["by_account"][API_KEY]["importContacts"] == 2
    state = await snapshot(env)
    assert set(state) == {"m1@example.com", "m3@example.com"}  # the rest of m2's fields did not create it
    for email in ("m1@example.com", "m3@example.com"):
        contact = await client.get_contact(email)
        assert contact is not None
        assert contact.fields == dict(many)
        assert contact.list_ids == (list_id,)


async def test_a_phone_of_another_contact_rejects_the_row_and_changes_neither(env: Env) -> None:
    client = env.client()
    await client.import_contacts(
        [
            ImportRow(email="owner@example.com", fields=(("Name", "Owner"),), phone="+79261230000"),
            ImportRow(email="other@example.com", fields=(("Name", "Other"),), phone="+79261231111"),
        ]
    )
    results = await client.import_contacts(
        [
            ImportRow(email="newbie@example.com", fields=(("Name", "New"),), phone="+79261230000"),
            ImportRow(email="other@example.com", fields=(("Name", "Other 2"),), phone="+79261230000"),
            ImportRow(email="owner@example.com", fields=(("Name", "Owner 2"),), phone="+79261232222"),
        ]
    )

    assert [(r.outcome, r.code) for r in results] == [
        (RowOutcome.REJECTED, "owned_by_different_subscribers"),
        (RowOutcome.REJECTED, "owned_by_different_subscribers"),
        (RowOutcome.OK, None),
    ]
    state = await snapshot(env)
    assert {email: (c["fields"]["Name"], c["phone"]) for email, c in state.items()} == {
        "owner@example.com": ("Owner 2", "+79261232222"),  # its new phone replaced the old one
        "other@example.com": ("Other", "+79261231111"),
    }


# --- hooks -----------------------------------------------------------------------------------------------------


def make_receiver(api_key: str) -> tuple[FastAPI, list[HookEvent], list[int]]:
    """A stand-in for our webhook endpoint: verify auth, parse, answer 200 (or 401 on a bad signature)."""
    received: list[HookEvent] = []
    statuses: list[int] = []
    app = FastAPI()

    @app.post("/webhooks/unisender")
    async def hook(request: Request) -> Response:
        body = await request.body()
        if not verify_hook_auth(body, api_key):
            statuses.append(401)
            return Response(status_code=401)
        received.extend(read_delivery(body).events)
        statuses.append(200)
        return Response(status_code=200)

    return app, received, statuses


async def test_hook_registration_and_unsubscribe_delivery(env: Env) -> None:
    client = env.client()
    list_id = await client.create_list("news")
    await client.import_contacts([ImportRow(email="ann@example.com", list_ids=(list_id,))])
    receiver, received, statuses = make_receiver(API_KEY)
    async with serve_in_background(receiver) as hook_base:
        hook_url = f"{hook_base}/webhooks/unisender"
        await client.set_unsubscribe_hook(hook_url)
        hooks = (await env.control("GET", f"/accounts/{API_KEY}/hooks"))["hooks"]
        every = {"email_status": "*", "subscribe": "*", "unsubscribe": "*", "campaign_status": "*"}
        assert [
            (h["hook_url"], h["events"], h["event_format"], h["single_event"], h["status"]) for h in hooks
        ] == [(hook_url, every, "json_post", 0, "active")]

        # The contact clicks the unsubscribe link of one list.
        await env.control(
            "POST", f"/accounts/{API_KEY}/contacts/Ann@example.com/unsubscribe", {"list_id": list_id}
        )

        async def delivered() -> bool:
            return bool(received)

        await wait_for(delivered)

    (event,) = received
    assert (event.email, event.list_ids, event.name, event.unsubscribes) == (
        "ann@example.com",
        (list_id,),
        "unsubscribe",
        True,
    )
    assert statuses == [200]
    deliveries = (await env.control("GET", "/deliveries"))["deliveries"]
    assert [(d["delivered"], d["status_code"]) for d in deliveries] == [(True, 200)]


async def test_a_per_list_unsubscribe_by_import_is_notified_with_its_list(env: Env) -> None:
    client = env.client()
    list_a = await client.create_list("A")
    list_b = await client.create_list("B")
    await client.import_contacts([ImportRow(email="ann@example.com", list_ids=(list_a, list_b))])
    await env.control("POST", f"/accounts/{API_KEY}/contacts/ann@example.com/activate", {})
    receiver, received, _ = make_receiver(API_KEY)
    async with serve_in_background(receiver) as hook_base:
        await client.set_unsubscribe_hook(f"{hook_base}/webhooks/unisender")
        (result,) = await client.import_contacts(
            [ImportRow(email="ann@example.com", unsubscribed_list_ids=(list_a,))]
        )
        assert result.outcome is RowOutcome.OK

        async def delivered() -> bool:
            return bool(received)

        await wait_for(delivered)

    assert [(e.name, e.email, e.list_ids) for e in received] == [
        ("unsubscribe", "ann@example.com", (list_a,))
    ]
    contact = await client.get_contact("ann@example.com")
    assert contact is not None
    assert contact.status == "active"  # only list A, not the address
    assert await list_statuses(client, "ann@example.com") == {list_a: "unsubscribed", list_b: "active"}


async def test_remove_hook_stops_deliveries(env: Env) -> None:
    client = env.client()
    url = "http://127.0.0.1:9/webhooks/unisender"
    await client.set_unsubscribe_hook(url)
    await client.remove_hook(url)
    await client.remove_hook(url)  # removing an absent hook is harmless
    assert (await env.control("GET", f"/accounts/{API_KEY}/hooks"))["hooks"] == []


async def test_hook_with_wrong_key_is_refused_by_the_receiver() -> None:
    async with running_sandbox(hook_max_retries=0) as env:
        client = env.client()
        list_id = await client.create_list("news")
        await client.import_contacts([ImportRow(email="bob@example.com", list_ids=(list_id,))])
        receiver, received, statuses = make_receiver("some-other-key")
        async with serve_in_background(receiver) as hook_base:
            await client.set_unsubscribe_hook(f"{hook_base}/webhooks/unisender")
            await client.unsubscribe("bob@example.com", [list_id])

            async def attempted() -> bool:
                return bool(statuses)

            await wait_for(attempted)
        assert received == []
        assert statuses == [401]


# --- rate limits and faults -------------------------------------------------------------------------------------

# The sandbox's window is scaled down so the test runs in seconds: LIMIT calls per WINDOW seconds (sliding).
LIMIT, WINDOW = 20, 1.0


async def test_the_apps_budget_at_the_sandbox_limit_never_hits_it() -> None:
    # The limiter the app gives each key (ProcessContext.unisender_limiter), at the sandbox's scaled-down
    # window: 2.5 windows' worth of concurrent calls, none refused, every one counted by the provider.
    async with running_sandbox(calls_per_minute=LIMIT, rate_window_seconds=WINDOW) as env:
        client = env.client(limiter=unisender_budget(LIMIT, WINDOW))
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(client.get_lists() for _ in range(int(LIMIT * 2.5))), return_exceptions=True
        )
        elapsed = asyncio.get_running_loop().time() - started
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == []
        stats = await env.control("GET", "/stats")
        assert stats["errors"] == {}
        assert stats["by_account"][API_KEY]["getLists"] == int(LIMIT * 2.5)
        assert elapsed >= 2 * WINDOW  # calls 21-40 and 41-50 each waited for a window: the budget held them


async def test_without_a_budget_the_same_calls_meet_the_limit() -> None:
    # The same load with no client-side budget: the sandbox refuses calls past LIMIT (the test above can fail).
    async with running_sandbox(calls_per_minute=LIMIT, rate_window_seconds=WINDOW) as env:
        client = env.client(limiter=Unlimited(), rate_limit_retry_after=0.05)
        results = await asyncio.gather(
            *(client.get_lists() for _ in range(int(LIMIT * 2.5))), return_exceptions=True
        )
        assert any(isinstance(r, UnisenderRateLimited) for r in results)


async def test_exceeding_the_limit_raises_rate_limited_and_pauses_the_limiter() -> None:
    async with running_sandbox(calls_per_minute=LIMIT, rate_window_seconds=60.0) as env:
        bucket = unisender_budget(1000, 1.0)
        client = env.client(limiter=bucket, rate_limit_retry_after=0.3)
        for _ in range(LIMIT):
            await client.get_lists()
        with pytest.raises(UnisenderRateLimited) as caught:
            await client.get_lists()
        assert isinstance(caught.value, RateLimitedError)
        assert caught.value.code == "api_call_limit_exceeded_for_api_key"
        assert caught.value.retry_after == 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bucket.acquire()  # the client paused the shared bucket
        assert loop.time() - started >= 0.25


@pytest.mark.parametrize(
    ("kind", "cls", "code"),
    [
        ("retry_later", UnisenderTransientError, "retry_later"),
        ("http_503", UnisenderTransientError, "http_503"),
        ("rate_limit", UnisenderRateLimited, "api_call_limit_exceeded_for_api_key"),
        ("rate_limit_ip", UnisenderRateLimited, "api_call_limit_exceeded_for_ip"),
    ],
)
async def test_faults_map_to_retryable_errors(env: Env, kind: str, cls: type[Exception], code: str) -> None:
    client = env.client()
    await env.control(
        "POST", "/faults", {"rate": 1.0, "kinds": [kind], "method": "importContacts", "count": 1}
    )
    with pytest.raises(cls) as caught:
        await client.import_contacts([ImportRow(email="f@example.com")])
    assert type(caught.value) is cls
    assert isinstance(caught.value, TransientError)
    assert caught.value.code == code
    # The fault was one-off: the worker's retry of the same call goes through.
    (result,) = await client.import_contacts([ImportRow(email="f@example.com")])
    assert result.outcome is RowOutcome.OK


async def test_hang_beyond_the_client_timeout_is_transient(env: Env) -> None:
    await env.control("POST", "/faults", {"rate": 1.0, "kinds": ["hang"], "hang_seconds": 1.0, "count": 1})
    async with httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(0.3, connect=1.0)) as impatient:
        client = UnisenderClient(impatient, base_url=env.url, api_key=API_KEY, limiter=Unlimited())
        with pytest.raises(UnisenderTransientError) as caught:
            await client.get_lists()
    assert caught.value.code == "timeout"
