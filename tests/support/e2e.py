"""End-to-end helpers: connect an account through the real endpoints, read both sides, wait for quiet."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx

from app.sync.mapping import contact_emails
from tests.conftest import Stack, raw_sql


@dataclass
class Account:
    account_id: int
    subdomain: str
    client_id: str
    api_key: str
    list_id: int
    webhook_token: str


async def connect_account(
    stack: Stack,
    *,
    subdomain: str = "acme",
    seed: int = 0,
    contacts: int = 0,
    api_key: str | None = None,
    domain: str | None = None,
    custom_fields: bool = False,
    integration: dict[str, str] | None = None,
) -> Account:
    """Create a Kommo account (optionally seeded; on ``domain``, default kommo.com), register the integration,
    do OAuth, connect Unisender (with a new Unisender account, whose key is ``api_key`` when given).
    ``custom_fields``: the seed also fills one user field of every type and spreads responsible users.
    ``integration``: the sandbox integration (``client_id``, ``client_secret``) to install, as a public
    integration is installed in many accounts; default a new one."""
    k, api = stack.kommo, stack.api
    body = {"subdomain": subdomain, "name": subdomain.title()} | ({"domain": domain} if domain else {})
    acc = (await k.post("/_sandbox/accounts", json=body)).json()
    if contacts:
        seeding = {"count": contacts, "seed": seed} | ({"custom_fields": True} if custom_fields else {})
        r = await k.post(f"/_sandbox/accounts/{subdomain}/seed", json=seeding)
        assert r.status_code in (200, 201), r.text
    redirect = f"{stack.settings.public_url}/auth/callback"
    integ = integration or (await k.post("/_sandbox/integrations", json={"redirect_uri": redirect})).json()
    r = await api.post(
        "/integration",
        headers=stack.admin_headers,
        json={
            "account_id": acc["id"],
            "subdomain": subdomain,
            "client_id": integ["client_id"],
            "client_secret": integ["client_secret"],
            "redirect_uri": redirect,
        },
    )
    assert r.status_code == 201, r.text
    webhook_token = parse_qs(urlsplit(r.json()["webhook_url"]).query)["token"][0]
    r = await api.get(r.json()["auth_url"].replace(stack.settings.public_url, ""), follow_redirects=False)
    assert r.status_code == 302, r.text
    state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
    grant = (
        await k.post(
            "/_sandbox/authorize",
            json={"client_id": integ["client_id"], "subdomain": subdomain, "state": state},
        )
    ).json()
    r = await api.get(grant["redirect_url"].replace(stack.settings.public_url, ""))
    assert r.status_code == 200, r.text
    unisender_account = {"login": subdomain, "api_key": api_key}
    key = (await stack.unisender.post("/_sandbox/accounts", json=unisender_account)).json()["api_key"]
    r = await api.post(
        f"/integration/{acc['id']}/unisender", headers=stack.admin_headers, json={"api_key": key}
    )
    assert r.status_code == 200, r.text
    return Account(acc["id"], subdomain, integ["client_id"], key, r.json()["list_id"], webhook_token)


async def kommo_contacts(stack: Stack, account: Account) -> dict[int, dict[str, object]]:
    """Every live contact of the account, read from the sandbox's in-process state (no rate budget used)."""
    acc = stack.kommo_app.state.kommo.accounts[account.subdomain]
    email_field = acc.field_by_code("EMAIL").id
    out: dict[int, dict[str, object]] = {}
    for c in acc.contacts.values():
        if c.deleted:
            continue
        emails = [value for fid, vals in c.fields if fid == email_field for value, _enum in vals]
        tags = [acc.tags[t].name for t in c.tags if t in acc.tags]
        out[c.id] = {"name": c.name, "updated_at": c.updated_at, "emails": emails, "tags": tags}
    return out


def expected_unisender(contacts: dict[int, dict[str, object]]) -> dict[str, str]:
    """Address → Name that Unisender should hold: the most recently updated live holder's name wins."""
    best: dict[str, tuple[int, int, str]] = {}
    for cid, c in contacts.items():
        for email in contact_emails(list(c["emails"])):  # type: ignore[arg-type]
            key = (int(c["updated_at"]), cid, str(c["name"]))  # type: ignore[call-overload]
            if email not in best or key[:2] > best[email][:2]:
                best[email] = key
    return {e: v[2] for e, v in best.items()}


async def unisender_contacts(stack: Stack, account: Account) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    offset = 0
    while True:
        r = await stack.unisender.get(
            f"/_sandbox/accounts/{account.api_key}/contacts", params={"offset": offset, "limit": 1000}
        )
        page = r.json()["contacts"]
        for c in page:
            if c.get("email"):
                out[c["email"]] = c
        if len(page) < 1000:
            return out
        offset += 1000


