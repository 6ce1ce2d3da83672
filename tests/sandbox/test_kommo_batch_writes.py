"""The Kommo sandbox's note edits, batch contact PATCH (spec §10) and the auth, rate limit and faults of the
notes endpoints, over loopback HTTP. Raw httpx only, nothing from app.connectors."""

from __future__ import annotations

import asyncio

from tests.support.kommo_notes import (
    NOTES,
    TOO_MANY,
    VALID_NOTE,
    VALID_PARAMS,
    Kommo,
    assert_problem,
    bad_request,
)

# --- editing --------------------------------------------------------------------------------------------------


async def test_patch_replaces_params_echoes_request_ids_and_is_atomic(kommo: Kommo) -> None:
    a, b = await kommo.contacts(2)
    made = await kommo.http.post(
        NOTES, headers=kommo.auth, json=[{**VALID_NOTE, "entity_id": a}, {**VALID_NOTE, "entity_id": b}]
    )
    n1, n2 = (n["id"] for n in made.json()["_embedded"]["notes"])
    resp = await kommo.http.patch(
        NOTES,
        headers=kommo.auth,
        json=[
            {
                "id": n1,
                "note_type": "service_message",
                "params": VALID_PARAMS["service_message"],
                "request_id": "x",
            },
            {"id": n2, "params": {"text": "changed"}},
        ],
    )
    assert resp.status_code == 200, resp.text
    answered = resp.json()["_embedded"]["notes"]
    assert [(n["id"], n["entity_id"], n["request_id"]) for n in answered] == [(n1, a, "x"), (n2, b, "1")]
    stored = {n["id"]: n for n in await kommo.notes()}
    assert stored[n1]["note_type"] == "service_message"
    assert stored[n1]["params"] == VALID_PARAMS["service_message"]
    assert stored[n2]["params"] == {"text": "changed"}

    refused = await kommo.http.patch(
        NOTES,
        headers=kommo.auth,
        json=[
            {"id": n1, "params": {"service": "s", "text": "never saved"}},
            {"id": 1, "params": {"text": "x"}, "request_id": "missing"},
            {"id": n2, "entity_id": a, "params": {"text": "x"}, "request_id": "elsewhere"},
            {"id": n2, "note_type": "sms_in", "request_id": "no-params"},
            {"id": n1, "request_id": "twice"},
        ],
    )
    assert_problem(
        refused,
        400,
        bad_request(
            [
                {"request_id": "missing", "errors": [{"code": "NotFound", "path": "id", "detail": "Entity not found"}]},
                {"request_id": "elsewhere", "errors": [{"code": "NotFound", "path": "id", "detail": "Entity not found"}]},
                {"request_id": "no-params", "errors": [{"code": "NotBlank", "path": "params", "detail": "This value should not be blank."}]},
                {"request_id": "twice", "errors": [{"code": "Duplicate", "path": "id", "detail": "This value is already used."}]},
            ]
        ),
    )  # fmt: skip
    assert {n["id"]: n for n in await kommo.notes()} == stored

    single = await kommo.http.patch(
        f"/acme/api/v4/contacts/{b}/notes/{n2}", headers=kommo.auth, json={"params": {"text": "one"}}
    )
    assert single.status_code == 200, single.text
    wrong = await kommo.http.patch(
        f"/acme/api/v4/contacts/{a}/notes/{n2}", headers=kommo.auth, json={"params": {"text": "no"}}
    )
    assert wrong.json()["validation-errors"][0]["errors"][0]["code"] == "NotFound"
    assert {n["id"]: n["params"] for n in await kommo.notes()}[n2] == {"text": "one"}


# --- batch contact PATCH (§10) ------------------------------------------------------------------------------------


async def test_contact_batch_patch_limit_request_ids_and_not_found(kommo: Kommo) -> None:
    a, b, gone = await kommo.contacts(3)
    await kommo.control("POST", f"/accounts/acme/contacts/{gone}/delete")
    too_many = [{"id": a, "name": "x"}] * 251
    assert_problem(
        await kommo.http.patch("/acme/api/v4/contacts", headers=kommo.auth, json=too_many), 422, TOO_MANY
    )

    ok = await kommo.http.patch(
        "/acme/api/v4/contacts",
        headers=kommo.auth,
        json=[{"id": a, "name": "A2", "request_id": "a"}, {"id": b, "name": "B2"}],
    )
    assert ok.status_code == 200
    first, second = ok.json()["_embedded"]["contacts"]
    assert (first["id"], first["name"], first["request_id"]) == (a, "A2", "a")
    assert set(first) == {"id", "name", "updated_at", "request_id", "_links"}
    assert second["id"] == b

    refused = await kommo.http.patch(
        "/acme/api/v4/contacts",
        headers=kommo.auth,
        json=[
            {"id": a, "name": "never", "request_id": "fine"},
            {"id": gone, "name": "x", "request_id": "deleted"},
            {"id": 1, "name": "x", "request_id": "unknown"},
        ],
    )
    not_found = [{"code": "NotFound", "path": "id", "detail": "Entity not found"}]
    assert_problem(
        refused,
        400,
        bad_request(
            [{"request_id": "deleted", "errors": not_found}, {"request_id": "unknown", "errors": not_found}]
        ),
    )
    current = await kommo.http.get(f"/acme/api/v4/contacts/{a}", headers=kommo.auth)
    assert current.json()["name"] == "A2"


# --- auth, limits and faults ------------------------------------------------------------------------------------


async def test_notes_need_a_token_and_count_in_stats(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    assert (await kommo.http.get(NOTES)).status_code == 401
    assert (await kommo.http.post(NOTES, json=[{**VALID_NOTE, "entity_id": a}])).status_code == 401
    await kommo.http.post(NOTES, headers=kommo.auth, json=[{**VALID_NOTE, "entity_id": a}])
    stats = await kommo.control("GET", "/stats")
    assert stats["responses"]["POST /api/v4/contacts/notes 401"] == 1
    assert stats["responses"]["POST /api/v4/contacts/notes 200"] == 1
    assert stats["responses"]["GET /api/v4/contacts/notes 401"] == 1
    assert await kommo.notes() != []


async def test_notes_share_the_rate_limit_and_faults(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.control("PATCH", "/config", {"rate_limit_rps": 7, "retry_after": 2})
    results = await asyncio.gather(
        *(
            kommo.http.post(NOTES, headers=kommo.auth, json=[{**VALID_NOTE, "entity_id": a}])
            for _ in range(10)
        )
    )
    assert sorted(r.status_code for r in results) == [200] * 7 + [429] * 3
    limited = next(r for r in results if r.status_code == 429)
    assert limited.json()["retry_after"] == 2
    assert len(await kommo.notes()) == 7  # a 429 saves nothing

    await kommo.control("DELETE", "/faults")  # also clears the rate-limit windows
    await kommo.control("POST", "/faults", {"burst_429": 1})
    codes = [(await kommo.http.get(NOTES, headers=kommo.auth)).status_code for _ in range(2)]
    assert codes == [429, 200]
    await kommo.control("POST", "/faults", {"error_rate": 1.0, "error_status": 502})
    failed = await kommo.http.patch(NOTES, headers=kommo.auth, json=[{"id": 1}])
    assert failed.status_code == 502
    assert failed.json()["title"] == "ErrInternalServer"
