"""The public OAuth endpoints under abuse: /auth writes nothing and answers alike for every account without a
valid link signature; bad referers are refused before anything is stored; code exchanges (which send our client
secret to Kommo) are capped per account, whoever triggers them."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from app.db.base import Base
from tests.accounts.conftest import consent, follow, install, kommo_stats, start_auth
from tests.conftest import Stack, raw_sql


async def _fingerprint(stack: Stack) -> list[tuple[str, int, str]]:
    """Every row of every table (count and hash): the requests below must not change a single one."""
    parts = [
        f"SELECT '{t.name}' AS tbl, count(*) AS n,"
        f" md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) AS h FROM \"{t.name}\" r"
        for t in Base.metadata.sorted_tables
    ]
    rows = await raw_sql(stack.settings.database_url or "", " UNION ALL ".join(parts))
    return [(r["tbl"], r["n"], r["h"]) for r in rows]


def _answer(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    # The request id differs by design and the Date header by the clock; everything else must be identical.
    headers = [(k, v) for k, v in r.headers.multi_items() if k not in ("x-request-id", "date")]
    return r.status_code, headers, r.content


async def test_auth_answers_alike_for_unknown_and_known_accounts_and_writes_nothing(stack: Stack) -> None:
    inst = await install(stack)
    other = await install(stack, account_id=555, subdomain="other")
    good_sig = parse_qs(urlsplit(inst.auth_url).query)["sig"][0]
    other_sig = parse_qs(urlsplit(other.auth_url).query)["sig"][0]
    unknown = 424242
    before = await _fingerprint(stack)
    assert [n for _, n, _ in before if n] != []  # the two integrations are there

    answers = []
    for account_id in (inst.account_id, unknown):
        for params in (
            {},
            {"sig": ""},
            {"sig": "0" * 32},
            {"sig": good_sig[:-1] + ("0" if good_sig[-1] != "0" else "1")},
            {"sig": other_sig},  # a real signature, of another account
            {"sig": "é" * 40},
        ):
            answers.append(_answer(await stack.api.get("/auth", params={"id": account_id, **params})))
    assert len(set(map(repr, answers))) == 1, answers[:2]
    status, _headers, body = answers[0]
    assert status == 404
    assert b'"error":"invalid_link"' in body
    assert await _fingerprint(stack) == before

    # The signed link itself redirects to Kommo, and writes nothing either.
    r = await stack.api.get(inst.auth_url.removeprefix(stack.settings.public_url))
    assert r.status_code == 302
    assert parse_qs(urlsplit(r.headers["location"]).query)["client_id"] == [inst.client_id]
    assert await _fingerprint(stack) == before


async def test_bad_referer_is_a_400_page_and_stores_nothing(stack: Stack) -> None:
    inst = await install(stack)
    redirect = await consent(stack, inst, await start_auth(stack, inst))
    parts = urlsplit(redirect)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["referer"] == "acme.kommo.com"
    before = await _fingerprint(stack)
    for referer in (
        "evil.com",
        "acme.kommo.com.evil.com",
        "acme.evilkommo.com",
        "user@acme.kommo.com",
        "acme.kommo.com@evil.com",
        "acme.kommo.com/path",
        "https://acme.kommo.com",
        "acme.kommo.com:443",
        "acme.kommo.com.",
        " acme.kommo.com",
        "a.b.kommo.com",
        "www.kommo.com",
        "kommo.com",
        "",
    ):
        r = await stack.api.get(f"{parts.path}?{urlencode({**query, 'referer': referer})}")
        assert r.status_code == 400, referer
        assert r.headers["content-type"].startswith("text/html")
        assert "referer" in r.text
    assert await _fingerprint(stack) == before
    assert "POST /oauth2/access_token" not in (await kommo_stats(stack))["calls"]  # no secret sent anywhere
    # The genuine redirect still connects.
    assert (await follow(stack, redirect)).status_code == 200


async def test_bogus_codes_reach_kommo_at_most_the_per_account_cap(stack: Stack) -> None:
    cap = stack.settings.oauth_exchanges_per_account
    inst = await install(stack)
    state = await start_auth(stack, inst)
    redirect = await consent(stack, inst, state)
    parts = urlsplit(redirect)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    widget = {k: v for k, v in query.items() if k != "state"} | {"from_widget": "1"}
    statuses: list[int] = []
    for i in range(50):
        bogus = {**(query if i % 2 else widget), "code": f"def50200{i:040d}"}
        r = await stack.api.get(f"{parts.path}?{urlencode(bogus)}")
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert "Too many connection attempts" in r.text
    stats = await kommo_stats(stack)
    assert stats["calls"]["POST /oauth2/access_token"] == cap
    assert statuses.count(400) == cap
    assert statuses.count(429) == 50 - cap
    # While the account is throttled even the genuine redirect is refused without reaching Kommo, and
    # its state is not spent.
    r = await follow(stack, redirect)
    assert r.status_code == 429
    assert (await kommo_stats(stack))["calls"]["POST /oauth2/access_token"] == cap
    rows = await raw_sql(stack.settings.database_url or "", "SELECT count(*) AS n FROM oauth_state")
    assert rows[0]["n"] == 0
    # Another account is not affected.
    second = await install(stack, account_id=555, subdomain="other")
    r = await follow(stack, await consent(stack, second, await start_auth(stack, second)))
    assert r.status_code == 200, r.text
