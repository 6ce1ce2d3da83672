"""Bad input never breaks the service: hypothesis fuzzes the Kommo webhook and Unisender hook endpoints over
HTTP (never 5xx, nothing stored from a refused request); oversized and deeply nested bodies are refused with
4xx; ids beyond int64 in every operator endpoint's params and bodies are refused with 4xx, never 5xx. The
OpenAPI-driven property test of every operator endpoint is ``test_schemathesis.py``."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.context import tls_context
from tests.conftest import _CLIENT_LIMITS, Stack, raw_sql
from tests.support.e2e import Account, connect_account

FORM = {"Content-Type": "application/x-www-form-urlencoded"}

_segment = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", max_size=12),
    st.sampled_from(
        ["contacts", "update", "add", "delete", "account", "id", "custom_fields", "values", "0", ""]
    ),
)
_key = st.builds(
    lambda head, parts: head + "".join(f"[{p}]" for p in parts),
    st.sampled_from(["contacts", "account", "leads", "x", "", "[", "]"]),
    st.lists(_segment, max_size=8),
)
_value = st.one_of(st.text(max_size=40), st.integers().map(str), st.just(""), st.just("[]"))
_pairs = st.lists(st.tuples(_key, _value), max_size=25)
_raw = st.one_of(
    _pairs.map(lambda ps: "&".join(f"{quote(k, safe='[]')}={quote(v)}" for k, v in ps)),
    # Raw NUL bytes have their own test below (test_nul_byte_body_is_refused).
    st.binary(max_size=300).map(lambda b: b.decode("latin-1").replace("\x00", "")),
    st.builds(lambda n: "contacts" + "[a]" * n + "=1", st.integers(0, 3000)),
    st.builds(lambda n: "k" * n + "=1", st.integers(1, 20_000)),
)


def _envelope(resp: httpx.Response) -> None:
    body = resp.json()
    assert isinstance(body, dict), resp.text
    assert {"error", "detail"} <= set(body), resp.text


async def _event_count(stack: Stack) -> int:
    assert stack.settings.database_url
    rows = await raw_sql(stack.settings.database_url, "SELECT count(*) AS n FROM webhook_event")
    return int(rows[0]["n"])


async def test_fuzz_webhook_endpoints(stack: Stack) -> None:
    account = await connect_account(stack)
    loop = asyncio.get_running_loop()
    base = str(stack.api.base_url)

    def count() -> int:
        return asyncio.run_coroutine_threadsafe(_event_count(stack), loop).result(10)

    # One client for every example (a client of its own each loaded the CA bundle 150 times), its idle
    # connections dropped before the server's 5-s keep-alive closes them.
    client = httpx.Client(base_url=base, timeout=10, verify=tls_context(), limits=_CLIENT_LIMITS)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=_raw, target=st.sampled_from(["kommo", "unisender"]))
    def fuzz(body: str, target: str) -> None:
        before = count()
        resp = client.post(
            f"/webhooks/{target}/{account.account_id}",
            params={"token": account.webhook_token},
            content=body.encode("utf-8", errors="surrogatepass"),
            headers=FORM,
        )
        assert resp.status_code < 500, (resp.status_code, resp.text, body[:200])
        if resp.status_code >= 400:
            _envelope(resp)
            assert count() == before, "a refused request stored something"

    with client:
        await asyncio.to_thread(fuzz)


async def test_nul_byte_body_is_refused(stack: Stack) -> None:
    account = await connect_account(stack)
    resp = await stack.api.post(
        f"/webhooks/kommo/{account.account_id}",
        params={"token": account.webhook_token},
        content=b"\x00",
        headers=FORM,
    )
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)


async def test_oversized_and_nested_bodies_refused(stack: Stack) -> None:
    account: Account = await connect_account(stack)
    before = await _event_count(stack)
    url = f"/webhooks/kommo/{account.account_id}"
    big = "contacts[update][0][name]=" + "a" * (stack.settings.max_body_bytes + 10)
    resp = await stack.api.post(url, params={"token": account.webhook_token}, content=big, headers=FORM)
    assert resp.status_code == 413, resp.text
    _envelope(resp)
    nested = "contacts" + "[x]" * 5000 + "=1"
    resp = await stack.api.post(url, params={"token": account.webhook_token}, content=nested, headers=FORM)
    assert 400 <= resp.status_code < 500, resp.text
    _envelope(resp)
    for token in (None, "", "wrong", account.webhook_token + "x"):
        params = {} if token is None else {"token": token}
        resp = await stack.api.post(url, params=params, content="contacts[update][0][id]=1", headers=FORM)
        assert resp.status_code == 401, resp.text
        _envelope(resp)
    assert await _event_count(stack) == before


def _operator_operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, methods in app.openapi()["paths"].items():
        if path.startswith("/webhooks/") or path in ("/healthz", "/readyz", "/metrics"):
            continue
        for method, op in methods.items():
            ops.append((method.upper(), path, op))
    return ops


async def test_out_of_range_ids_refused(stack: Stack) -> None:
    from app.main import create_app

    failures = []
    for method, path, op in _operator_operations(create_app(stack.settings)):
        params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
        concrete, query = path, {}
        for p in params:
            if p["in"] == "path":
                concrete = concrete.replace("{" + p["name"] + "}", str(10**30))
            else:
                query[p["name"]] = str(10**30)
        body = {"id": 10**30, "account_id": 10**30} if "requestBody" in op else None
        resp = await stack.api.request(method, concrete, params=query, headers=stack.admin_headers, json=body)
        if resp.status_code >= 500:
            failures.append((method, path, resp.status_code))
    assert not failures, failures
