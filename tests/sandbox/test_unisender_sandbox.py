"""The Unisender sandbox answers like the real classic API (as its public docs describe it), over loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from hypothesis import given, settings
from hypothesis import strategies as st

from app.context import tls_context
from app.servers import serve_in_background
from sandbox.unisender import SandboxState, UnisenderSandboxConfig, create_unisender_sandbox
from sandbox.unisender.phpform import build_params, decode_urlencoded

FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Sandbox:
    url: str
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def state(self) -> SandboxState:
        state: SandboxState = self.app.state.unisender
        return state


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    app = create_unisender_sandbox(
        UnisenderSandboxConfig(hook_retry_interval_seconds=0.05, hook_max_retries=2)
    )
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), base_url=url, timeout=10) as http,
    ):
        yield Sandbox(url, app, http)


@pytest.fixture
async def key(sandbox: Sandbox) -> str:
    """A fresh account per test (isolation without resetting the shared app)."""
    response = await sandbox.http.post("/_sandbox/accounts", json={"api_key": "k" + uuid.uuid4().hex})
    assert response.status_code == 200
    return str(response.json()["api_key"])


async def call(
    sb: Sandbox, method: str, key: str | None, body: str | dict[str, Any] = "", lang: str = "en"
) -> Any:
    """POST a form-encoded call the way the official PHP wrapper does; returns the decoded JSON."""
    if isinstance(body, dict):
        body = str(httpx.QueryParams(body))
    if key is not None:
        body = f"api_key={key}&{body}" if body else f"api_key={key}"
    response = await sb.http.post(f"/{lang}/api/{method}?format=json", content=body.encode(), headers=FORM)
    assert response.status_code == 200, response.text
    return response.json()


def import_body(columns: list[str], rows: list[list[str]], **extra: str) -> dict[str, str]:
    body: dict[str, str] = {f"field_names[{i}]": c for i, c in enumerate(columns)}
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            body[f"data[{r}][{c}]"] = value
    body.update(extra)
    return body


async def contact(sb: Sandbox, key: str, email: str) -> dict[str, Any]:
    response = await sb.http.get(f"/_sandbox/accounts/{key}/contacts/{email}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def new_list(sb: Sandbox, key: str, title: str = "Main") -> int:
    answer = await call(sb, "createList", key, {"title": title})
    return int(answer["result"]["id"])


# --- transport and envelope ---------------------------------------------------------------------------


async def test_missing_and_wrong_api_key(sandbox: Sandbox, key: str) -> None:
    assert (await call(sandbox, "getLists", None))["code"] == "invalid_api_key"
    wrong = await call(sandbox, "getLists", "nope" + key)
    assert wrong["code"] == "invalid_api_key"
    assert "result" not in wrong
    assert (await call(sandbox, "getLists", key)) == {"result": []}


async def test_unknown_method_and_lang(sandbox: Sandbox, key: str) -> None:
    assert (await call(sandbox, "getListz", key))["code"] == "unknown_method"
    assert (await call(sandbox, "getlists", key))["code"] == "unknown_method"  # case-sensitive
    for lang in ("ru", "en", "it", "ua"):
        assert (await call(sandbox, "getLists", key, lang=lang)) == {"result": []}
    response = await sandbox.http.get("/de/api/getLists", params={"api_key": key})
    assert response.status_code == 404


async def test_get_with_query_params_and_ignored_extras(sandbox: Sandbox, key: str) -> None:
    params = {"api_key": key, "format": "json", "platform": "contactsync tests", "test_mode": "1"}
    response = await sandbox.http.get("/ru/api/getFields", params=params)
    assert response.status_code == 200
    fields = response.json()["result"]
    assert fields == [
        {"id": 1, "name": "Name", "public_name": "Имя", "type": "string", "is_visible": 1, "view_pos": 1}
    ]


async def test_json_body_is_not_read(sandbox: Sandbox, key: str) -> None:
    response = await sandbox.http.post("/en/api/getLists", json={"api_key": key})
    assert response.json()["code"] == "invalid_api_key"
    body = {"field_names": ["email"], "data": [["a@example.com"]]}
    response = await sandbox.http.post(f"/en/api/importContacts?api_key={key}", json=body)
    assert response.status_code == 200
    assert response.json()["code"] == "invalid_arg"


async def test_access_denied_switch(sandbox: Sandbox, key: str) -> None:
    await sandbox.http.post(f"/_sandbox/accounts/{key}/access", json={"denied": True})
    assert (await call(sandbox, "getLists", key))["code"] == "access_denied"
    await sandbox.http.post(f"/_sandbox/accounts/{key}/access", json={"denied": False})
    await sandbox.http.post(
        f"/_sandbox/accounts/{key}/access", json={"denied": True, "methods": ["createList"]}
    )
    assert (await call(sandbox, "createList", key, {"title": "x"}))["code"] == "access_denied"
    assert "result" in await call(sandbox, "getLists", key)


# --- importContacts -----------------------------------------------------------------------------------


async def test_import_percent_encoded_brackets_and_counters(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    body = (
        "field_names%5B0%5D=email&field_names%5B1%5D=Name&field_names%5B2%5D=email_list_ids&field_names%5B3%5D=tags"
        f"&data%5B0%5D%5B0%5D=Ivan%40ex.ru&data%5B0%5D%5B1%5D=%D0%98%D0%B2%D0%B0%D0%BD&data%5B0%5D%5B2%5D={list_id}"
        "&data%5B0%5D%5B3%5D=crm%2Cvip&overwrite_lists=0&overwrite_tags=0"
    )
    answer = await call(sandbox, "importContacts", key, body)
    assert answer["result"] == {
        "total": 1,
        "inserted": 1,
        "updated": 0,
        "deleted": 0,
        "new_emails": 1,
        "invalid": 0,
        "log": [],
    }
    stored = await contact(sandbox, key, "ivan@ex.ru")
    assert stored["status"] == "new"
    assert stored["fields"] == {"Name": "Иван"}
    assert stored["tags"] == ["crm", "vip"]
    assert stored["lists"][str(list_id)]["status"] == "active"


async def test_import_structural_errors_fail_the_whole_call(sandbox: Sandbox, key: str) -> None:
    too_many = import_body(["email"], [[f"u{i}@example.com"] for i in range(501)])
    assert (await call(sandbox, "importContacts", key, too_many))["code"] == "invalid_arg"
    no_address = import_body(["Name"], [["Ann"]])
    assert (await call(sandbox, "importContacts", key, no_address))["code"] == "invalid_arg"
    unknown_field = import_body(["email", "Surname"], [["a@example.com", "X"]])
    assert (await call(sandbox, "importContacts", key, unknown_field))["code"] == "invalid_arg"
    wrong_case = import_body(["email", "name"], [["a@example.com", "X"]])
    assert (await call(sandbox, "importContacts", key, wrong_case))["code"] == "invalid_arg"
    flat_names = {"field_names": "email,Name", "data[0][0]": "a@example.com", "data[0][1]": "Ann"}
    assert (await call(sandbox, "importContacts", key, flat_names))["code"] == "invalid_arg"
    flat_data = {"field_names[0]": "email", "data": "a@example.com"}
    assert (await call(sandbox, "importContacts", key, flat_data))["code"] == "invalid_arg"
    no_data = {"field_names[0]": "email"}
    assert (await call(sandbox, "importContacts", key, no_data))["code"] == "invalid_arg"
    # Nothing of the refused calls was applied.
    assert (await sandbox.http.get(f"/_sandbox/accounts/{key}/contacts")).json()["total"] == 0
    exactly_500 = import_body(["email"], [[f"u{i}@example.com"] for i in range(500)])
    assert (await call(sandbox, "importContacts", key, exactly_500))["result"]["inserted"] == 500


async def test_import_rows_with_bad_addresses_are_logged_and_skipped(sandbox: Sandbox, key: str) -> None:
    rows = [
        ["good@example.com"],
        ["not-an-email"],
        ["info@example.com"],
        ["Sales@Example.com"],
        ["a@b@c.com"],
    ]
    result = (await call(sandbox, "importContacts", key, import_body(["email"], rows)))["result"]
    assert result["total"] == 5
    assert result["inserted"] == 1
    assert result["invalid"] == 4
    by_index = {entry["index"]: entry for entry in result["log"]}
    assert set(by_index) == {"1", "2", "3", "4"}  # string indexes, as production sends them
    assert by_index["1"]["code"] == "invalid_email"
    assert by_index["2"]["code"] == "role_address"
    assert by_index["3"]["code"] == "role_address"
    assert all(entry["message"] for entry in result["log"])
    assert (await sandbox.http.get(f"/_sandbox/accounts/{key}/contacts/info@example.com")).status_code == 404


async def test_role_address_filter_is_configurable(sandbox: Sandbox, key: str) -> None:
    sandbox.state.config.reject_role_addresses = False
    try:
        body = import_body(["email"], [["info@example.com"]])
        result = (await call(sandbox, "importContacts", key, body))["result"]
    finally:
        sandbox.state.config.reject_role_addresses = True
    assert result["inserted"] == 1
    assert result["log"] == []


async def test_duplicate_address_in_one_call_is_logged(sandbox: Sandbox, key: str) -> None:
    rows = [["dup@example.com", "First"], ["DUP@example.com", "Second"]]
    result = (await call(sandbox, "importContacts", key, import_body(["email", "Name"], rows)))["result"]
    assert result["inserted"] == 1
    assert [(e["index"], e["code"]) for e in result["log"]] == [("1", "duplicate")]
    assert (await contact(sandbox, key, "dup@example.com"))["fields"] == {"Name": "First"}


async def test_import_status_rules(sandbox: Sandbox, key: str) -> None:
    cols = ["email", "email_status"]
    first = [["new@example.com", ""], ["act@example.com", "active"], ["ina@example.com", "inactive"]]
    result = (await call(sandbox, "importContacts", key, import_body(cols, first)))["result"]
    assert (result["inserted"], result["new_emails"]) == (3, 1)
    assert (await contact(sandbox, key, "new@example.com"))["status"] == "new"
    assert (await contact(sandbox, key, "act@example.com"))["status"] == "active"

    # A "new" address's status cannot be changed; active/inactive ones can.
    second = [
        ["new@example.com", "active"],
        ["act@example.com", "unsubscribed"],
        ["ina@example.com", "active"],
    ]
    result = (await call(sandbox, "importContacts", key, import_body(cols, second)))["result"]
    assert result["updated"] == 3
    assert result["new_emails"] == 1  # pre-existing address that stays "new" counts too
    assert [(e["index"], e["code"]) for e in result["log"]] == [("0", "status_change_denied")]
    assert (await contact(sandbox, key, "new@example.com"))["status"] == "new"
    assert (await contact(sandbox, key, "act@example.com"))["status"] == "unsubscribed"
    assert (await contact(sandbox, key, "ina@example.com"))["status"] == "active"

    # Never back from unsubscribed to active.
    third = [["act@example.com", "active"]]
    result = (await call(sandbox, "importContacts", key, import_body(cols, third)))["result"]
    assert result["log"][0]["code"] == "status_change_denied"
    assert (await contact(sandbox, key, "act@example.com"))["status"] == "unsubscribed"

    bad = [["x@example.com", "blocked"]]
    result = (await call(sandbox, "importContacts", key, import_body(cols, bad)))["result"]
    assert (result["invalid"], result["log"][0]["code"]) == (1, "invalid_value")


async def test_import_delete_column(sandbox: Sandbox, key: str) -> None:
    await call(sandbox, "importContacts", key, import_body(["email"], [["a@example.com"], ["b@example.com"]]))
    rows = [
        ["a@example.com", "1"],
        ["b@example.com", "0"],
        ["ghost@example.com", "1"],
        ["c@example.com", "2"],
    ]
    result = (await call(sandbox, "importContacts", key, import_body(["email", "delete"], rows)))["result"]
    assert (result["deleted"], result["updated"], result["inserted"], result["invalid"]) == (2, 1, 0, 1)
    assert (await sandbox.http.get(f"/_sandbox/accounts/{key}/contacts/a@example.com")).status_code == 404
    assert (await call(sandbox, "getContact", key, {"email": "a@example.com"}))["code"] == "unspecified"
    assert (await contact(sandbox, key, "b@example.com"))["email"] == "b@example.com"


async def test_overwrite_tags(sandbox: Sandbox, key: str) -> None:
    cols = ["email", "tags"]
    await call(sandbox, "importContacts", key, import_body(cols, [["t@example.com", "a,b"]]))
    await call(
        sandbox, "importContacts", key, import_body(cols, [["t@example.com", "c"]], overwrite_tags="0")
    )
    assert (await contact(sandbox, key, "t@example.com"))["tags"] == ["a", "b", "c"]
    await call(
        sandbox, "importContacts", key, import_body(cols, [["t@example.com", "d"]], overwrite_tags="1")
    )
    assert (await contact(sandbox, key, "t@example.com"))["tags"] == ["d"]
    eleven = ",".join(f"t{i}" for i in range(11))
    result = (await call(sandbox, "importContacts", key, import_body(cols, [["t@example.com", eleven]])))[
        "result"
    ]
    assert result["log"][0]["code"] == "too_many_tags"
    tags = (await call(sandbox, "getTags", key))["result"]
    assert {t["name"] for t in tags} == {"a", "b", "c", "d"}


async def test_overwrite_lists_and_unsubscribed_membership_stays(sandbox: Sandbox, key: str) -> None:
    l1, l2, l3 = [await new_list(sandbox, key, t) for t in ("L1", "L2", "L3")]
    cols = ["email", "email_list_ids"]
    await call(sandbox, "importContacts", key, import_body(cols, [["m@example.com", f"{l1},{l2}"]]))
    await call(
        sandbox, "importContacts", key, import_body(cols, [["m@example.com", f"{l3}"]], overwrite_lists="0")
    )
    assert set((await contact(sandbox, key, "m@example.com"))["lists"]) == {str(l1), str(l2), str(l3)}
    unsub = {"contact_type": "email", "contact": "m@example.com", "list_ids": str(l1)}
    assert (await call(sandbox, "unsubscribe", key, unsub)) == {"result": {}}
    body = import_body(cols, [["m@example.com", f"{l1},{l2}"]], overwrite_lists="1")
    await call(sandbox, "importContacts", key, body)
    lists = (await contact(sandbox, key, "m@example.com"))["lists"]
    assert set(lists) == {str(l1), str(l2)}
    assert lists[str(l1)]["status"] == "unsubscribed"
    assert lists[str(l2)]["status"] == "active"
    unknown = import_body(cols, [["m@example.com", "999999"]])
    result = (await call(sandbox, "importContacts", key, unknown))["result"]
    assert result["log"][0]["code"] == "invalid_list"


async def test_subscribe_times_and_user_fields(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    assert "result" in await call(sandbox, "createField", key, {"name": "city", "type": "string"})
    cols = ["email", "Name", "city", "email_list_ids", "email_subscribe_times"]
    rows = [["f@example.com", "Fay", "Riga", str(list_id), "2024-05-01 10:00:00"]]
    await call(sandbox, "importContacts", key, import_body(cols, rows))
    stored = await contact(sandbox, key, "f@example.com")
    assert stored["fields"] == {"Name": "Fay", "city": "Riga"}
    assert stored["lists"][str(list_id)]["added_at"] == "2024-05-01 10:00:00"
    bad = [["g@example.com", "", "", str(list_id), "yesterday"]]
    result = (await call(sandbox, "importContacts", key, import_body(cols, bad)))["result"]
    assert result["log"][0]["code"] == "invalid_value"


FIELD_VALUE_CASES = [
    ("number", "42", True),
    ("number", "-3.25", True),
    ("number", "4,5", False),
    ("number", "1e3", False),
    ("number", "12.", False),
    ("date", "17.05.1990", True),
    ("date", "17-05-1990", True),
    ("date", "1990.05.17", True),
    ("date", "1990-05-17", True),
    ("date", "1990/05/17", False),
    ("date", "31.02.2024", False),
    ("date", "5.1.2024", False),
    ("bool", "1", True),
    ("bool", "0", True),
    ("bool", "Yes", True),
    ("bool", "no", True),
    ("bool", "да", True),
    ("bool", "нет", True),
    ("bool", "true", False),
    ("string", "one line", True),
    ("string", "two\nlines", False),
    ("text", "two\nlines", True),
]


async def test_strict_mode_checks_each_value_against_its_field_type(sandbox: Sandbox, key: str) -> None:
    for kind in ("number", "date", "bool", "string", "text"):
        assert "result" in await call(sandbox, "createField", key, {"name": f"f_{kind}", "type": kind})
    await call(
        sandbox, "importContacts", key, import_body(["email", "f_number"], [["kept@example.com", "7"]])
    )
    # One call per type (a row carries one field); the other types' cells are absent, not empty.
    bad_rows: list[str] = []
    for kind in ("number", "date", "bool", "string", "text"):
        cases = [(i, value, ok) for i, (k, value, ok) in enumerate(FIELD_VALUE_CASES) if k == kind]
        rows = [[f"v{i}@example.com", value] for i, value, _ in cases]
        if kind == "number":
            rows.append(["kept@example.com", "seven"])  # an existing contact: left as it was
        result = (await call(sandbox, "importContacts", key, import_body(["email", f"f_{kind}"], rows)))[
            "result"
        ]
        logged = {rows[int(e["index"])][0] for e in result["log"]}
        assert all(e["code"] == "invalid_field_value" and kind in e["message"] for e in result["log"])
        assert result["invalid"] == len(logged)
        bad_rows.extend(sorted(logged))
    expected_bad = {f"v{i}@example.com" for i, (_, _, ok) in enumerate(FIELD_VALUE_CASES) if not ok}
    assert set(bad_rows) == expected_bad | {"kept@example.com"}
    assert (await contact(sandbox, key, "kept@example.com"))["fields"] == {"f_number": "7"}
    for i, (kind, value, ok) in enumerate(FIELD_VALUE_CASES):
        found = await sandbox.http.get(f"/_sandbox/accounts/{key}/contacts/v{i}@example.com")
        assert (found.status_code == 200) is ok, (kind, value)
        if ok:
            assert found.json()["fields"] == {f"f_{kind}": value}

    # An empty cell always passes (it clears), and the switch turns the check off (values stored verbatim).
    body = import_body(["email", "f_number"], [["kept@example.com", ""]])
    assert (await call(sandbox, "importContacts", key, body))["result"]["log"] == []
    assert (await contact(sandbox, key, "kept@example.com"))["fields"] == {}
    sandbox.state.config.validate_field_values = False
    try:
        body = import_body(["email", "f_number", "f_date"], [["loose@example.com", "4,5", "someday"]])
        result = (await call(sandbox, "importContacts", key, body))["result"]
    finally:
        sandbox.state.config.validate_field_values = True
    assert (result["inserted"], result["log"]) == (1, [])
    assert (await contact(sandbox, key, "loose@example.com"))["fields"] == {
        "f_number": "4,5",
        "f_date": "someday",
    }


async def test_phone_column_format_and_ownership(sandbox: Sandbox, key: str) -> None:
    cols = ["email", "phone"]
    rows = [
        ["p1@example.com", "+79261232323"],
        ["p2@example.com", "79261232324"],  # no "+"
        ["p3@example.com", "+7926"],  # too short
        ["p4@example.com", "+7 (926) 123-23-25"],
        ["p5@example.com", "+1234567890123456"],  # 16 digits
        ["", "+79990000000"],  # a phone-only contact
    ]
    result = (await call(sandbox, "importContacts", key, import_body(cols, rows)))["result"]
    assert [(e["index"], e["code"]) for e in result["log"]] == [
        ("1", "invalid_phone"),
        ("2", "invalid_phone"),
        ("4", "invalid_phone"),
    ]
    state = (await sandbox.http.get(f"/_sandbox/accounts/{key}/snapshot")).json()["contacts"]
    assert {k: c["phone"] for k, c in state.items()} == {
        "p1@example.com": "+79261232323",
        "p4@example.com": "+79261232325",
        "+79990000000": "+79990000000",
    }

    def imported(rows: list[list[str]]) -> Any:
        return call(sandbox, "importContacts", key, import_body(["email", "phone", "Name"], rows))

    # An address and a phone of two different contacts, or a new address with another one's phone: skipped.
    result = (
        await imported([["p1@example.com", "+79261232325", "X"], ["p6@example.com", "+79261232323", "Y"]])
    )["result"]
    assert [(e["index"], e["code"]) for e in result["log"]] == [
        ("0", "owned_by_different_subscribers"),
        ("1", "owned_by_different_subscribers"),
    ]
    assert "already exist but owned by different subscribers" in result["log"][0]["message"]
    assert (await contact(sandbox, key, "p1@example.com"))["fields"] == {}
    assert (await sandbox.http.get(f"/_sandbox/accounts/{key}/contacts/p6@example.com")).status_code == 404
    # A phone-only contact gains the address; an address's new phone replaces its old one, which is free again.
    result = (
        await imported([["ph@example.com", "+79990000000", "Ph"], ["p1@example.com", "+79261232399", "P1"]])
    )["result"]
    assert (result["inserted"], result["updated"], result["log"]) == (0, 2, [])
    result = (await imported([["p7@example.com", "+79261232323", "P7"]]))["result"]
    assert (result["inserted"], result["log"]) == (1, [])
    state = (await sandbox.http.get(f"/_sandbox/accounts/{key}/snapshot")).json()["contacts"]
    assert {k: (c["phone"], c["fields"].get("Name")) for k, c in state.items()} == {
        "p1@example.com": ("+79261232399", "P1"),
        "p4@example.com": ("+79261232325", None),
        "ph@example.com": ("+79990000000", "Ph"),
        "p7@example.com": ("+79261232323", "P7"),
    }


async def test_list_columns_precedence_and_per_list_unsubscribe_events(sandbox: Sandbox, key: str) -> None:
    l1, l2, l3, l4, l5, l6 = [await new_list(sandbox, key, f"L{i}") for i in range(1, 7)]
    cols = ["email", "email_status", "email_list_ids"]
    await call(
        sandbox, "importContacts", key, import_body(cols, [["m@example.com", "active", f"{l1},{l2},{l3}"]])
    )
    receiver = Receiver("", [], [])
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        hook = {"hook_url": f"{hook_base}/hook", "events[unsubscribe]": "*", "events[subscribe]": "*"}
        assert (await call(sandbox, "setHook", key, hook)) == {"result": {}}
        cols = ["email", "email_list_ids", "email_unsubscribed_list_ids", "email_excluded_list_ids"]
        row = [
            "m@example.com",
            f"{l3},{l4},{l5}",  # joins, each overruled below
            f"{l1},{l2},{l3},{l4}",  # l1, l3: active -> unsubscribed; l2: overruled; l4: created unsubscribed
            f"{l2},{l5},{l6}",  # l2 leaves; l5 never joins; l6: not a member, nothing to do
        ]
        result = (await call(sandbox, "importContacts", key, import_body(cols, [row])))["result"]
        assert (result["updated"], result["log"]) == (1, [])
        await wait_for(lambda: len(receiver.bodies) == 1)
        await asyncio.sleep(0.1)  # nothing else follows
    assert len(receiver.bodies) == 1
    events = json.loads(receiver.bodies[0])["events_by_user"][0]["events"]
    assert sorted((e["event_name"], e["event_data"]["list_id"]) for e in events) == [
        ("unsubscribe", l1),
        ("unsubscribe", l3),
    ]
    assert all(e["event_data"]["email"] == "m@example.com" for e in events)

    args = {"email": "m@example.com", "include_lists": "1"}
    got = (await call(sandbox, "getContact", key, args))["result"]
    assert got["email"]["status"] == "active"  # per-list unsubscribes leave the address active
    assert [(m["id"], m["status"]) for m in got["lists"]] == [
        (l1, "unsubscribed"),
        (l3, "unsubscribed"),
        (l4, "unsubscribed"),
    ]
    # exclude answers by list; a later join does not re-activate an unsubscribed membership.
    exclude = {"contact_type": "email", "contact": "m@example.com", "list_ids": str(l3)}
    assert (await call(sandbox, "exclude", key, exclude)) == {"result": {}}
    body = import_body(["email", "email_list_ids"], [["m@example.com", f"{l1},{l2}"]])
    await call(sandbox, "importContacts", key, body)
    got = (await call(sandbox, "getContact", key, args))["result"]
    assert [(m["id"], m["status"]) for m in got["lists"]] == [
        (l1, "unsubscribed"),
        (l2, "active"),
        (l4, "unsubscribed"),
    ]


# --- getContact and friends ----------------------------------------------------------------------------


async def test_get_contact_shapes(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    cols = ["email", "Name", "email_list_ids"]
    await call(sandbox, "importContacts", key, import_body(cols, [["g@example.com", "Gus", str(list_id)]]))
    bare = (await call(sandbox, "getContact", key, {"email": "g@example.com"}))["result"]
    assert set(bare) == {"email"}
    assert set(bare["email"]) == {"email", "added_at", "status", "availability"}
    assert (bare["email"]["status"], bare["email"]["availability"]) == ("new", "available")
    full = (
        await call(
            sandbox,
            "getContact",
            key,
            {"email": "G@example.com", "include_lists": "1", "include_fields": "1", "include_details": "1"},
        )
    )["result"]
    assert full["lists"] == [{"id": list_id, "status": "active", "added_at": bare["email"]["added_at"]}]
    assert full["fields"] == {"Name": "Gus"}
    assert full["email"]["last_send_datetime"] is None
    assert "rating" in full["email"]
    missing = await call(sandbox, "getContact", key, {"email": "nobody@example.com"})
    assert missing == {"error": 'Contact "nobody@example.com" not found', "code": "unspecified"}


async def test_exclude_then_resubscribe(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    cols = ["email", "email_list_ids"]
    await call(sandbox, "importContacts", key, import_body(cols, [["e@example.com", str(list_id)]]))
    args = {"contact_type": "email", "contact": "e@example.com", "list_ids": str(list_id)}
    assert (await call(sandbox, "exclude", key, args)) == {"result": {}}
    assert (await contact(sandbox, key, "e@example.com"))["lists"] == {}
    again = await call(sandbox, "exclude", key, args)
    assert again == {"error": 'Contact "e@example.com" not found', "code": "unspecified", "result": ""}
    in_lists = {"email": "e@example.com", "list_ids": str(list_id)}
    assert (await call(sandbox, "isContactInLists", key, in_lists)) == {"result": False}
    sub = {"list_ids": str(list_id), "fields[email]": "e@example.com", "double_optin": "3"}
    person = (await call(sandbox, "subscribe", key, sub))["result"]["person_id"]
    assert person == (await contact(sandbox, key, "e@example.com"))["person_id"]
    assert (await contact(sandbox, key, "e@example.com"))["lists"][str(list_id)]["status"] == "active"
    assert (await call(sandbox, "isContactInLists", key, in_lists)) == {"result": True}


async def test_unsubscribe_cannot_be_undone_through_the_api(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    cols = ["email", "email_list_ids"]
    await call(sandbox, "importContacts", key, import_body(cols, [["u@example.com", str(list_id)]]))
    args = {"contact_type": "email", "contact": "u@example.com"}  # no list_ids: every list
    assert (await call(sandbox, "unsubscribe", key, args)) == {"result": {}}
    stored = await contact(sandbox, key, "u@example.com")
    assert stored["lists"][str(list_id)]["status"] == "unsubscribed"  # still in the list
    sub = {"list_ids": str(list_id), "fields[email]": "u@example.com", "double_optin": "3"}
    assert "result" in await call(sandbox, "subscribe", key, sub)
    await call(sandbox, "importContacts", key, import_body(cols, [["u@example.com", str(list_id)]]))
    stored = await contact(sandbox, key, "u@example.com")
    assert stored["lists"][str(list_id)]["status"] == "unsubscribed"
    missing = await call(sandbox, "unsubscribe", key, {"contact_type": "email", "contact": "zz@example.com"})
    assert (missing["code"], missing["result"]) == ("unspecified", "")
    assert (await call(sandbox, "unsubscribe", key, {"contact_type": "fax", "contact": "1"}))[
        "code"
    ] == "invalid_arg"


async def test_subscribe_double_optin_needs_a_confirmation_letter(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    sub = {"list_ids": str(list_id), "fields[email]": "d@example.com", "fields[Name]": "Dee"}
    answer = await call(sandbox, "subscribe", key, sub)
    assert answer["code"] == "unspecified"
    assert "has no confirmation letters" in answer["error"]
    sub["double_optin"] = "3"
    assert "person_id" in (await call(sandbox, "subscribe", key, sub))["result"]
    stored = await contact(sandbox, key, "d@example.com")
    assert (stored["status"], stored["fields"]) == ("new", {"Name": "Dee"})
    bad_field = {**sub, "fields[Surname]": "X"}
    assert (await call(sandbox, "subscribe", key, bad_field))["code"] == "invalid_arg"


async def test_counts(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    cols = ["email", "email_list_ids", "tags"]
    rows = [
        ["c1@example.com", str(list_id), "vip"],
        ["c2@example.com", str(list_id), ""],
        ["c3@example.com", "", ""],
    ]
    await call(sandbox, "importContacts", key, import_body(cols, rows))
    count = (await call(sandbox, "getContactCount", key, {"list_id": str(list_id)}))["result"]
    assert (count["listId"], count["count"]) == (list_id, 2)
    vip_id = (await call(sandbox, "getTags", key))["result"][0]["id"]
    by_tag = {"list_id": str(list_id), "params[tagId]": str(vip_id)}
    assert (await call(sandbox, "getContactCount", key, by_tag))["result"]["count"] == 1
    search = {"list_id": str(list_id), "params[type]": "address", "params[search]": "c2@"}
    assert (await call(sandbox, "getContactCount", key, search))["result"]["count"] == 1
    login = (await sandbox.http.get(f"/_sandbox/accounts/{key}")).json()["login"]
    assert (await call(sandbox, "getTotalContactsCount", key, {"login": login})) == {"result": {"total": 3}}


# --- lists and fields ----------------------------------------------------------------------------------


async def test_lists_crud(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key, "Customers")
    assert (await call(sandbox, "createList", key, {"title": "Customers"}))["code"] == "invalid_arg"
    assert (await call(sandbox, "createList", key, {}))["code"] == "invalid_arg"
    assert (await call(sandbox, "getLists", key)) == {"result": [{"id": list_id, "title": "Customers"}]}
    assert (await call(sandbox, "updateList", key, {"list_id": str(list_id), "title": "Clients"})) == {
        "result": {}
    }
    assert (await call(sandbox, "getLists", key))["result"][0]["title"] == "Clients"
    cols = ["email", "email_list_ids"]
    await call(sandbox, "importContacts", key, import_body(cols, [["l@example.com", str(list_id)]]))
    assert (await call(sandbox, "deleteList", key, {"list_id": str(list_id)})) == {"result": {}}
    assert (await call(sandbox, "getLists", key)) == {"result": []}
    assert (await contact(sandbox, key, "l@example.com"))["lists"] == {}
    assert (await call(sandbox, "deleteList", key, {"list_id": str(list_id)}))["code"] == "invalid_arg"


async def test_fields_crud_and_name_rules(sandbox: Sandbox, key: str) -> None:
    created = await call(sandbox, "createField", key, {"name": "age", "type": "number", "public_name": "Age"})
    field_id = created["result"]["id"]
    for bad in (
        {"name": "1age", "type": "string"},
        {"name": "has space", "type": "string"},
        {"name": "age", "type": "string"},
        {"name": "ok", "type": "float"},
        {"name": "email", "type": "string"},
        {"name": "bad-dash", "type": "string"},
        {"type": "string"},
    ):
        assert (await call(sandbox, "createField", key, bad))["code"] == "invalid_arg", bad
    names = [f["name"] for f in (await call(sandbox, "getFields", key))["result"]]
    assert names == ["Name", "age"]
    await call(sandbox, "importContacts", key, import_body(["email", "age"], [["f@example.com", "42"]]))
    assert (await call(sandbox, "deleteField", key, {"id": str(field_id)})) == {"result": {}}
    assert (await contact(sandbox, key, "f@example.com"))["fields"] == {}
    assert (
        await call(sandbox, "importContacts", key, import_body(["email", "age"], [["f@example.com", "1"]]))
    )["code"] == "invalid_arg"


# --- PHP parameter parsing ------------------------------------------------------------------------------


@settings(deadline=None, derandomize=True)
@given(st.text(alphabet="ab=&+%5B0Cfé\u00a0", max_size=40))
def test_form_decoding_reads_what_the_standard_library_reads(raw: str) -> None:
    """The sandbox's fast decoder against ``parse_qsl``: the same pairs, or the same refusal (bad UTF-8)."""
    try:
        expected: Any = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        expected = UnicodeDecodeError
    try:
        got: Any = decode_urlencoded(raw)
    except UnicodeDecodeError:
        got = UnicodeDecodeError
    assert got == expected


