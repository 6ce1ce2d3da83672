"""Console sign-in, its cookie, CSRF refusals, sign-out and expiry, over real HTTP on the real database."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from app.console.auth import COOKIE
from app.context import tls_context
from app.main import create_app
from app.servers import serve_in_background
from tests.conftest import raw_sql
from tests.console.support import csrf_of, page_csrf, sign_in


def _fresh(api: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client of its own (own cookie jar) on the same service."""
    return httpx.AsyncClient(verify=tls_context(), base_url=str(api.base_url), timeout=10)


async def _sessions(settings: Settings) -> list[dict[str, object]]:
    assert settings.database_url
    rows = await raw_sql(settings.database_url, "SELECT * FROM console_session")
    return [dict(r) for r in rows]


async def test_nothing_is_reachable_without_a_session(api: httpx.AsyncClient) -> None:
    for path in ("/console/accounts", "/console/accounts/1", "/console/accounts/1/mapping"):
        answer = await api.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == f"/console/sign-in?next={path}"
    answer = await api.get("/console/runs/x.json")
    assert answer.status_code == 401
    assert answer.json()["error"] == "console_sign_in_required"
    for path in ("/console/accounts/1/sync", "/console/sign-out", "/console/accounts/1/mapping/preview"):
        answer = await api.post(path, data={"csrf_token": "x"})
        assert answer.status_code == 401, path
        assert "console_sign_in_required" in answer.text
    # The admin token as a bearer header is the API's credential, not a console session.
    answer = await api.get("/console/accounts", headers={"Authorization": "Bearer whatever"})
    assert answer.status_code == 303


