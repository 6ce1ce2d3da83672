"""Contract tests of the client's batch writes (``add_notes``, ``update_contacts``) against the Kommo sandbox
over real HTTP on loopback: splitting, request ids, rejected items, limits, 429s and faults."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.connectors.kommo.client import KommoClient
from app.connectors.kommo.exceptions import (
    KommoBatchRejected,
    KommoError,
    KommoRateLimited,
    KommoTransientError,
    KommoValidationError,
    from_response,
)
from app.connectors.kommo.writes import ContactPatch, FieldValuesPatch, NoteIn, TagName
from app.connectors.ratelimit import RateLimiter
from app.context import kommo_budget, tls_context
from app.servers import serve_in_background
from sandbox.kommo import KommoSandboxConfig, create_kommo_sandbox
from tests.support.limits import Unlimited

SUB = "acme"


@dataclass
class Kommo:
    url: str
    http: httpx.AsyncClient
    token: str

    async def ctl(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        resp = await self.http.request(method, f"{self.url}/_sandbox{path}", json=body, params=params)
        assert resp.is_success, (path, resp.status_code, resp.text)
        return resp.json()

    def client(self, limiter: RateLimiter | None = None, batch: int | None = None) -> KommoClient:
        extra = {} if batch is None else {"write_batch_size": batch}
        return KommoClient(
            self.http,
            base_url=f"{self.url}/{SUB}",
            access_token=self.token,
            limiter=limiter or kommo_budget(7),
            **extra,
        )

    async def contacts(self, n: int) -> list[int]:
        made = await self.ctl("POST", f"/accounts/{SUB}/contacts", [{"name": f"C{i}"} for i in range(n)])
        return [c["id"] for c in made["_embedded"]["contacts"]]

    async def notes(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = await self.ctl("GET", f"/accounts/{SUB}/notes")
        return listed

    async def calls(self, endpoint: str) -> dict[str, int]:
        stats = await self.ctl("GET", "/stats")
        return {k: v for k, v in stats["responses"].items() if k.startswith(endpoint + " ")}


@pytest.fixture
async def kommo() -> AsyncIterator[Kommo]:
    # retry_after 1 s instead of Kommo's 300: the tests wait it out.
    app = create_kommo_sandbox(KommoSandboxConfig(retry_after=1))
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(10.0, connect=5.0)) as http,
    ):
        sandbox = Kommo(url, http, "")
        await sandbox.ctl("POST", "/accounts", {"subdomain": SUB})
        integ = await sandbox.ctl("POST", "/integrations", {"redirect_uri": "https://x.example/cb"})
        tokens = await sandbox.ctl("POST", "/tokens", {"client_id": integ["client_id"], "subdomain": SUB})
        sandbox.token = tokens["access_token"]
        yield sandbox


# --- notes --------------------------------------------------------------------------------------------------


async def test_add_notes_splits_calls_and_answers_in_input_order(kommo: Kommo) -> None:
    a, b, c = await kommo.contacts(3)
    notes = [
        NoteIn.common(a, "hello"),
        NoteIn.service_message(b, "Unisender sync", "Unsubscribed from list 101", request_id="unsub-b"),
        NoteIn(
            entity_id=c,
            note_type="call_in",
            params={"uniq": "8f52d38a", "duration": 60, "source": "Twilio", "phone": "+1415"},
        ),
        NoteIn.common(c, "again"),
        NoteIn(entity_id=a, note_type="sms_out", params={"text": "hi", "phone": "+1"}, created_by=0),
    ]
    await kommo.ctl("DELETE", "/stats")

    created = await kommo.client(batch=2).add_notes(notes)

    assert [(n.entity_id, n.request_id) for n in created] == [
        (a, "0"),
        (b, "unsub-b"),
        (c, "2"),
        (c, "3"),
        (a, "4"),
    ]
    assert await kommo.calls("POST /api/v4/contacts/notes") == {"POST /api/v4/contacts/notes 200": 3}
    stored = {n["id"]: n for n in await kommo.notes()}
    assert [stored[n.id]["params"] for n in created] == [note.params for note in notes]
    assert [stored[n.id]["note_type"] for n in created] == [note.note_type for note in notes]
    assert stored[created[4].id]["created_by"] == 0


async def test_add_notes_default_batch_is_100_and_never_meets_the_250_limit(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.ctl("DELETE", "/stats")
    created = await kommo.client().add_notes([NoteIn.common(a, f"n{i}") for i in range(251)])
    assert len({n.id for n in created}) == 251
    assert await kommo.calls("POST /api/v4/contacts/notes") == {"POST /api/v4/contacts/notes 200": 3}

    with pytest.raises(ValueError, match="write_batch_size"):
        kommo.client(batch=251)
    # What the client avoids: Kommo refuses 251 items with a 422, an ordinary validation error.
    raw = await kommo.http.post(
        f"{kommo.url}/{SUB}/api/v4/contacts/notes",
        headers={"Authorization": f"Bearer {kommo.token}"},
        json=[NoteIn.common(a, "x").body()] * 251,
    )
    error = from_response(raw)
    assert type(error) is KommoValidationError
    assert error.status_code == 422


async def test_rejected_notes_name_their_request_ids_and_the_rest_can_be_resent(kommo: Kommo) -> None:
    a, gone = await kommo.contacts(2)
    await kommo.ctl("POST", f"/accounts/{SUB}/contacts/{gone}/delete")
    notes = [
        NoteIn.common(a, "one"),
        NoteIn.common(a, "two"),
        NoteIn.common(a, "three"),
        NoteIn.common(gone, "to a deleted contact"),
        NoteIn(entity_id=a, note_type="common", params={"txt": "no text"}, request_id="bad-params"),
        NoteIn.common(a, "six"),
    ]
    client = kommo.client(batch=2)

    with pytest.raises(KommoBatchRejected) as caught:
        await client.add_notes(notes)

    error = caught.value
    assert error.status_code == 400
    assert error.rejected_request_ids == ("3",)
    assert [(i.request_id, i.code, i.path) for i in error.errors] == [("3", "NotFound", "entity_id")]
    assert error.progress is not None
    assert [n.request_id for n in error.progress.completed] == ["0", "1"]
    assert error.progress.unsaved_request_ids == ("2", "bad-params", "5")
    assert error.progress.uncertain_request_ids == ()
    assert len(await kommo.notes()) == 2  # the rejected call saved nothing

    # The caller drops what was rejected and resends the rest; the next rejection is the bad params.
    by_rid = dict(zip(["0", "1", "2", "3", "bad-params", "5"], notes, strict=True))
    rest = [by_rid[rid].model_copy(update={"request_id": rid}) for rid in error.progress.unsaved_request_ids]
    with pytest.raises(KommoBatchRejected) as again:
        await client.add_notes(rest)
    assert again.value.rejected_request_ids == ("bad-params",)
    assert [(i.code, i.path) for i in again.value.errors] == [("NotBlank", "params.text")]
    assert again.value.progress is not None
    resend = [n for n in rest if n.request_id in again.value.progress.unsaved_request_ids]
    assert [n.request_id for n in await client.add_notes(resend)] == ["2", "5"]
    assert sorted(n["params"]["text"] for n in await kommo.notes()) == ["one", "six", "three", "two"]


async def test_duplicate_request_ids_are_refused_before_sending(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.ctl("DELETE", "/stats")
    with pytest.raises(ValueError, match="used twice"):
        await kommo.client().add_notes([NoteIn.common(a, "x", request_id="1"), NoteIn.common(a, "y")])
    assert await kommo.calls("POST /api/v4/contacts/notes") == {}


# --- contact patches ----------------------------------------------------------------------------------------


async def test_update_contacts_in_calls_of_the_batch_size(kommo: Kommo) -> None:
    made = await kommo.ctl(
        "POST",
        f"/accounts/{SUB}/contacts",
        [
            {
                "name": f"C{i}",
                "custom_fields_values": [
                    {"field_code": "PHONE", "values": [{"value": "+7900", "enum_code": "MOB"}]}
                ],
            }
            for i in range(3)
        ],
        webhooks="0",
    )
    ids = [c["id"] for c in made["_embedded"]["contacts"]]
    patches = [
        ContactPatch(
            id=ids[0],
            name="Renamed",
            custom_fields_values=[
                FieldValuesPatch(
                    field_code="EMAIL", values=[{"value": "r@example.com", "enum_code": "WORK"}]
                ),
                FieldValuesPatch(field_code="PHONE", values=None),
            ],
        ),
        ContactPatch(id=ids[1], tags_to_add=[TagName(name="unsubscribed")], request_id="tag"),
        ContactPatch(id=ids[2], first_name="Ann", last_name="Lee"),
    ]
    await kommo.ctl("DELETE", "/stats")
    client = kommo.client(batch=2)

    updated = await client.update_contacts(patches)

    assert [(u.id, u.request_id) for u in updated] == [(ids[0], "0"), (ids[1], "tag"), (ids[2], "2")]
    assert updated[0].name == "Renamed"
    assert all(u.updated_at for u in updated)
    assert await kommo.calls("PATCH /api/v4/contacts") == {"PATCH /api/v4/contacts 200": 2}
    by_id = {c.id: c for c in await client.get_contacts(ids)}
    assert by_id[ids[0]].name == "Renamed"
    assert by_id[ids[0]].emails == ("r@example.com",)
    assert by_id[ids[1]].tags == ("unsubscribed",)
    raw = await kommo.ctl("GET", f"/accounts/{SUB}/contacts/{ids[0]}")
    assert [f["field_code"] for f in raw["custom_fields_values"]] == ["EMAIL"]  # PHONE cleared
    assert (await kommo.ctl("GET", f"/accounts/{SUB}/contacts/{ids[2]}"))["last_name"] == "Lee"


async def test_update_contacts_not_found_is_rejected_by_request_id(kommo: Kommo) -> None:
    a, b, gone = await kommo.contacts(3)
    await kommo.ctl("POST", f"/accounts/{SUB}/contacts/{gone}/delete")
    client = kommo.client(batch=2)
    patches = [
        ContactPatch(id=a, name="A2"),
        ContactPatch(id=b, name="B2"),
        ContactPatch(id=gone, name="x", request_id="deleted"),
        ContactPatch(id=1, name="y", request_id="unknown"),
        ContactPatch(id=a + 1_000_000, name="z"),
    ]
    with pytest.raises(KommoBatchRejected) as caught:
        await client.update_contacts(patches)
    error = caught.value
    assert error.rejected_request_ids == ("deleted", "unknown")
    assert {(i.code, i.path) for i in error.errors} == {("NotFound", "id")}
    assert error.progress is not None
    assert [u.id for u in error.progress.completed] == [a, b]
    assert error.progress.unsaved_request_ids == ("4",)

    with pytest.raises(ValueError, match="one patch per contact"):
        await client.update_contacts([ContactPatch(id=a, name="1"), ContactPatch(id=a, last_name="2")])
    with pytest.raises(ValueError, match="field_id or field_code"):
        FieldValuesPatch(field_id=1, field_code="EMAIL", values=None)


# --- limits and faults --------------------------------------------------------------------------------------


async def test_the_apps_budget_sends_many_small_batches_without_a_429(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.ctl("DELETE", "/stats")
    started = time.monotonic()
    created = await kommo.client(kommo_budget(7), batch=1).add_notes(
        [NoteIn.common(a, str(i)) for i in range(15)]
    )
    assert len(created) == 15
    stats = await kommo.ctl("GET", "/stats")
    assert stats["rate_limited"] == 0
    assert max(stats["max_calls_in_1s"].values()) <= 7
    assert time.monotonic() - started >= 2 * 1.0 - 0.1  # calls 8 and 15 each wait for a free second


async def test_a_429_mid_batch_pauses_the_limiter_and_reports_what_is_unsaved(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    limiter = kommo_budget(100)  # the app's kind of budget, far above Kommo's 7/s
    client = kommo.client(limiter, batch=1)
    notes = [NoteIn.common(a, str(i)) for i in range(20)]

    with pytest.raises(KommoRateLimited) as caught:
        await client.add_notes(notes)

    error = caught.value
    assert error.retry_after == 1.0
    assert error.progress is not None
    saved = len(error.progress.completed)
    assert saved >= 7  # Kommo's 7 a second, then the 429
    assert error.progress.unsaved_request_ids == tuple(str(i) for i in range(saved, 20))
    assert error.progress.uncertain_request_ids == ()
    assert len(await kommo.notes()) == saved

    # The client paused its limiter for retry_after: the resend (one call, same limiter) waits it out.
    started = time.monotonic()
    rest = [n.model_copy(update={"request_id": str(i)}) for i, n in enumerate(notes) if i >= saved]
    await kommo.client(limiter).add_notes(rest)
    assert time.monotonic() - started >= 0.9
    assert sorted(int(n["params"]["text"]) for n in await kommo.notes()) == list(range(20))


async def test_injected_429_refuses_the_first_call(kommo: Kommo) -> None:
    a, b = await kommo.contacts(2)
    await kommo.ctl("POST", "/faults", {"burst_429": 1})
    client = kommo.client(Unlimited())
    with pytest.raises(KommoRateLimited) as caught:
        await client.update_contacts([ContactPatch(id=a, name="x"), ContactPatch(id=b, name="y")])
    assert caught.value.progress is not None
    assert caught.value.progress.completed == ()
    assert caught.value.progress.unsaved_request_ids == ("0", "1")
    assert [u.name for u in await client.update_contacts([ContactPatch(id=a, name="x")])] == ["x"]


async def test_a_5xx_leaves_its_call_uncertain(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.ctl("POST", "/faults", {"error_rate": 1, "error_status": 503})
    with pytest.raises(KommoTransientError) as caught:
        await kommo.client(batch=2).add_notes([NoteIn.common(a, str(i)) for i in range(3)])
    error = caught.value
    assert error.status_code == 503
    assert error.retryable is True
    assert error.progress is not None
    assert error.progress.uncertain_request_ids == ("0", "1")
    assert error.progress.unsaved_request_ids == ("2",)


# --- the answer matched to what was sent (no sandbox: Kommo's order is not promised) ---------------------------


async def test_results_are_matched_by_request_id_not_position() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        notes = [
            {"id": 100 + i, "entity_id": n["entity_id"], "request_id": n["request_id"]}
            for i, n in enumerate(sent)
        ]
        return httpx.Response(200, json={"_embedded": {"notes": notes[::-1]}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = KommoClient(http, base_url="https://acme.kommo.com", access_token="t", limiter=Unlimited())
        created = await client.add_notes([NoteIn.common(7, "a"), NoteIn.common(8, "b", request_id="b")])
    assert [(n.id, n.entity_id, n.request_id) for n in created] == [(100, 7, "0"), (101, 8, "b")]


async def test_an_answer_that_does_not_match_the_items_sent_is_uncertain() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert len(json.loads(request.content)) == 2
        return httpx.Response(
            200, json={"_embedded": {"notes": [{"id": 1, "entity_id": 7, "request_id": "0"}]}}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = KommoClient(http, base_url="https://acme.kommo.com", access_token="t", limiter=Unlimited())
        with pytest.raises(KommoError) as caught:
            await client.add_notes([NoteIn.common(7, "a"), NoteIn.common(8, "b")])
    assert caught.value.code == "bad_response"
    assert caught.value.progress is not None
    assert caught.value.progress.uncertain_request_ids == ("0", "1")  # answered 200: they may well be saved