def test_php_bracket_parsing() -> None:
    raw = (
        "field_names%5B0%5D=email&field_names[1]=Name&data[0][0]=a%40x.ru&data[0][1]=A"
        "&events[]=unsubscribe&events[]=subscribe&fields[Name]=Ann&plain=1&plain=2&a.b=x"
    )
    params = build_params(decode_urlencoded(raw))
    assert params["field_names"] == {"0": "email", "1": "Name"}
    assert params["data"] == {"0": {"0": "a@x.ru", "1": "A"}}
    assert params["events"] == {"0": "unsubscribe", "1": "subscribe"}
    assert params["fields"] == {"Name": "Ann"}
    assert params["plain"] == "2"  # the last value wins, as in PHP
    assert params["a_b"] == "x"
    assert build_params([("x[5]", "a"), ("x[]", "b")])["x"] == {"5": "a", "6": "b"}


# --- rate limits and faults ----------------------------------------------------------------------------


async def test_rate_limit_per_api_key() -> None:
    app = create_unisender_sandbox(
        UnisenderSandboxConfig(calls_per_minute=5, accounts={"a1": "one", "a2": "two"})
    )
    async with serve_in_background(app) as url, httpx.AsyncClient(verify=tls_context(), base_url=url) as http:
        sb = Sandbox(url, app, http)
        answers = [await call(sb, "getLists", "a1") for _ in range(7)]
        assert [a.get("code") for a in answers] == [None] * 5 + ["api_call_limit_exceeded_for_api_key"] * 2
        assert "result" in await call(sb, "getLists", "a2")  # other keys have their own budget
        window = sb.state.key_window
        assert not window.allow("a1", 5, now=time.monotonic() + 59)
        assert window.allow("a1", 5, now=time.monotonic() + 61)  # sliding window: a minute later it frees up


