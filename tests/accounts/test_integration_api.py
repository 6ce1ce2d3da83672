"""POST /integration, operator auth, validation envelope, GET /accounts shapes."""

from __future__ import annotations

import pytest

from app.security.tokens import hash_token
from tests.accounts.conftest import connect, install, integration_body
from tests.conftest import Stack, raw_sql


async def test_create_then_update_keeps_token_and_hides_secret(stack: Stack) -> None:
    body = integration_body()
    r = await stack.api.post("/integration", json=body, headers=stack.admin_headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"account_id", "status", "auth_url", "webhook_url"}
    assert created["status"] == "pending"
    public = stack.settings.public_url
    assert created["auth_url"].startswith(f"{public}/auth?id={body['account_id']}&sig=")
    assert created["webhook_url"].startswith(f"{public}/webhooks/kommo/{body['account_id']}?token=")
    assert body["client_secret"] not in r.text
    token = created["webhook_url"].split("token=", 1)[1]
    assert len(token) >= 32

    rows = await raw_sql(
        stack.settings.database_url or "",
        "SELECT client_secret, webhook_token, webhook_token_hash, subdomain FROM integration"
        " WHERE account_id = $1",
        body["account_id"],
    )
    assert len(rows) == 1
    stored = rows[0]["client_secret"]
    assert body["client_secret"] not in stored
    assert token not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert rows[0]["webhook_token_hash"] == hash_token(token)
    assert rows[0]["webhook_token"].startswith("gAAAAA")
    assert token not in rows[0]["webhook_token"]

    update = {**body, "subdomain": "acme-two", "client_secret": "rotated-secret-value"}
    r = await stack.api.post("/integration", json=update, headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    assert r.json()["webhook_url"] == created["webhook_url"]  # the token survives an update
    assert "rotated-secret-value" not in r.text
    rows = await raw_sql(
        stack.settings.database_url or "",
        "SELECT subdomain, webhook_token_hash FROM integration WHERE account_id = $1",
        body["account_id"],
    )
    assert rows[0]["subdomain"] == "acme-two"
    assert rows[0]["webhook_token_hash"] == hash_token(token)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"account_id": None}, "account_id"),
        ({"account_id": "abc"}, "account_id"),
        ({"account_id": "123"}, "account_id"),  # strict: a string is not an id
        ({"account_id": 0}, "account_id"),
        ({"subdomain": "Acme"}, "subdomain"),
        ({"subdomain": "acme.kommo.com"}, "subdomain"),
        ({"subdomain": "a" * 64}, "subdomain"),
        ({"client_secret": ""}, "client_secret"),
        ({"client_id": 5}, "client_id"),
        ({"redirect_uri": "ftp://x.example/cb"}, "redirect_uri"),
        ({"redirect_uri": "not a url"}, "redirect_uri"),
    ],
)
async def test_validation_errors_use_the_envelope(
    stack: Stack, change: dict[str, object], field: str
) -> None:
    body = integration_body(**change)
    if change.get(field, "") is None:
        del body[field]
    r = await stack.api.post("/integration", json=body, headers=stack.admin_headers)
    assert r.status_code == 422, r.text
    data = r.json()
    assert data["error"] == "validation_error"
    assert isinstance(data["detail"], str)
    assert field in [f["field"] for f in data["fields"]]
    rows = await raw_sql(stack.settings.database_url or "", "SELECT count(*) AS n FROM integration")
    assert rows[0]["n"] == 0


