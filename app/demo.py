"""``contactsync demo``: the whole product in one process, against the Kommo and Unisender sandboxes.

Embedded default (a PostgreSQL and a Redis server of its own, started by the CLI with data in
.contactsync/demo, the database recreated each time), both sandboxes, the API and the worker; seeds a Kommo
account, connects it through the real OAuth redirect and a sandbox Unisender key, runs a full sync, then keeps
making live edits in the Kommo sandbox and prints each change beside its mirror in Unisender.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from app.config import DEV_ADMIN_TOKEN, Settings
from app.context import loopback_client
from app.logging import configure_logging
from app.servers import serve_in_background

DEMO_DIR = Path(".contactsync") / "demo"
SUBDOMAIN = "demo"


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(
    *,
    database_url: str,
    redis_url: str,
    port: int = 8000,
    contacts: int = 300,
    edits: int = 0,
    seed: int = 1,
) -> int:
    """The demo on a migrated, empty database at ``database_url``."""
    from app.main import create_app
    from app.worker.settings import run_worker_forever
    from sandbox.kommo import KommoSandboxConfig, create_kommo_sandbox
    from sandbox.unisender import create_unisender_sandbox

    configure_logging(fmt="console", level="WARNING", force=True)
    kommo_app = create_kommo_sandbox(KommoSandboxConfig(webhook_retry_delays=(1.0, 5.0, 30.0)))
    unisender_app = create_unisender_sandbox()
    async with (
        serve_in_background(kommo_app, port=_port_near(port + 1)) as kommo_url,
        serve_in_background(unisender_app, port=_port_near(port + 2)) as unisender_url,
    ):
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            state_dir=DEMO_DIR,
            public_url=f"http://127.0.0.1:{port}",
            kommo_base_url=kommo_url + "/{host}",
            kommo_auth_url=kommo_url + "/oauth",
            unisender_base_url=unisender_url,
            log_format="console",
            log_level="WARNING",
            _env_file=None,
        )
        stop = asyncio.Event()
        async with serve_in_background(create_app(settings), port=port) as api_url:
            worker = asyncio.create_task(run_worker_forever(settings, stop=stop))
            try:
                async with (
                    loopback_client(api_url) as api,
                    loopback_client(kommo_url) as kommo,
                    loopback_client(unisender_url) as uni,
                ):
                    await _scenario(api, kommo, uni, api_url, kommo_url, unisender_url, contacts, edits, seed)
            except KeyboardInterrupt:
                pass
            finally:
                stop.set()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(worker, timeout=10)
    return 0


def _port_near(preferred: int) -> int:
    """The sandbox's usual port (the API's + 1 or + 2, so the printed URLs are the familiar ones), or any free
    port when something else holds it (the demo's own URLs are printed either way)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", preferred))
        except OSError:
            return 0
    return preferred


async def _scenario(
    api: httpx.AsyncClient,
    kommo: httpx.AsyncClient,
    uni: httpx.AsyncClient,
    api_url: str,
    kommo_url: str,
    unisender_url: str,
    contacts: int,
    edits: int,
    seed: int,
) -> None:
    admin = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
    _say("contactsync demo: Kommo sandbox, Unisender sandbox, API and worker in one process\n")
    account = (
        await kommo.post("/_sandbox/accounts", json={"subdomain": SUBDOMAIN, "name": "Demo Ltd"})
    ).json()
    seeding = {"count": contacts, "seed": seed, "custom_fields": True}
    seeded = (await kommo.post(f"/_sandbox/accounts/{SUBDOMAIN}/seed", json=seeding)).json()
    ids = range(int(seeded["first_id"]), int(seeded["last_id"]) + 1)
    _say(f"1. Kommo sandbox: account {account['id']} ({SUBDOMAIN}) seeded with {contacts} contacts")
    redirect = f"{api_url}/auth/callback"
    integ = (await kommo.post("/_sandbox/integrations", json={"redirect_uri": redirect})).json()
    r = await api.post(
        "/integration",
        headers=admin,
        json={
            "account_id": account["id"],
            "subdomain": SUBDOMAIN,
            "client_id": integ["client_id"],
            "client_secret": integ["client_secret"],
            "redirect_uri": redirect,
        },
    )
    r.raise_for_status()
    auth_url = r.json()["auth_url"]  # the signed connect link: /auth refuses any other
    r = await api.get(auth_url.replace(api_url, ""), follow_redirects=False)
    state = parse_qs(urlsplit(r.headers["location"]).query)["state"][0]
    grant = (
        await kommo.post(
            "/_sandbox/authorize",
            json={"client_id": integ["client_id"], "subdomain": SUBDOMAIN, "state": state},
        )
    ).json()
    (await api.get(grant["redirect_url"].replace(api_url, ""))).raise_for_status()
    _say(
        "2. OAuth: /auth → Kommo consent (sandbox) → /auth/callback: tokens stored encrypted, webhooks registered"
    )
    key = (await uni.post("/_sandbox/accounts", json={"login": SUBDOMAIN})).json()["api_key"]
    r = await api.post(f"/integration/{account['id']}/unisender", headers=admin, json={"api_key": key})
    r.raise_for_status()
    list_id = r.json()["list_id"]
    _say(f"3. Unisender sandbox: key checked, list {list_id} chosen, unsubscribe hook registered")
    mapped = await _map(api, admin, account["id"], list_id)
    _say(
        f"4. Sync spec v{mapped.version}: Name ← name, Plan ← Kommo's select 'Plan', everyone → list {list_id},"
        f" tag 'vip' → list 'VIP' ({mapped.vip_list}); created in Unisender as needed"
    )
    started = time.monotonic()
    run = (await api.post("/sync/contacts", headers=admin, json={"id": account["id"]})).json()
    status: dict[str, Any] = {}
    for _ in range(600):
        status = (await api.get(f"/sync/runs/{run['run_id']}", headers=admin)).json()
        if status["status"] in ("done", "failed"):
            break
        await asyncio.sleep(0.2)
    total = await _unisender_count(uni, key)
    for _ in range(100):  # the last pushes land just after the run ends
        await asyncio.sleep(0.2)
        now_total = await _unisender_count(uni, key)
        if now_total == total:
            break
        total = now_total
    held = (await uni.get(f"/_sandbox/accounts/{key}/snapshot")).json()["contacts"]
    planned = sum(1 for c in held.values() if c["fields"].get("Plan"))
    vip = sum(1 for c in held.values() if c["lists"].get(str(mapped.vip_list), {}).get("status") == "active")
    _say(
        f"5. Full sync {status['status']} in {time.monotonic() - started:.1f} s: fetched "
        f"{status['counters']['fetched']} contacts, Unisender now holds {total} addresses"
        f" ({planned} with a Plan, {vip} in VIP)\n"
    )
    _say("Look around while it runs:")
    _say(f"   {api_url}/docs                          the API")
    _say(
        f"   {api_url}/accounts/{account['id']}            (Authorization: Bearer {DEV_ADMIN_TOKEN}) integration state"
    )
    _say(f"   {kommo_url}/_sandbox/accounts/{SUBDOMAIN}/webhooks   Kommo sandbox webhooks")
    _say(f"   {unisender_url}/_sandbox/accounts/{key}/contacts   Unisender sandbox contacts")
    _say(f"   {api_url}/metrics                       Prometheus metrics\n")
    _say("6. Live edits in Kommo and their mirror in Unisender (Ctrl-C to stop):")
    rng = random.Random(seed)
    count = 0
    while edits == 0 or count < edits:
        count += 1
        await _one_edit(kommo, uni, key, rng, count, ids, mapped)
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class _Mapped:
    version: int
    vip_list: int
    plan_field: int
    plans: tuple[str, ...]


async def _map(api: httpx.AsyncClient, admin: dict[str, str], account_id: int, list_id: int) -> _Mapped:
    """The demo's sync spec: the select field "Plan" to a Unisender field, the tag "vip" to a list."""
    fields = (await api.get("/kommo/fields", headers=admin, params={"id": account_id})).json()
    plan = next(f for f in fields if f["name"] == "Plan")
    spec = {
        "fields": [{"source": "name", "target": "Name"}, {"source": plan["source"], "target": "Plan"}],
        "lists": [{"list_id": list_id, "all": True}, {"list_title": "VIP", "tag": "vip"}],
        "create_missing": True,
    }
    r = await api.put(f"/integration/{account_id}/mapping", headers=admin, json=spec)
    r.raise_for_status()
    body = r.json()
    vip = next(rule["list_id"] for rule in body["lists"] if rule["tag"] == "vip")
    return _Mapped(int(body["version"]), int(vip), int(plan["id"]), tuple(plan["options"]))


async def _unisender_count(uni: httpx.AsyncClient, key: str) -> int:
    return int((await uni.get(f"/_sandbox/accounts/{key}/contacts", params={"limit": 1})).json()["total"])


def _emails(contact: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for field in contact.get("custom_fields_values") or []:
        if field.get("field_code") == "EMAIL":
            out += [str(v["value"]) for v in field.get("values") or []]
    return out


async def _one_edit(
    kommo: httpx.AsyncClient,
    uni: httpx.AsyncClient,
    key: str,
    rng: random.Random,
    n: int,
    ids: range,
    mapped: _Mapped,
) -> None:
    base = f"/_sandbox/accounts/{SUBDOMAIN}/contacts"
    contact = (await kommo.get(f"{base}/{rng.choice(ids)}")).json()
    emails = _emails(contact) if not contact.get("is_deleted") else []
    kinds = ["rename", "add_email", "create", "plan", "vip", "vip"]
    kind = rng.choice(kinds) if emails else "create"
    if kind in ("plan", "vip"):
        await _mapped_edit(kommo, uni, key, rng, contact, emails[0], kind, mapped)
        return
    started = time.monotonic()
    if kind == "create":
        email = f"demo{n}.{rng.randrange(10_000)}@example.com"
        name = f"New Contact {n}"
        body = [
            {"name": name, "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": email}]}]}
        ]
        r = await kommo.post(base, json=body)
        what = f"Kommo: created '{name}' <{email}>"
    elif kind == "rename":
        email, name = emails[0], f"{contact['name'].split(' (')[0]} ({n})"
        r = await kommo.patch(base, json=[{"id": contact["id"], "name": name}])
        what = f"Kommo: contact {contact['id']} renamed to '{name}'"
    else:
        email, name = f"extra{n}@example.com", contact["name"]
        values = [{"value": v} for v in [*emails, email]]
        r = await kommo.patch(
            base,
            json=[{"id": contact["id"], "custom_fields_values": [{"field_code": "EMAIL", "values": values}]}],
        )
        what = f"Kommo: contact {contact['id']} got a new address <{email}>"
    if r.status_code >= 300:
        _say(f"   {what}: sandbox refused ({r.status_code})")
        return
    for _ in range(100):
        got = await uni.get(f"/_sandbox/accounts/{key}/contacts/{email.lower()}")
        if got.status_code == 200 and got.json().get("fields", {}).get("Name") == name:
            _say(
                f"   {what}\n     → Unisender: <{email.lower()}> Name='{name}' after {time.monotonic() - started:.2f} s"
            )
            return
        await asyncio.sleep(0.1)
    _say(f"   {what}\n     → not visible in Unisender within 10 s (it may be rejected there: see /accounts)")