async def test_fault_injection_retry_later_and_5xx(sandbox: Sandbox, key: str) -> None:
    plan = {"rate": 1.0, "kinds": ["retry_later"], "method": "getLists", "api_key": key, "count": 2}
    assert (await sandbox.http.post("/_sandbox/faults", json=plan)).status_code == 200
    codes = [(await call(sandbox, "getLists", key)).get("code") for _ in range(3)]
    assert codes == ["retry_later", "retry_later", None]
    assert "result" in await call(sandbox, "getFields", key)  # other methods untouched
    await sandbox.http.post("/_sandbox/faults", json={"rate": 1.0, "kinds": ["http_503"], "api_key": key})
    response = await sandbox.http.post("/en/api/getLists", data={"api_key": key})
    assert response.status_code == 503
    current = (await sandbox.http.get("/_sandbox/faults")).json()["faults"]
    assert current["injected"] == {"http_503": 1}
    await sandbox.http.delete("/_sandbox/faults")
    assert "result" in await call(sandbox, "getLists", key)
    bad = await sandbox.http.post("/_sandbox/faults", json={"rate": 1.0, "kinds": ["meteor"]})
    assert bad.status_code == 400


async def test_faults_are_deterministic_with_a_seed(sandbox: Sandbox, key: str) -> None:
    async def run() -> list[str | None]:
        plan = {"rate": 0.5, "kinds": ["retry_later", "rate_limit"], "seed": 7, "api_key": key}
        await sandbox.http.post("/_sandbox/faults", json=plan)
        return [(await call(sandbox, "getLists", key)).get("code") for _ in range(20)]

    try:
        first, second = await run(), await run()
    finally:
        await sandbox.http.delete("/_sandbox/faults")
    assert first == second
    assert None in first
    assert {"retry_later", "api_call_limit_exceeded_for_api_key"} <= set(first)


