"""The Kommo OAuth dance over real HTTP: /auth → sandbox consent → /auth/callback; and the ways it must fail."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.fernet import Fernet

from tests.accounts.conftest import consent, follow, install, kommo_stats, start_auth
from tests.conftest import Stack, raw_sql


async def _state_rows(stack: Stack) -> list[tuple[str, bool]]:
    rows = await raw_sql(stack.settings.database_url or "", "SELECT nonce, used_at FROM oauth_state")
    return [(r["nonce"], r["used_at"] is not None) for r in rows]


async def _token_rows(stack: Stack) -> list[dict[str, object]]:
    rows = await raw_sql(stack.settings.database_url or "", "SELECT * FROM kommo_token")
    return [dict(r) for r in rows]


async def _status(stack: Stack, account_id: int) -> str:
    rows = await raw_sql(
        stack.settings.database_url or "", "SELECT status FROM integration WHERE account_id = $1", account_id
    )
    return str(rows[0]["status"])


def _nonce(secret_keys: str, state: str) -> str:
    blob = Fernet(secret_keys.split(",")[0].encode()).decrypt(state.encode())
    return str(json.loads(blob)["n"])


async def test_full_dance_connects_stores_encrypted_tokens_and_registers_webhooks(stack: Stack) -> None:
    inst = await install(stack)
    r = await stack.api.get(inst.auth_url.removeprefix(stack.settings.public_url))
    assert r.status_code == 302
    location = urlsplit(r.headers["location"])
    query = parse_qs(location.query)
    assert query["client_id"] == [inst.client_id]
    state = query["state"][0]
    assert await _state_rows(stack) == []  # the public /auth writes nothing; the state is self-contained

    redirect = await consent(stack, inst, state)
    r = await follow(stack, redirect)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "connected" in r.text.lower()

    assert await _status(stack, inst.account_id) == "connected"
    assert [used for _, used in await _state_rows(stack)] == [True]
    tokens = await _token_rows(stack)
    assert len(tokens) == 1
    # Encrypted at rest: what the database holds is a Fernet token, not a JWT or a def50200… refresh token.
    assert str(tokens[0]["access_token"]).startswith("gAAAAA")
    assert str(tokens[0]["refresh_token"]).startswith("gAAAAA")
    assert "def50200" not in str(tokens[0]["refresh_token"])
    expires_in = tokens[0]["expires_at"].timestamp() - time.time()  # type: ignore[attr-defined]
    assert 86_000 < expires_in <= 86_400

    r = await stack.kommo.get(f"/_sandbox/accounts/{inst.subdomain}/webhooks")
    assert r.status_code == 200
    hooks = r.json()
    hooks = hooks.get("webhooks", hooks) if isinstance(hooks, dict) else hooks
    assert len(hooks) == 1
    assert hooks[0]["destination"] == inst.webhook_url
    assert set(hooks[0]["settings"]) == {"add_contact", "update_contact", "delete_contact", "restore_contact"}

    r = await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)
    assert r.json()["kommo"]["webhooks_registered"] is True
    assert r.json()["last_error"] is None


async def test_replayed_state_is_refused_and_changes_nothing(stack: Stack) -> None:
    inst = await install(stack)
    state = await start_auth(stack, inst)
    redirect = await consent(stack, inst, state)
    assert (await follow(stack, redirect)).status_code == 200
    before = await _token_rows(stack)
    grants_before = (await kommo_stats(stack))["grants"]

    # The same redirect again, and the same state with a fresh code.
    r = await follow(stack, redirect)
    assert r.status_code == 400
    assert "already used" in r.text
    r = await follow(stack, await consent(stack, inst, state))
    assert r.status_code == 400
    assert await _token_rows(stack) == before
    assert (await kommo_stats(stack))["grants"] == grants_before  # no code was exchanged


async def test_forged_state_is_refused_and_nothing_is_consumed(stack: Stack, secret_keys: str) -> None:
    inst = await install(stack)
    state = await start_auth(stack, inst)
    # A tampered copy of a real state, and a state made with another key for the same account and nonce.
    nonce = _nonce(secret_keys, state)
    other_key = Fernet(Fernet.generate_key())
    forged = other_key.encrypt(json.dumps({"a": inst.account_id, "n": nonce}).encode()).decode()
    tampered = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    for bad in (forged, tampered, "garbage"):
        r = await follow(stack, await consent(stack, inst, bad))
        assert r.status_code == 400, bad
        assert "invalid or has expired" in r.text
    assert await _token_rows(stack) == []
    assert await _state_rows(stack) == []
    assert await _status(stack, inst.account_id) == "pending"
    # The genuine state still works afterwards, and is then spent.
    assert (await follow(stack, await consent(stack, inst, state))).status_code == 200
    assert await _state_rows(stack) == [(nonce, True)]


async def test_expired_state_is_refused(stack: Stack, secret_keys: str) -> None:
    inst = await install(stack)
    nonce = _nonce(secret_keys, await start_auth(stack, inst))
    blob = json.dumps({"a": inst.account_id, "n": nonce}, separators=(",", ":")).encode()
    old = Fernet(secret_keys.split(",")[0].encode()).encrypt_at_time(blob, int(time.time()) - 601).decode()
    r = await follow(stack, await consent(stack, inst, old))
    assert r.status_code == 400
    assert await _token_rows(stack) == []
    assert await _state_rows(stack) == []


async def test_denied_consent_is_a_400_page(stack: Stack) -> None:
    inst = await install(stack)
    state = await start_auth(stack, inst)
    r = await follow(stack, await consent(stack, inst, state, deny=True))
    assert r.status_code == 400
    assert "declined" in r.text
    assert await _token_rows(stack) == []
    assert await _status(stack, inst.account_id) == "pending"


async def test_failed_exchange_or_wrong_client_stores_nothing(stack: Stack) -> None:
    inst = await install(stack)
    state = await start_auth(stack, inst)
    redirect = await consent(stack, inst, state)
    parts = urlsplit(redirect)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}

    bad_code = {**query, "code": "def50200" + "0" * 40}
    r = await stack.api.get(f"{parts.path}?{urlencode(bad_code)}")
    assert r.status_code == 400
    assert "did not accept" in r.text
    other_client = {**query, "client_id": "someone-else"}
    r = await stack.api.get(f"{parts.path}?{urlencode(other_client)}")
    assert r.status_code == 400
    bad_referer = {**query, "referer": "evil.example.com"}
    r = await stack.api.get(f"{parts.path}?{urlencode(bad_referer)}")
    assert r.status_code == 400
    assert await _token_rows(stack) == []
    # Nothing was consumed: the genuine redirect still completes.
    assert await _state_rows(stack) == []
    assert (await follow(stack, redirect)).status_code == 200


async def test_code_for_another_account_is_refused(stack: Stack) -> None:
    inst = await install(stack)
    await stack.kommo.post("/_sandbox/accounts", json={"subdomain": "other", "id": 999})
    state = await start_auth(stack, inst)
    r = await stack.kommo.post(
        "/_sandbox/authorize", json={"client_id": inst.client_id, "subdomain": "other", "state": state}
    )
    resp = await follow(stack, r.json()["redirect_url"])
    assert resp.status_code == 400
    assert "not account" in resp.text
    assert await _token_rows(stack) == []


async def test_widget_install_without_state(stack: Stack) -> None:
    inst = await install(stack)
    redirect = await consent(stack, inst, None)
    parts = urlsplit(redirect)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert "state" not in query
    # Without from_widget a missing state is refused.
    r = await stack.api.get(f"{parts.path}?{urlencode(query)}")
    assert r.status_code == 400
    # from_widget with a client id that is not the integration's: refused.
    r = await stack.api.get(f"{parts.path}?{urlencode({**query, 'from_widget': '1', 'client_id': 'nope'})}")
    assert r.status_code == 400
    assert await _token_rows(stack) == []
    r = await stack.api.get(f"{parts.path}?{urlencode({**query, 'from_widget': '1'})}")
    assert r.status_code == 200, r.text
    assert await _status(stack, inst.account_id) == "connected"
    assert len(await _token_rows(stack)) == 1