async def _mapped_edit(
    kommo: httpx.AsyncClient,
    uni: httpx.AsyncClient,
    key: str,
    rng: random.Random,
    contact: dict[str, Any],
    email: str,
    kind: str,
    mapped: _Mapped,
) -> None:
    """A change only the spec makes visible: the Plan option, or the vip tag (membership of the VIP list)."""
    base = f"/_sandbox/accounts/{SUBDOMAIN}/contacts"
    started = time.monotonic()
    if kind == "plan":
        plan = rng.choice(mapped.plans)
        item = {
            "id": contact["id"],
            "custom_fields_values": [{"field_id": mapped.plan_field, "values": [{"value": plan}]}],
        }
        what = f"Kommo: contact {contact['id']} Plan → '{plan}'"

        def mirrored(got: dict[str, Any]) -> str | None:
            return f"Plan='{plan}'" if got["fields"].get("Plan") == plan else None
    else:
        tagged = any(t.get("name") == "vip" for t in contact.get("_embedded", {}).get("tags", []))
        item = {"id": contact["id"], "tags_to_delete" if tagged else "tags_to_add": [{"name": "vip"}]}
        what = f"Kommo: contact {contact['id']} {'lost' if tagged else 'got'} the tag 'vip'"

        def mirrored(got: dict[str, Any]) -> str | None:
            status = got["lists"].get(str(mapped.vip_list), {}).get("status")
            inside = status == "active"
            if inside == (not tagged):
                return "in list VIP" if inside else "out of list VIP"
            return None

    r = await kommo.patch(base, json=[item])
    if r.status_code >= 300:
        _say(f"   {what}: sandbox refused ({r.status_code})")
        return
    for _ in range(100):
        got = await uni.get(f"/_sandbox/accounts/{key}/contacts/{email.lower()}")
        seen = mirrored(got.json()) if got.status_code == 200 else None
        if seen is not None:
            _say(
                f"   {what}\n     → Unisender: <{email.lower()}> {seen} after {time.monotonic() - started:.2f} s"
            )
            return
        await asyncio.sleep(0.1)
    _say(f"   {what}\n     → not visible in Unisender within 10 s (another contact may own the address)")
