"""The Kommo sandbox's contact notes (spec §11): adding, validation, limits and reading, over loopback HTTP.

Raw httpx only, nothing from app.connectors: the sandbox is checked against the spec, not against our client.
"""

from __future__ import annotations

import httpx

from tests.support.kommo_notes import (
    HAL,
    NOTES,
    TOO_MANY,
    VALID_NOTE,
    VALID_PARAMS,
    Kommo,
    assert_problem,
    bad_request,
)

# --- adding ---------------------------------------------------------------------------------------------------


async def test_add_answers_the_spec_shape_and_the_note_reads_back(kommo: Kommo) -> None:
    a, b = await kommo.contacts(2)
    resp = await kommo.http.post(
        NOTES,
        headers=kommo.auth,
        json=[
            {"entity_id": a, "note_type": "common", "params": {"text": "first"}, "request_id": "r-1"},
            {"entity_id": b, "note_type": "service_message", "params": VALID_PARAMS["service_message"]},
        ],
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == HAL
    body = resp.json()
    base = f"{kommo.http.base_url}".rstrip("/") + "/acme"
    first, second = body["_embedded"]["notes"]
    assert body["_links"] == {"self": {"href": f"{base}/api/v4/contacts/notes"}}
    assert first == {
        "id": first["id"],
        "entity_id": a,
        "request_id": "r-1",
        "_links": {"self": {"href": f"{base}/api/v4/contacts/{a}/notes/{first['id']}"}},
    }
    assert second["request_id"] == "1"  # the index when none was sent
    assert second["entity_id"] == b

    one = await kommo.http.get(f"/acme/api/v4/contacts/{a}/notes/{first['id']}", headers=kommo.auth)
    assert one.status_code == 200
    note = one.json()
    assert set(note) == {
        "id", "entity_id", "created_by", "updated_by", "created_at", "updated_at", "responsible_user_id",
        "group_id", "note_type", "params", "account_id", "is_pinned", "_links",
    }  # fmt: skip
    assert note["note_type"] == "common"
    assert note["params"] == {"text": "first"}
    assert note["is_pinned"] is False
    assert note["created_by"] == note["responsible_user_id"] > 0
    other = await kommo.http.get(f"/acme/api/v4/contacts/{b}/notes/{second['id']}", headers=kommo.auth)
    assert other.json()["params"] == {"service": "Unisender sync", "text": "Unsubscribed"}
    assert await kommo.notes() == [note, other.json()]  # the control API shows the same read model


async def test_add_under_one_contact_takes_the_entity_from_the_path(kommo: Kommo) -> None:
    a, b = await kommo.contacts(2)
    resp = await kommo.http.post(
        f"/acme/api/v4/contacts/{a}/notes",
        headers=kommo.auth,
        json=[{"entity_id": b, "note_type": "common", "params": {"text": "x"}}],
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["_embedded"]["notes"][0]["entity_id"] == a
    assert resp.json()["_links"]["self"]["href"].endswith(f"/acme/api/v4/contacts/{a}/notes")
    single = await kommo.http.post(
        f"/acme/api/v4/contacts/{a}/notes",
        headers=kommo.auth,
        json={"note_type": "sms_in", "params": VALID_PARAMS["sms_in"]},
    )
    assert single.status_code == 200, single.text
    assert [n["entity_id"] for n in await kommo.notes()] == [a, a]


async def test_every_writable_type_is_accepted_and_unknown_params_dropped(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    items = [
        {"entity_id": a, "note_type": t, "params": {**p, "junk": "x"}, "request_id": t}
        for t, p in VALID_PARAMS.items()
    ]
    resp = await kommo.http.post(NOTES, headers=kommo.auth, json=items)
    assert resp.status_code == 200, resp.text
    stored = {n["note_type"]: n["params"] for n in await kommo.notes()}
    assert stored == VALID_PARAMS


async def test_invalid_items_reject_the_whole_batch_keyed_by_request_id(kommo: Kommo) -> None:
    a, gone = await kommo.contacts(2)
    await kommo.control("POST", f"/accounts/acme/contacts/{gone}/delete")
    resp = await kommo.http.post(
        NOTES,
        headers=kommo.auth,
        json=[
            {"entity_id": a, "note_type": "common", "params": {"text": "fine"}, "request_id": "ok"},
            {"entity_id": a, "note_type": "amomail_message", "params": {"text": "x"}, "request_id": "ro"},
            {"entity_id": a, "note_type": "call_in", "params": {"uniq": 5, "duration": "60", "source": "T"}},
            {"entity_id": gone, "note_type": "common", "params": {"text": "x"}, "request_id": "del"},
            {"entity_id": 999, "note_type": "common", "params": {}, "request_id": "nobody"},
            {"note_type": "geolocation", "params": "text", "request_id": 7},
        ],
    )
    assert_problem(
        resp,
        400,
        bad_request(
            [
                {"request_id": "ro", "errors": [
                    {"code": "NotSupportedChoice", "path": "note_type", "detail": "The value you selected is not a valid choice."},
                ]},
                {"request_id": "2", "errors": [
                    {"code": "InvalidType", "path": "params.uniq", "detail": "This value should be of type string."},
                    {"code": "InvalidType", "path": "params.duration", "detail": "This value should be of type int."},
                    {"code": "NotBlank", "path": "params.phone", "detail": "This value should not be blank."},
                ]},
                {"request_id": "del", "errors": [
                    {"code": "NotFound", "path": "entity_id", "detail": "Entity not found"},
                ]},
                {"request_id": "nobody", "errors": [
                    {"code": "NotFound", "path": "entity_id", "detail": "Entity not found"},
                    {"code": "NotBlank", "path": "params.text", "detail": "This value should not be blank."},
                ]},
                {"request_id": "5", "errors": [
                    {"code": "InvalidType", "path": "request_id", "detail": "This value should be of type string."},
                    {"code": "NotBlank", "path": "entity_id", "detail": "This value should not be blank."},
                    {"code": "InvalidType", "path": "params", "detail": "This value should be of type object."},
                ]},
            ]
        ),
    )  # fmt: skip
    assert await kommo.notes() == []  # the valid first item was not saved either


async def test_blank_and_non_array_bodies(kommo: Kommo) -> None:
    blank = await kommo.http.post(NOTES, headers=kommo.auth, content=b"")
    assert blank.status_code == 400
    assert blank.json()["detail"] == "Request data can't be blank"
    obj = await kommo.http.post(NOTES, headers=kommo.auth, json={"note_type": "common"})
    assert obj.json()["validation-errors"][0]["errors"][0]["detail"] == "This value should be of type array."


async def test_text_limit_when_configured(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.control("PATCH", "/config", {"note_text_max": 5})
    resp = await kommo.http.post(
        NOTES,
        headers=kommo.auth,
        json=[{"entity_id": a, "note_type": "common", "params": {"text": "123456"}}],
    )
    assert resp.json()["validation-errors"][0]["errors"][0]["code"] == "TooLong"
    ok = await kommo.http.post(
        NOTES, headers=kommo.auth, json=[{"entity_id": a, "note_type": "common", "params": {"text": "12345"}}]
    )
    assert ok.status_code == 200


async def test_batches_over_250_are_422_and_250_pass(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    note = {"entity_id": a, "note_type": "common", "params": {"text": "x"}}
    assert_problem(await kommo.http.post(NOTES, headers=kommo.auth, json=[note] * 251), 422, TOO_MANY)
    assert await kommo.notes() == []
    full = await kommo.http.post(NOTES, headers=kommo.auth, json=[note] * 250)
    assert full.status_code == 200
    ids = [n["id"] for n in full.json()["_embedded"]["notes"]]
    assert len(set(ids)) == 250
    edits = [{"id": i, "params": {"text": "y"}} for i in ids]
    assert_problem(await kommo.http.patch(NOTES, headers=kommo.auth, json=[*edits, edits[0]]), 422, TOO_MANY)
    under_one = await kommo.http.post(
        f"/acme/api/v4/contacts/{a}/notes", headers=kommo.auth, json=[note] * 251
    )
    assert_problem(under_one, 422, TOO_MANY)


# --- reading --------------------------------------------------------------------------------------------------


async def test_list_pages_filters_and_204_past_the_end(kommo: Kommo) -> None:
    a, b = await kommo.contacts(2)
    empty = await kommo.http.get(NOTES, headers=kommo.auth)
    assert empty.status_code == 204
    assert empty.content == b""
    items = [
        {
            "entity_id": a if i % 2 == 0 else b,
            "note_type": "common" if i < 5 else "sms_out",
            "params": {"text": f"n{i}", "phone": "+1"},
        }
        for i in range(7)
    ]
    made = (await kommo.http.post(NOTES, headers=kommo.auth, json=items)).json()["_embedded"]["notes"]
    ids = [n["id"] for n in made]

    seen: list[int] = []
    url: str | None = f"{NOTES}?limit=3"
    pages = 0
    while url:
        resp = await kommo.http.get(url, headers=kommo.auth)
        assert resp.status_code == 200
        body = resp.json()
        pages += 1
        assert body["_page"] == pages
        assert ("prev" in body["_links"]) == (pages > 1)
        seen += [n["id"] for n in body["_embedded"]["notes"]]
        url = body["_links"].get("next", {}).get("href")
    assert (pages, seen) == (3, ids)
    past = await kommo.http.get(NOTES, params={"limit": 3, "page": 4}, headers=kommo.auth)
    assert past.status_code == 204
    assert past.content == b""

    def listed(resp: httpx.Response) -> list[int]:
        assert resp.status_code == 200, resp.text
        return [n["id"] for n in resp.json()["_embedded"]["notes"]]

    sms = await kommo.http.get(NOTES, params={"filter[note_type]": "sms_out"}, headers=kommo.auth)
    assert listed(sms) == ids[5:]
    both = await kommo.http.get(
        f"{NOTES}?filter[note_type][]=sms_out&filter[note_type][]=common", headers=kommo.auth
    )
    assert listed(both) == ids
    by_id = await kommo.http.get(f"{NOTES}?filter[id][]={ids[1]}&filter[id][]={ids[4]}", headers=kommo.auth)
    assert listed(by_id) == [ids[1], ids[4]]
    of_b = await kommo.http.get(f"/acme/api/v4/contacts/{b}/notes", headers=kommo.auth)
    assert listed(of_b) == [ids[1], ids[3], ids[5]]
    of_b_common = await kommo.http.get(
        f"/acme/api/v4/contacts/{b}/notes",
        params={"filter[note_type]": "common", "limit": 1, "page": 2},
        headers=kommo.auth,
    )
    assert listed(of_b_common) == [ids[3]]
    desc = await kommo.http.get(NOTES, params={"order[id]": "desc", "limit": 2}, headers=kommo.auth)
    assert listed(desc) == ids[:-3:-1]
    assert_problem(await kommo.http.get(NOTES, params={"limit": 251}, headers=kommo.auth), 422, TOO_MANY)
    bad = await kommo.http.get(NOTES, params={"filter[id]": "x"}, headers=kommo.auth)
    assert bad.status_code == 400


async def test_one_note_is_204_when_missing_or_on_another_contact(kommo: Kommo) -> None:
    a, b = await kommo.contacts(2)
    made = await kommo.http.post(f"/acme/api/v4/contacts/{a}/notes", headers=kommo.auth, json=[VALID_NOTE])
    nid = made.json()["_embedded"]["notes"][0]["id"]
    assert (
        await kommo.http.get(f"/acme/api/v4/contacts/{a}/notes/{nid}", headers=kommo.auth)
    ).status_code == 200
    assert (
        await kommo.http.get(f"/acme/api/v4/contacts/{b}/notes/{nid}", headers=kommo.auth)
    ).status_code == 204
    assert (await kommo.http.get(f"/acme/api/v4/contacts/{a}/notes/1", headers=kommo.auth)).status_code == 204
    assert (await kommo.http.get(f"/acme/api/v4/contacts/{a}/notes/x", headers=kommo.auth)).status_code == 404


async def test_a_deleted_contacts_notes_are_hidden_until_restored(kommo: Kommo) -> None:
    (a,) = await kommo.contacts(1)
    await kommo.http.post(f"/acme/api/v4/contacts/{a}/notes", headers=kommo.auth, json=[VALID_NOTE])
    await kommo.control("POST", f"/accounts/acme/contacts/{a}/delete")
    assert (await kommo.http.get(NOTES, headers=kommo.auth)).status_code == 204
    assert len(await kommo.notes()) == 1  # the control API still shows it
    await kommo.control("POST", f"/accounts/acme/contacts/{a}/restore")
    assert (await kommo.http.get(NOTES, headers=kommo.auth)).status_code == 200