async def create_contact(stack: Stack, account: Account, name: str, email: str) -> int:
    """One contact with one work address, created in the Kommo sandbox (its webhook fires); returns its id."""
    r = await stack.kommo.post(
        f"/_sandbox/accounts/{account.subdomain}/contacts",
        json=[
            {
                "name": name,
                "custom_fields_values": [
                    {"field_code": "EMAIL", "values": [{"value": email, "enum_code": "WORK"}]}
                ],
            }
        ],
    )
    assert r.status_code == 200, r.text
    return int(r.json()["_embedded"]["contacts"][0]["id"])


async def wait_quiet(stack: Stack, account: Account, *, within: float = 90.0) -> None:
    """Until the sandbox delivered every webhook and our inbox and outbox hold nothing pending."""
    deadline = time.monotonic() + within
    await stack.kommo.post("/_sandbox/deliveries/drain", json={"timeout": within})
    url = stack.settings.database_url
    assert url
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        rows = await raw_sql(
            url,
            "SELECT (SELECT count(*) FROM webhook_event WHERE status='pending') AS ev,"
            " (SELECT count(*) FROM outbox WHERE status='pending') AS ob,"
            " (SELECT count(*) FROM sync_run WHERE status IN ('pending','running')) AS runs",
        )
        busy = rows[0]["ev"] + rows[0]["ob"] + rows[0]["runs"]
        if busy == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        await asyncio.sleep(0.2)
    pending = await raw_sql(
        url,
        "SELECT 'outbox' AS what, email AS key, next_attempt_at::text AS at, last_error FROM outbox"
        " WHERE status = 'pending' UNION ALL SELECT 'run', id || ' ' || kind, updated_at::text, error"
        " FROM sync_run WHERE status IN ('pending','running') LIMIT 10",
    )
    raise AssertionError(f"not quiet after {within} s: {dict(rows[0])}; {[dict(r) for r in pending]}")


async def wait_for(predicate: object, *, within: float = 30.0, interval: float = 0.2, what: str = "") -> None:
    """Until ``predicate()`` (sync or async) is true; past ``within`` seconds, fail saying what was awaited."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    awaited = what or getattr(predicate, "__name__", repr(predicate))
    raise AssertionError(f"not met within {within} s: {awaited}")


async def rejected_addresses(stack: Stack) -> dict[str, str]:
    url = stack.settings.database_url
    assert url
    rows = await raw_sql(url, "SELECT email, reject_code FROM outbox WHERE status='rejected'")
    return {r["email"]: r["reject_code"] for r in rows}


async def undelivered_bodies(stack: Stack) -> str:
    """The webhook bodies in the Kommo sandbox's delivery log that no attempt delivered (so far: a retry may
    still be waiting)."""
    log = (await stack.kommo.get("/_sandbox/deliveries")).json()
    delivered = {e["body_id"] for e in log if e["ok"]}
    failed = sorted({e["body_id"] for e in log} - delivered)
    return f"webhook bodies not delivered (yet): {len(failed)} of {len({e['body_id'] for e in log})} logged"


async def assert_mirror_exact(stack: Stack, account: Account) -> int:
    """Unisender holds exactly the addresses and names Kommo implies (rejected role addresses aside), each in
    the account's list; returns how many addresses were compared."""
    expected = expected_unisender(await kommo_contacts(stack, account))
    actual = await unisender_contacts(stack, account)
    rejected = await rejected_addresses(stack)
    bad_rejections = {e: c for e, c in rejected.items() if e in expected and c != "role_address"}
    assert not bad_rejections, bad_rejections
    want = {e: n for e, n in expected.items() if e not in rejected}
    missing = sorted(set(want) - set(actual))
    extra = sorted(set(actual) - set(want))
    if missing or extra:
        # A change whose webhook Kommo gave up delivering reaches us only through the reconcile cron: say so.
        given_up = await undelivered_bodies(stack)
        assert not missing, f"{len(missing)} addresses missing in Unisender, e.g. {missing[:5]}; {given_up}"
        assert not extra, (
            f"{len(extra)} addresses in Unisender that Kommo does not hold, e.g. {extra[:5]}; {given_up}"
        )
    wrong = {
        e: (actual[e]["fields"].get("Name"), n)  # type: ignore[union-attr]
        for e, n in want.items()
        if actual[e]["fields"].get("Name") != n  # type: ignore[union-attr]
    }
    assert not wrong, f"{len(wrong)} names differ, e.g. {list(wrong.items())[:3]}"
    not_listed = [e for e in want if str(account.list_id) not in {str(k) for k in actual[e]["lists"]}]  # type: ignore[union-attr]
    assert not not_listed, f"{len(not_listed)} addresses not in the account's list, e.g. {not_listed[:5]}"
    return len(want)


__all__ = ["Account", "httpx"]