async def test_a_wrong_token_is_refused_and_opens_no_session(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    answer = await sign_in(api, "not-the-token")
    assert answer.status_code == 401
    assert "That is not the operator token." in answer.text
    assert COOKIE not in api.cookies
    assert await _sessions(settings) == []


async def test_sign_in_sets_a_strict_httponly_cookie_whose_hash_alone_is_stored(
    api: httpx.AsyncClient, settings: Settings, admin_token: str
) -> None:
    answer = await sign_in(api, admin_token)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/accounts"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    assert "secure" not in flags  # the public URL is http here
    value = api.cookies[COOKIE]
    (row,) = await _sessions(settings)
    # An HMAC of the cookie under the operator token: the table alone cannot sign anyone in.
    key = settings.admin_token.get_secret_value().encode()
    assert row["token_hash"] == hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
    assert value not in str(row)
    lifetime = row["expires_at"] - row["created_at"]  # type: ignore[operator]
    assert abs(lifetime - timedelta(hours=settings.console_session_hours)) < timedelta(seconds=5)
    page = await api.get("/console/accounts")
    assert page.status_code == 200
    assert "<h1>Accounts</h1>" in page.text
    # One policy, the console's own (it runs its script), not the middleware's script-less one as well.
    assert page.headers.get_list("content-security-policy") == [page.headers["content-security-policy"]]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


async def test_the_cookie_is_secure_when_the_public_url_is_https(
    settings: Settings, clean_db: str, clean_redis: None, admin_token: str
) -> None:
    app = create_app(settings.model_copy(update={"public_url": "https://sync.example.com"}))
    async with serve_in_background(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        form = await client.get("/console/sign-in")
        assert "secure" in form.headers["set-cookie"].lower()
        answer = await client.post(
            "/console/sign-in",
            data={"token": admin_token, "csrf_token": csrf_of(form.text)},
            # httpx keeps a Secure cookie from an http URL out of the request: hand it over as the browser would.
            headers={"Cookie": form.headers["set-cookie"].split(";")[0]},
        )
        assert answer.status_code == 303
        cookie = next(h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
        assert "; secure" in cookie.lower()


async def test_forms_without_their_csrf_token_are_refused(
    api: httpx.AsyncClient, settings: Settings, admin_token: str
) -> None:
    # The sign-in form itself: without the token its cookie holds, nothing is checked and no session opens.
    async with _fresh(api) as other:
        await other.get("/console/sign-in")
        refused = await other.post("/console/sign-in", data={"token": admin_token})
        assert refused.status_code == 403
        assert "csrf_invalid" in refused.text
        refused = await other.post("/console/sign-in", data={"token": admin_token, "csrf_token": "forged"})
        assert refused.status_code == 403
    assert await _sessions(settings) == []
    assert (await sign_in(api, admin_token)).status_code == 303
    token = await page_csrf(api)
    for data in ({}, {"csrf_token": ""}, {"csrf_token": token[:-1] + ("0" if token[-1] != "0" else "1")}):
        answer = await api.post("/console/sign-out", data=data)
        assert answer.status_code == 403
        assert "Form refused" in answer.text
        assert 'id="error-code">csrf_invalid<' in answer.text
    assert len(await _sessions(settings)) == 1  # still signed in: nothing was done
    # Another session's token does not fit this one.
    async with _fresh(api) as other:
        assert (await sign_in(other, admin_token)).status_code == 303
        answer = await other.post("/console/sign-out", data={"csrf_token": token})
        assert answer.status_code == 403


async def test_a_new_operator_token_ends_every_session(
    api: httpx.AsyncClient, settings: Settings, admin_token: str
) -> None:
    """A leaked operator token is revoked by rotating it: the sessions signed in with it end too."""
    assert (await sign_in(api, admin_token)).status_code == 303
    assert (await api.get("/console/accounts")).status_code == 200
    rotated = settings.model_copy(update={"admin_token": SecretStr("a-new-operator-token-" + "x" * 24)})
    answers = {}
    for label, restarted in (("same token", settings), ("new token", rotated)):
        async with (
            serve_in_background(create_app(restarted)) as url,
            httpx.AsyncClient(base_url=url, timeout=10, cookies=api.cookies) as after,
        ):
            answers[label] = await after.get("/console/accounts", follow_redirects=False)
    assert answers["same token"].status_code == 200  # a restart alone keeps the session
    assert answers["new token"].status_code == 303
    assert answers["new token"].headers["location"].startswith("/console/sign-in")


async def test_sign_out_ends_the_session(
    api: httpx.AsyncClient, settings: Settings, admin_token: str
) -> None:
    await sign_in(api, admin_token)
    value = api.cookies[COOKIE]
    answer = await api.post("/console/sign-out", data={"csrf_token": await page_csrf(api)})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
    assert await _sessions(settings) == []
    # The old cookie, replayed, opens nothing.
    async with _fresh(api) as replay:
        replay.cookies.set(COOKIE, value, path="/console")
        assert (await replay.get("/console/accounts")).status_code == 303


async def test_an_expired_session_is_refused(
    api: httpx.AsyncClient, settings: Settings, admin_token: str
) -> None:
    await sign_in(api, admin_token)
    assert (await api.get("/console/accounts")).status_code == 200
    assert settings.database_url
    await raw_sql(
        settings.database_url, "UPDATE console_session SET expires_at = now() - interval '1 second'"
    )
    answer = await api.get("/console/accounts")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")
    assert (await api.get("/console/runs/x.json")).status_code == 401
    # The next sign-in prunes it.
    await sign_in(api, admin_token)
    assert len(await _sessions(settings)) == 1


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/docs"])
async def test_sign_in_goes_back_to_console_pages_only(
    api: httpx.AsyncClient, admin_token: str, target: str
) -> None:
    form = await api.get("/console/sign-in", params={"next": target})
    answer = await api.post(
        "/console/sign-in", data={"token": admin_token, "csrf_token": csrf_of(form.text), "next": target}
    )
    assert answer.headers["location"] == "/console/accounts"


async def test_sign_in_attempts_are_limited_per_client(api: httpx.AsyncClient, admin_token: str) -> None:
    """Guessing the operator token online: ten tries a minute from one address, then 429 with Retry-After,
    even for the right token, and no session opened."""
    for _ in range(10):
        assert (await sign_in(api, "not-the-token")).status_code == 401
    refused = await sign_in(api, admin_token)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert "Too many sign-in attempts" in refused.text
    assert COOKIE not in api.cookies
