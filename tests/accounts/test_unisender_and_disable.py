"""Unisender key connect (operator auth; the widget token is in test_widget.py) and Kommo's uninstall hook."""

from __future__ import annotations

from typing import Any

from app.connectors.kommo import disable_signature
from tests.accounts.conftest import Installed, connect, install
from tests.conftest import Stack, raw_sql


async def _unisender_account(stack: Stack) -> str:
    r = await stack.unisender.post("/_sandbox/accounts", json={})
    assert r.status_code == 200, r.text
    key: str = r.json()["api_key"]
    return key


async def _summary(stack: Stack, key: str) -> dict[str, Any]:
    r = await stack.unisender.get(f"/_sandbox/accounts/{key}")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


async def _esp_rows(stack: Stack) -> list[dict[str, Any]]:
    return [dict(r) for r in await raw_sql(stack.settings.database_url or "", "SELECT * FROM esp_account")]


def _hook_url(stack: Stack, inst: Installed) -> str:
    return f"{stack.settings.public_url}/webhooks/unisender/{inst.account_id}?token={inst.webhook_token}"


async def test_connect_with_good_key_creates_list_and_hook(stack: Stack) -> None:
    inst = await install(stack)
    key = await _unisender_account(stack)
    path = f"/integration/{inst.account_id}/unisender"
    r = await stack.api.post(path, json={"api_key": key}, headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert key not in r.text
    assert out["account_id"] == inst.account_id
    assert out["provider"] == "unisender"
    assert out["hook_url_registered"] is True
    summary = await _summary(stack, key)
    lists = [lst for lst in summary["lists"] if lst["title"] == "contactsync"]
    assert [lst["id"] for lst in lists] == [out["list_id"]]
    assert [h["hook_url"] for h in summary["hooks"]] == [_hook_url(stack, inst)]
    assert "unsubscribe" in summary["hooks"][0]["events"]

    rows = await _esp_rows(stack)
    assert len(rows) == 1
    assert rows[0]["list_id"] == out["list_id"]
    assert rows[0]["api_key"].startswith("gAAAAA")
    assert key not in rows[0]["api_key"]
    assert rows[0]["checked_at"] is not None
    assert rows[0]["hook_registered_at"] is not None

    # Posting again reuses the "contactsync" list instead of creating a second one.
    r = await stack.api.post(path, json={"api_key": key}, headers=stack.admin_headers)
    assert r.status_code == 200
    assert r.json()["list_id"] == out["list_id"]
    titles = [lst["title"] for lst in (await _summary(stack, key))["lists"]]
    assert titles.count("contactsync") == 1

    view = (await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)).json()
    assert view["unisender"]["connected"] is True
    assert view["unisender"]["list_id"] == out["list_id"]
    assert view["unisender"]["hook_registered"] is True
    assert view["unisender"]["checked_at"]