async def test_hang_fault_times_out_the_client_but_applies_the_call(sandbox: Sandbox, key: str) -> None:
    plan = {"rate": 1.0, "kinds": ["hang"], "method": "createList", "api_key": key, "hang_seconds": 0.5}
    await sandbox.http.post("/_sandbox/faults", json=plan)
    try:
        with pytest.raises(httpx.ReadTimeout):
            await sandbox.http.post(
                "/en/api/createList", data={"api_key": key, "title": "Slow"}, timeout=httpx.Timeout(0.1)
            )
    finally:
        await sandbox.http.delete("/_sandbox/faults")
    for _ in range(50):  # bounded: 1 s
        lists = (await call(sandbox, "getLists", key))["result"]
        if lists:
            break
        await asyncio.sleep(0.02)
    assert [entry["title"] for entry in lists] == ["Slow"]


# --- hooks ----------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    bodies: list[bytes]
    statuses: list[int]  # answers to give, in order; 200 once exhausted


def receiver_app(receiver: Receiver, delay: float = 0.0) -> FastAPI:
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        receiver.bodies.append(await request.body())
        if delay:
            await asyncio.sleep(delay)
        status = receiver.statuses.pop(0) if receiver.statuses else 200
        return Response("ok", status_code=status)

    return app


def verify(raw: bytes, api_key: str) -> bool:
    """The receiver's check: put the key in place of the auth value in the raw bytes, md5, compare."""
    digest = json.loads(raw)["auth"]
    restored = raw.replace(digest.encode(), api_key.encode(), 1)
    return hmac.compare_digest(hashlib.md5(restored).hexdigest(), digest)


