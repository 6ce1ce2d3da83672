"""The Unisender sandbox answers like the real classic API (spec: shared/specs/unisender-api.md), over loopback HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.sandbox.unisender import SandboxState, UnisenderSandboxConfig, create_unisender_sandbox
from app.serving import serve_in_background

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
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
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