async def test_non_json_body_is_a_validation_error(stack: Stack) -> None:
    r = await stack.api.post(
        "/integration", content=b"nope", headers={**stack.admin_headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"] == "validation_error"


async def test_operator_endpoints_refuse_missing_or_wrong_token(stack: Stack) -> None:
    for method, path in [("POST", "/integration"), ("GET", "/accounts"), ("GET", "/accounts/32720107")]:
        for auth in (None, "Bearer wrong-token-wrong-token", "Basic abc", "Bearer", "Bearer x y"):
            headers = {"Authorization": auth} if auth is not None else {}
            r = await stack.api.request(method, path, json=integration_body(), headers=headers)
            assert r.status_code == 401, (method, path, auth, r.text)
            assert r.json()["error"] == "unauthorized"
    rows = await raw_sql(stack.settings.database_url or "", "SELECT count(*) AS n FROM integration")
    assert rows[0]["n"] == 0


async def test_accounts_views(stack: Stack) -> None:
    r = await stack.api.get("/accounts", headers=stack.admin_headers)
    assert r.status_code == 200
    assert r.json() == []
    r = await stack.api.get("/accounts/1", headers=stack.admin_headers)
    assert r.status_code == 404
    assert r.json() == {"error": "unknown_account", "detail": "Account 1 is not registered."}

    pending = await install(stack, account_id=111, subdomain="pending")
    inst = await connect(stack, account_id=222, subdomain="beta")
    url = stack.settings.database_url or ""
    # Some queue state for the connected account, written the way the sync engine records it.
    await raw_sql(
        url,
        "INSERT INTO outbox (account_id, email, payload, payload_hash, status, attempts, next_attempt_at,"
        " last_error, reject_code, created_at, updated_at) VALUES"
        " ($1, 'a@x.io', '{}', 'h', 'pending', 0, now(), NULL, NULL, now(), now()),"
        " ($1, 'b@x.io', '{}', 'h', 'rejected', 1, now(), 'Invalid email', 'invalid_email', now(), now()),"
        " ($1, 'c@x.io', '{}', 'h', 'dead', 9, now(), 'gave up', NULL, now(), now())",
        inst.account_id,
    )
    await raw_sql(
        url,
        "INSERT INTO webhook_event (account_id, source, dedupe_key, body, status, attempts, received_at)"
        " VALUES ($1, 'kommo', 'k1', 'x', 'pending', 0, now()), ($1, 'kommo', 'k2', 'x', 'done', 1, now())",
        inst.account_id,
    )

    r = await stack.api.get("/accounts", headers=stack.admin_headers)
    assert r.status_code == 200
    views = {v["account_id"]: v for v in r.json()}
    assert set(views) == {pending.account_id, inst.account_id}
    p = views[pending.account_id]
    assert p["status"] == "pending"
    assert p["kommo"] == {
        "connected": False,
        "token_expires_at": None,
        "needs_reauth": False,
        "webhooks_registered": False,
    }
    assert p["unisender"] == {
        "connected": False,
        "list_id": None,
        "checked_at": None,
        "hook_registered": False,
    }
    assert p["outbox"] == {"pending": 0, "rejected": 0, "dead": 0}
    assert p["recent_rejections"] == []

    r = await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)
    assert r.status_code == 200
    v = r.json()
    assert v == views[inst.account_id]
    assert set(v) == {
        "account_id",
        "subdomain",
        "host",
        "status",
        "kommo",
        "unisender",
        "outbox",
        "events_pending",
        "events_failed",
        "recent_event_failures",
        "last_event_at",
        "last_error",
        "last_error_at",
        "recent_rejections",
        "signups",
    }
    assert v["signups"] == {}  # newsletter signups by state: none yet
    assert v["status"] == "connected"
    assert v["subdomain"] == "beta"
    assert (v["host"], p["host"]) == ("beta.kommo.com", None)  # the redirect's referer; unknown before it
    assert v["kommo"]["connected"] is True
    assert v["kommo"]["webhooks_registered"] is True
    assert v["kommo"]["token_expires_at"] is not None
    assert v["outbox"] == {"pending": 1, "rejected": 1, "dead": 1}
    assert v["events_pending"] == 1
    assert v["last_error"] is None
    assert len(v["recent_rejections"]) == 1
    rej = v["recent_rejections"][0]
    assert (rej["email"], rej["code"], rej["message"]) == ("b@x.io", "invalid_email", "Invalid email")
    assert rej["at"]
    # No secret of any kind in the operator view.
    for secret in (inst.client_secret, inst.webhook_token, pending.client_secret):
        assert secret not in r.text


async def test_recent_rejections_capped_at_20(stack: Stack) -> None:
    inst = await install(stack)
    values = ", ".join(
        f"($1, 'r{i}@x.io', '{{}}', 'h', 'rejected', 1, now(), 'bad', 'invalid_email',"
        f" now(), now() - interval '{i} seconds')"
        for i in range(25)
    )
    await raw_sql(
        stack.settings.database_url or "",
        "INSERT INTO outbox (account_id, email, payload, payload_hash, status, attempts, next_attempt_at,"
        f" last_error, reject_code, created_at, updated_at) VALUES {values}",
        inst.account_id,
    )
    r = await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)
    v = r.json()
    assert v["outbox"]["rejected"] == 25
    emails = [x["email"] for x in v["recent_rejections"]]
    assert emails == [f"r{i}@x.io" for i in range(20)]  # newest first