async def test_given_list_must_exist(stack: Stack) -> None:
    inst = await install(stack)
    key = await _unisender_account(stack)
    path = f"/integration/{inst.account_id}/unisender"
    r = await stack.api.post(path, json={"api_key": key, "list_id": 987654}, headers=stack.admin_headers)
    assert r.status_code == 422
    assert r.json()["error"] == "unknown_list"
    assert await _esp_rows(stack) == []
    r = await stack.unisender.post(
        "/en/api/createList", params={"format": "json"}, data={"api_key": key, "title": "Customers"}
    )
    list_id = r.json()["result"]["id"]
    r = await stack.api.post(path, json={"api_key": key, "list_id": list_id}, headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["list_id"] == list_id
    assert [lst["title"] for lst in (await _summary(stack, key))["lists"]] == ["Customers"]


async def test_bad_key_is_422_and_nothing_stored(stack: Stack) -> None:
    inst = await install(stack)
    r = await stack.api.post(
        f"/integration/{inst.account_id}/unisender",
        json={"api_key": "definitely-not-a-key"},
        headers=stack.admin_headers,
    )
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_api_key"
    # Unisender's own words reach the person who pasted the key (the sandbox answers as Unisender does).
    assert r.json()["detail"] == "Unisender refused the API key: AK100310-02."
    assert "definitely-not-a-key" not in r.text
    assert await _esp_rows(stack) == []


async def test_upstream_failure_is_502(stack: Stack) -> None:
    inst = await install(stack)
    key = await _unisender_account(stack)
    r = await stack.unisender.post("/_sandbox/faults", json={"rate": 1.0, "kinds": ["http_503"], "seed": 1})
    assert r.status_code == 200, r.text
    r = await stack.api.post(
        f"/integration/{inst.account_id}/unisender", json={"api_key": key}, headers=stack.admin_headers
    )
    assert r.status_code == 502
    assert r.json()["error"] == "upstream_error"
    assert await _esp_rows(stack) == []


async def test_unknown_account_with_operator_token_is_404(stack: Stack) -> None:
    key = await _unisender_account(stack)
    r = await stack.api.post("/integration/777/unisender", json={"api_key": key}, headers=stack.admin_headers)
    assert r.status_code == 404


async def test_disable_hook_from_sandbox_uninstall(stack: Stack) -> None:
    inst = await connect(stack)
    url = stack.settings.database_url or ""
    assert len(await raw_sql(url, "SELECT 1 FROM kommo_token")) == 1
    r = await stack.kommo.post("/_sandbox/uninstall", json={"client_id": inst.client_id, "subdomain": "acme"})
    assert r.status_code == 200, r.text
    assert r.json()["hook_status"] == 200, r.json()
    rows = await raw_sql(
        url, "SELECT status, disabled_at FROM integration WHERE account_id = $1", inst.account_id
    )
    assert rows[0]["status"] == "disabled"
    assert rows[0]["disabled_at"] is not None
    assert await raw_sql(url, "SELECT 1 FROM kommo_token") == []
    view = (await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)).json()
    assert view["status"] == "disabled"
    assert view["kommo"]["connected"] is False


async def test_disable_hook_bad_signature_is_401(stack: Stack) -> None:
    inst = await connect(stack)
    url = stack.settings.database_url or ""
    good = disable_signature(inst.account_id, client_id=inst.client_id, client_secret=inst.client_secret)
    wrong_key = disable_signature(inst.account_id, client_id=inst.client_id, client_secret="not-the-secret")
    cases = [
        {"client_uuid": inst.client_id, "account_id": str(inst.account_id), "signature": wrong_key},
        {"client_uuid": "other-client", "account_id": str(inst.account_id), "signature": good},
        {"client_uuid": inst.client_id, "account_id": "1", "signature": good},
        {"client_uuid": inst.client_id, "account_id": "abc", "signature": good},
        # Found by schemathesis: "³".isdigit() is True but int("³") raises (was a 500); "١٢" reads as 12;
        # 20 digits do not fit a bigint (was a 400 from the database).
        {"client_uuid": inst.client_id, "account_id": "³", "signature": good},
        {"client_uuid": inst.client_id, "account_id": "١٢", "signature": good},
        {"client_uuid": inst.client_id, "account_id": "9" * 20, "signature": good},
        {"client_uuid": inst.client_id, "account_id": str(inst.account_id)},
        {},
    ]
    for params in cases:
        r = await stack.api.get("/kommo/disable", params=params)
        assert r.status_code == 401, params
        assert r.json()["error"] == "invalid_signature"
    rows = await raw_sql(url, "SELECT status FROM integration WHERE account_id = $1", inst.account_id)
    assert rows[0]["status"] == "connected"
    assert len(await raw_sql(url, "SELECT 1 FROM kommo_token")) == 1

    params = {"client_uuid": inst.client_id, "account_id": str(inst.account_id), "signature": good}
    r = await stack.api.get("/kommo/disable", params=params)
    assert r.status_code == 200
    assert r.json() == {"status": "disabled"}