async def wait_for(predicate: Any, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_unsubscribe_events_are_delivered_signed(sandbox: Sandbox, key: str) -> None:
    receiver = Receiver("", [], [])
    async with serve_in_background(receiver_app(receiver, delay=0.5)) as hook_base:
        hook_url = f"{hook_base}/hook"
        bad_hook = {"hook_url": hook_url, "events[]": "bounce"}
        assert (await call(sandbox, "setHook", key, bad_hook))["code"] == "invalid_arg"
        args = {
            "hook_url": hook_url,
            "events[]": "unsubscribe",
            "event_format": "json_post",
            "max_parallel": "5",
        }
        assert (await call(sandbox, "setHook", key, args)) == {"result": {}}
        list_id = await new_list(sandbox, key)
        cols = ["email", "email_list_ids", "email_status"]
        rows = [["h1@example.com", str(list_id), "active"], ["h2@example.com", str(list_id), "active"]]
        await call(sandbox, "importContacts", key, import_body(cols, rows))
        assert receiver.bodies == []  # no events for plain imports

        # 1) the contact clicks the link (per list), 2) the API unsubscribe, 3) import email_status=unsubscribed
        started = time.monotonic()
        link = await sandbox.http.post(
            f"/_sandbox/accounts/{key}/contacts/h1@example.com/unsubscribe", json={"list_id": list_id}
        )
        assert link.json()["changed"] is True
        await call(sandbox, "unsubscribe", key, {"contact_type": "email", "contact": "h2@example.com"})
        await call(
            sandbox,
            "importContacts",
            key,
            import_body(["email", "email_status"], [["h1@example.com", "unsubscribed"]]),
        )
        assert time.monotonic() - started < 0.5  # delivery (receiver takes 0.5 s) is not inside the calls
        await wait_for(lambda: len(receiver.bodies) == 3)

        decoded = [json.loads(body) for body in receiver.bodies]
        assert all(verify(body, key) for body in receiver.bodies)
        assert not verify(receiver.bodies[0], key + "x")
        login = (await sandbox.http.get(f"/_sandbox/accounts/{key}")).json()["login"]
        # The classic batched layout, exactly: auth first, one user entry with the login, events in order.
        assert all(list(d) == ["auth", "events_by_user"] for d in decoded)
        assert all([list(u) for u in d["events_by_user"]] == [["login", "events"]] for d in decoded)
        assert all(d["events_by_user"][0]["login"] == login for d in decoded)
        events = [e for d in decoded for e in d["events_by_user"][0]["events"]]
        assert all(list(e) == ["event_name", "event_time", "event_data"] for e in events)
        assert all(e["event_name"] == "unsubscribe" for e in events)
        # One event per list, {"email", "list_id"}: the link and the API call per list, the account-wide
        # import status for each list of the address.
        assert sorted((e["event_data"]["email"], e["event_data"]["list_id"]) for e in events) == [
            ("h1@example.com", list_id),
            ("h1@example.com", list_id),
            ("h2@example.com", list_id),
        ]
        assert all(set(e["event_data"]) == {"email", "list_id"} for e in events)
        await wait_for(lambda: sum(d["api_key"] == key for d in sandbox.state.deliveries) == 3)
        deliveries = (await sandbox.http.get("/_sandbox/deliveries", params={"api_key": key})).json()
        assert [d["delivered"] for d in deliveries["deliveries"]] == [True, True, True]


async def test_bodies_are_serialized_like_php_json_encode(sandbox: Sandbox, key: str) -> None:
    receiver = Receiver("", [], [])
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        await call(sandbox, "setHook", key, {"hook_url": f"{hook_base}/hook", "events[email_status]": "*"})
        data = {"email": "эмма@пример.рф", "status": "ok_link_visited", "url": "https://example.com/a b"}
        r = await sandbox.http.post(
            f"/_sandbox/accounts/{key}/hook-events",
            json={"events": [{"event_name": "email_status", "event_data": data}]},
        )
        assert r.json() == {"events": 1}
        await wait_for(lambda: len(receiver.bodies) == 1)
    (body,) = receiver.bodies
    assert body.startswith(b'{"auth":"')
    assert body.isascii()  # non-ASCII as \uXXXX
    assert b"\\u044d\\u043c" in body
    assert b'"url":"https:\\/\\/example.com\\/a b"' in body  # slashes escaped, no spaces added
    assert b'": ' not in body  # compact: no space after ":" or ","
    assert b'", "' not in body
    assert verify(body, key)
    assert json.loads(body)["events_by_user"][0]["events"][0]["event_data"] == data


async def test_single_event_hooks_get_one_flat_body_per_event(sandbox: Sandbox, key: str) -> None:
    receiver = Receiver("", [], [])
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        args = {"hook_url": f"{hook_base}/hook", "events[unsubscribe]": "*", "single_event": "1"}
        assert (await call(sandbox, "setHook", key, args)) == {"result": {}}
        lists = [await new_list(sandbox, key, "A"), await new_list(sandbox, key, "B")]
        cols = ["email", "email_list_ids"]
        await call(
            sandbox, "importContacts", key, import_body(cols, [["f@example.com", f"{lists[0]},{lists[1]}"]])
        )
        await call(sandbox, "unsubscribe", key, {"contact_type": "email", "contact": "f@example.com"})
        await wait_for(lambda: len(receiver.bodies) == 2)
    decoded = [json.loads(body) for body in receiver.bodies]
    login = sandbox.state.accounts[key].login
    assert all(list(d) == ["auth", "login", "event_name", "event_time", "email", "list_id"] for d in decoded)
    assert sorted((d["login"], d["event_name"], d["email"], d["list_id"]) for d in decoded) == [
        (login, "unsubscribe", "f@example.com", lists[0]),
        (login, "unsubscribe", "f@example.com", lists[1]),
    ]
    assert all(verify(body, key) for body in receiver.bodies)


async def test_set_hook_map_form_status_filter_and_remove_hook(sandbox: Sandbox, key: str) -> None:
    receiver = Receiver("", [], [])
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        url = f"{hook_base}/hook"
        args = {
            "hook_url": url,
            "event_format": "json_post",
            "events[email_status]": "ok_unsubscribed",
            "events[campaign_status]": "*",
            "single_event": "0",
            "max_parallel": "5",
            "status": "active",
        }
        assert (await call(sandbox, "setHook", key, args)) == {"result": {}}
        (hook,) = (await sandbox.http.get(f"/_sandbox/accounts/{key}/hooks")).json()["hooks"]
        assert hook["events"] == {"email_status": "ok_unsubscribed", "campaign_status": "*"}
        events = [
            {"event_name": "email_status", "event_data": {"email": "a@example.com", "status": "ok_read"}},
            {
                "event_name": "email_status",
                "event_data": {"email": "a@example.com", "status": "ok_unsubscribed"},
            },
            {"event_name": "campaign_status", "event_data": {"campaign_id": 5, "status": "completed"}},
            {"event_name": "unsubscribe", "event_data": {"email": "a@example.com", "list_id": 1}},
        ]
        await sandbox.http.post(f"/_sandbox/accounts/{key}/hook-events", json={"events": events})
        await wait_for(lambda: len(receiver.bodies) == 1)
        delivered = json.loads(receiver.bodies[0])["events_by_user"][0]["events"]
        assert [e["event_data"].get("status") for e in delivered] == ["ok_unsubscribed", "completed"]

        assert (await call(sandbox, "removeHook", key, {"hook_url": url})) == {"result": {}}
        assert (await call(sandbox, "removeHook", key, {"hook_url": url})) == {"result": {}}  # idempotent
        assert (await sandbox.http.get(f"/_sandbox/accounts/{key}/hooks")).json()["hooks"] == []
        await sandbox.http.post(f"/_sandbox/accounts/{key}/hook-events", json={"events": events})
        assert sandbox.app.state.unisender_hooks.pending == 0  # nothing scheduled for a removed hook
    assert len(receiver.bodies) == 1
    bad = await sandbox.http.post(
        f"/_sandbox/accounts/{key}/hook-events", json={"events": [{"event_name": "bounce", "event_data": {}}]}
    )
    assert bad.status_code == 400


async def test_failed_delivery_is_retried_with_retry_count(sandbox: Sandbox, key: str) -> None:
    receiver = Receiver("", [], [500])
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        hook_url = f"{hook_base}/hook"
        await call(sandbox, "setHook", key, {"hook_url": hook_url, "events[]": "unsubscribe"})
        await call(sandbox, "importContacts", key, import_body(["email"], [["r@example.com"]]))
        await sandbox.http.post(f"/_sandbox/accounts/{key}/contacts/r@example.com/unsubscribe", json={})
        await wait_for(lambda: len(receiver.bodies) == 2)
        await wait_for(lambda: sum(d["api_key"] == key for d in sandbox.state.deliveries) == 2)
        first, second = (json.loads(b) for b in receiver.bodies)
        assert list(first) == ["auth", "events_by_user"]  # the first attempt has no retry_count
        assert list(second) == ["auth", "events_by_user", "retry_count"]
        assert second["retry_count"] == 1
        assert verify(receiver.bodies[1], key)
        assert second["auth"] != first["auth"]
        assert second["events_by_user"] == first["events_by_user"]
        # The address is in no list: its account-wide unsubscribe is one event without a list.
        assert first["events_by_user"][0]["events"][0]["event_data"] == {"email": "r@example.com"}
        rows = (await sandbox.http.get("/_sandbox/deliveries", params={"api_key": key})).json()["deliveries"]
        assert [(r["status_code"], r["delivered"]) for r in rows] == [(500, False), (200, True)]
    stored = await contact(sandbox, key, "r@example.com")
    assert stored["status"] == "unsubscribed"


async def test_hook_stops_after_retries_are_exhausted(sandbox: Sandbox, key: str) -> None:
    receiver = Receiver("", [], [500, 500, 500])
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        await call(sandbox, "setHook", key, {"hook_url": f"{hook_base}/hook", "events[]": "unsubscribe"})
        await call(sandbox, "importContacts", key, import_body(["email"], [["s@example.com"]]))
        await sandbox.http.post(f"/_sandbox/accounts/{key}/contacts/s@example.com/unsubscribe", json={})
        await wait_for(lambda: len(receiver.bodies) == 3)  # first try + hook_max_retries=2
        hooks_url = f"/_sandbox/accounts/{key}/hooks"
        await wait_for(lambda: sandbox.state.accounts[key].hooks[f"{hook_base}/hook"].status == "stopped")
        assert (await sandbox.http.get(hooks_url)).json()["hooks"][0]["status"] == "stopped"


# --- control API: ledger and stats ---------------------------------------------------------------------


async def test_ledger_and_stats(sandbox: Sandbox, key: str) -> None:
    cols = ["email", "Name"]
    await call(sandbox, "importContacts", key, import_body(cols, [["a@example.com", "A"], ["bad", "B"]]))
    await call(sandbox, "importContacts", key, import_body(cols, [["a@example.com", "A"]]))
    await call(
        sandbox, "importContacts", key, import_body(cols, [["a@example.com", "A2"], ["b@example.com", "B"]])
    )
    ledger = (
        await sandbox.http.get(f"/_sandbox/accounts/{key}/ledger", params={"email": "A@example.com"})
    ).json()
    assert [(e["call"], e["outcome"], e["data"]["Name"]) for e in ledger["entries"]] == [
        (1, "inserted", "A"),
        (2, "updated", "A"),
        (3, "updated", "A2"),
    ]
    summary = (await sandbox.http.get(f"/_sandbox/accounts/{key}/ledger/summary")).json()
    assert summary["rows"] == 4  # the invalid row was not accepted
    assert summary["consecutive_identical_rows"] == 1
    assert summary["addresses_with_differing_data"] == 1
    assert summary["examples"] == ["a@example.com"]
    stats = (await sandbox.http.get("/_sandbox/stats")).json()
    assert stats["by_account"][key] == {"importContacts": 3}
    page = (await sandbox.http.get(f"/_sandbox/accounts/{key}/contacts", params={"limit": 1})).json()
    assert (page["total"], len(page["contacts"])) == (2, 1)


async def test_control_accounts(sandbox: Sandbox) -> None:
    created = (await sandbox.http.post("/_sandbox/accounts", json={})).json()
    assert len(created["api_key"]) == 32
    assert created["api_key"] in sandbox.state.accounts
    dup = await sandbox.http.post("/_sandbox/accounts", json={"api_key": created["api_key"]})
    assert dup.status_code == 409
    assert (await sandbox.http.post("/_sandbox/accounts", json={"api_key": 'bad"key'})).status_code == 400
    assert (await sandbox.http.get("/_sandbox/accounts/unknown/contacts")).status_code == 404


# --- exportContacts ------------------------------------------------------------------------------------


async def test_export_contacts_sync_and_async(sandbox: Sandbox, key: str) -> None:
    list_id = await new_list(sandbox, key)
    cols = ["email", "Name", "email_list_ids"]
    rows = [[f"x{i}@example.com", f"X{i}", str(list_id) if i % 2 == 0 else ""] for i in range(5)]
    await call(sandbox, "importContacts", key, import_body(cols, rows))
    args = {
        "field_names[0]": "email",
        "field_names[1]": "Name",
        "list_id": str(list_id),
        "offset": "1",
        "limit": "5",
    }
    page = (await call(sandbox, "exportContacts", key, args))["result"]
    assert page == {
        "field_names": ["email", "Name"],
        "data": [["x2@example.com", "X2"], ["x4@example.com", "X4"]],
    }
    assert (await call(sandbox, "exportContacts", key, {"limit": "1001"}))["code"] == "invalid_arg"

    # notify_url is optional (spec §11: required on unisender.com's EN page only), but must be a URL.
    no_notify = {"field_names[0]": "email"}
    response = await sandbox.http.post("/en/api/async/exportContacts", data={"api_key": key, **no_notify})
    assert response.json()["result"]["status"] == "new"
    bad_notify = {"notify_url": "ftp://example.com/x", **no_notify}
    response = await sandbox.http.post("/en/api/async/exportContacts", data={"api_key": key, **bad_notify})
    assert response.json()["code"] == "invalid_arg"
    response = await sandbox.http.post(
        "/en/api/async/exportContacts",
        data={
            "api_key": key,
            "notify_url": "http://127.0.0.1:9/done",
            "field_names[0]": "email",
            "email_status": "new",
        },
    )
    task = response.json()["result"]
    assert task["status"] == "new"
    response = await sandbox.http.post(
        "/en/api/async/getTaskResult", data={"api_key": key, "task_uuid": task["task_uuid"]}
    )
    done = response.json()["result"]
    assert (done["status"], done["task_type"]) == ("completed", "export")
    csv_text = (await sandbox.http.get(done["file_to_download"])).text
    assert csv_text.splitlines() == ["email"] + [f"x{i}@example.com" for i in range(5)]


async def test_status_change_denied_can_skip_the_whole_row(sandbox: Sandbox, key: str) -> None:
    cols = ["email", "Name", "email_status"]
    await call(sandbox, "importContacts", key, import_body(cols, [["n@example.com", "Old", ""]]))
    sandbox.state.config.status_change_denied_skips_row = True
    try:
        body = import_body(cols, [["n@example.com", "New", "unsubscribed"]])
        result = (await call(sandbox, "importContacts", key, body))["result"]
    finally:
        sandbox.state.config.status_change_denied_skips_row = False
    assert (result["updated"], result["invalid"], result["log"][0]["code"]) == (0, 1, "status_change_denied")
    stored = await contact(sandbox, key, "n@example.com")
    assert (stored["status"], stored["fields"]) == ("new", {"Name": "Old"})


async def test_per_ip_and_per_method_limits() -> None:
    config = UnisenderSandboxConfig(
        calls_per_minute=None, ip_calls_per_minute=3, method_limits={"getFields": 1}, accounts={"ip1": "one"}
    )
    app = create_unisender_sandbox(config)
    async with serve_in_background(app) as url, httpx.AsyncClient(verify=tls_context(), base_url=url) as http:
        sb = Sandbox(url, app, http)
        assert "result" in await call(sb, "getFields", "ip1")
        assert (await call(sb, "getFields", "ip1"))["code"] == "api_call_limit_exceeded_for_api_key"
        assert "result" in await call(sb, "getLists", "ip1")
        assert (await call(sb, "getLists", "ip1"))["code"] == "api_call_limit_exceeded_for_ip"


async def test_slow_receiver_times_out_and_is_retried() -> None:
    config = UnisenderSandboxConfig(
        accounts={"slow": "s"}, hook_timeout_seconds=0.2, hook_retry_interval_seconds=0.05, hook_max_retries=1
    )
    app = create_unisender_sandbox(config)
    receiver = Receiver("", [], [])
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), base_url=url) as http,
        serve_in_background(receiver_app(receiver, delay=0.5)) as hook_base,
    ):
        sb = Sandbox(url, app, http)
        await call(sb, "setHook", "slow", {"hook_url": f"{hook_base}/hook", "events[]": "unsubscribe"})
        await call(sb, "importContacts", "slow", import_body(["email"], [["t@example.com"]]))
        await http.post("/_sandbox/accounts/slow/contacts/t@example.com/unsubscribe", json={})
        await wait_for(lambda: len(sb.state.deliveries) == 2)
        assert [(d["retry_count"], d["error"], d["delivered"]) for d in sb.state.deliveries] == [
            (0, "ReadTimeout", False),
            (1, "ReadTimeout", False),
        ]
        await wait_for(lambda: sb.state.accounts["slow"].hooks[f"{hook_base}/hook"].status == "stopped")
