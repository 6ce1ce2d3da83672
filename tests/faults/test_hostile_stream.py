"""Hostile and unusual inputs in the middle of a live stream of normal edits: the mirror ends exact.

While Kommo streams ordinary edits (renames, address changes, creations, deletions, restores), four things
arrive at once:
- a real Kommo contact renamed to a value full of control characters (NUL included), delivered by the sandbox
  as Kommo would (``%00`` in the form body);
- a forged Kommo webhook claiming another contact changed ten years from now, with an injected address;
- three unsubscribes made in Unisender, each delivered to us in a different documented hook layout
  (classic batched, flat single-event, Go-style with ``event_time`` inside ``event_data``), signed with the
  account's API key as Unisender signs them.

At the end Unisender holds exactly what Kommo implies (with the control characters removed from the one name),
the forged address was never sent, the three addresses are unsubscribed in Unisender and their Kommo contacts
(and only those) carry the unsubscribe tag, and a later real edit of the forged contact goes through.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from urllib.parse import quote

from tests.conftest import Stack, raw_sql, running_worker
from tests.faults.support import edit_stream, email_values, post_webhook
from tests.support.e2e import (
    Account,
    connect_account,
    expected_unisender,
    kommo_contacts,
    rejected_addresses,
    unisender_contacts,
    wait_for,
    wait_quiet,
)

POISON_NAME = "Poi\x00son\x1b[31m Pi\x7fll\u0085"
CLEANED_NAME = "Poison[31m Pill"  # control characters removed; printable text kept as sent
FORGED_ADDRESS = "injected@attacker.example"
TEN_YEARS = 10 * 365 * 86400
LAYOUTS = ("classic", "flat", "go")


def _signed(payload_without_auth: str, api_key: str) -> bytes:
    """A hook body as Unisender signs it: md5 of the body with the API key where ``auth``'s value goes."""
    unsigned = '{"auth":"' + api_key + '",' + payload_without_auth
    digest = hashlib.md5(unsigned.encode()).hexdigest()
    return ('{"auth":"' + digest + '",' + payload_without_auth).encode()


def _hook_body(layout: str, email: str, list_id: int, api_key: str, when: str) -> bytes:
    # Compact JSON with "\/" escapes, as PHP's json_encode writes it; the documented layouts (see
    # tests/fixtures/unisender/README.md).
    data = json.dumps({"email": email, "list_id": list_id}, separators=(",", ":"))
    if layout == "classic":
        body = (
            '"events_by_user":[{"login":"acme-login","events":[{"event_name":"unsubscribe",'
            f'"event_time":"{when}","event_data":{data}}}]}}]}}'
        )
    elif layout == "flat":
        body = (
            '"login":"acme-login","event_name":"unsubscribe",'
            f'"event_time":"{when}","email":"{email}","list_id":{list_id}}}'
        )
    else:
        go_data = json.dumps(
            {"email": email, "status": "ok_unsubscribed", "event_time": when, "url": "https://example.com/u"},
            separators=(",", ":"),
        ).replace("/", "\\/")
        body = (
            '"events_by_user":[{"user_id":4561,"project_id":"6432890213745872","project_name":"Mirror",'
            f'"events":[{{"event_name":"email_status","event_data":{go_data}}}]}}]}}'
        )
    return _signed(body, api_key)


def _forged_update(account: Account, cid: int, email_field: int) -> str:
    """A Kommo webhook body for ``cid`` that Kommo never sent: stamped ten years ahead, another address."""
    future = int(time.time()) + TEN_YEARS
    prefix = "contacts[update][0]"
    pairs = [
        ("account[subdomain]", account.subdomain),
        ("account[id]", str(account.account_id)),
        (f"{prefix}[id]", str(cid)),
        (f"{prefix}[name]", "Forged"),
        (f"{prefix}[updated_at]", str(future)),
        (f"{prefix}[last_modified]", str(future)),
        (f"{prefix}[custom_fields][0][id]", str(email_field)),
        (f"{prefix}[custom_fields][0][name]", "Email"),
        (f"{prefix}[custom_fields][0][code]", "EMAIL"),
        (f"{prefix}[custom_fields][0][values][0][value]", FORGED_ADDRESS),
        (f"{prefix}[type]", "contact"),
    ]
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


async def _create(stack: Stack, account: Account, name: str, email: str) -> int:
    r = await stack.kommo.post(
        f"/_sandbox/accounts/{account.subdomain}/contacts",
        json=[{"name": name, "custom_fields_values": email_values([email])}],
    )
    assert r.status_code in (200, 201), r.text
    return int(r.json()["_embedded"]["contacts"][0]["id"])


async def _rename(stack: Stack, account: Account, cid: int, name: str) -> None:
    r = await stack.kommo.patch(
        f"/_sandbox/accounts/{account.subdomain}/contacts", json=[{"id": cid, "name": name}]
    )
    assert r.status_code == 200, r.text


async def _hostile_inputs(
    stack: Stack, account: Account, *, poison: int, forged: int, layout_contacts: dict[str, int]
) -> None:
    """Everything hostile or unusual, sent while the stream runs."""
    await _rename(stack, account, poison, POISON_NAME)
    email_field = stack.kommo_app.state.kommo.accounts[account.subdomain].field_by_code("EMAIL").id
    r = await post_webhook(stack.api, account, _forged_update(account, forged, email_field))
    assert r.status_code == 200, r.text
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for layout, address in ((lay, f"{lay}-layout@example.org") for lay in LAYOUTS):
        assert layout in layout_contacts
        # The contact unsubscribes in Unisender; the hook call reaching us is the layout under test.
        r = await stack.unisender.post(
            f"/_sandbox/accounts/{account.api_key}/contacts/{address}/unsubscribe",
            json={"list_id": account.list_id, "notify": False},
        )
        assert r.status_code == 200, r.text
        assert r.json()["changed"], r.text
        body = _hook_body(layout, address, int(account.list_id), account.api_key, when)
        r = await stack.api.post(
            f"/webhooks/unisender/{account.account_id}",
            params={"token": account.webhook_token},
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 200, (layout, r.status_code, r.text)
        await asyncio.sleep(0.2)  # spread over the stream


async def test_poison_forgery_and_every_hook_layout_inside_a_live_stream(stack: Stack) -> None:
    rng = random.Random(9061)
    account = await connect_account(stack, contacts=120, seed=31)
    poison = await _create(stack, account, "Paula Plain", "paula.plain@example.org")
    forged = await _create(stack, account, "Frank Real", "frank.real@example.org")
    layout_contacts = {
        layout: await _create(stack, account, f"{layout.title()} Reader", f"{layout}-layout@example.org")
        for layout in LAYOUTS
    }
    spare = frozenset({poison, forged, *layout_contacts.values()})
    url = stack.settings.database_url
    assert url
    async with running_worker(stack.settings):
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)

        stream = asyncio.create_task(edit_stream(stack, account, 90, rng, spare=spare))
        await asyncio.sleep(1.0)  # the stream is under way
        await _hostile_inputs(stack, account, poison=poison, forged=forged, layout_contacts=layout_contacts)
        await stream

        unsubscribed = {f"{layout}-layout@example.org" for layout in LAYOUTS}

        async def tagged() -> bool:
            live = await kommo_contacts(stack, account)
            return all("unsubscribed" in live[cid]["tags"] for cid in layout_contacts.values())  # type: ignore[operator]

        await wait_for(tagged, within=45, what="every layout's unsubscribe tagged in Kommo")
        await wait_quiet(stack, account, within=90)

        # Unisender holds exactly what Kommo implies; the one name with control characters arrives cleaned.
        kommo = await kommo_contacts(stack, account)
        assert kommo[poison]["name"] == POISON_NAME  # Kommo kept it as typed
        kommo[poison] = {**kommo[poison], "name": CLEANED_NAME}
        expected = expected_unisender(kommo)
        actual = await unisender_contacts(stack, account)
        rejected = await rejected_addresses(stack)
        assert all(code == "role_address" for e, code in rejected.items() if e in expected), rejected
        want = {e: n for e, n in expected.items() if e not in rejected}
        assert set(actual) == set(want), (
            sorted(set(want) - set(actual))[:5],
            sorted(set(actual) - set(want))[:5],
        )
        wrong = {
            e: (actual[e]["fields"].get("Name"), n)
            for e, n in want.items()
            if actual[e]["fields"].get("Name") != n
        }  # type: ignore[union-attr]
        assert not wrong, list(wrong.items())[:5]
        assert FORGED_ADDRESS not in actual
        assert actual["paula.plain@example.org"]["fields"]["Name"] == CLEANED_NAME  # type: ignore[index]

        # The three unsubscribes: unsubscribed in Unisender, tagged in Kommo, and no other contact tagged.
        for address in unsubscribed:
            lists = {str(k): v for k, v in actual[address]["lists"].items()}  # type: ignore[union-attr]
            assert lists[str(account.list_id)]["status"] == "unsubscribed", actual[address]
        tagged_ids = {cid for cid, c in kommo.items() if "unsubscribed" in c["tags"]}  # type: ignore[operator]
        assert tagged_ids == set(layout_contacts.values())
        consent = await raw_sql(url, "SELECT email FROM contact_email WHERE consent = 'unsubscribed'")
        assert {row["email"] for row in consent} == unsubscribed

        # The forgery pinned nothing: the stored contact is Kommo's, and a real edit still goes through.
        [stored] = await raw_sql(url, "SELECT name, emails FROM contact WHERE kommo_id = $1", forged)
        assert (stored["name"], json.loads(stored["emails"])) == ("Frank Real", ["frank.real@example.org"])
        await _rename(stack, account, forged, "Frank Edited")
        await wait_quiet(stack, account, within=30)
        after = await unisender_contacts(stack, account)
        assert after["frank.real@example.org"]["fields"]["Name"] == "Frank Edited"  # type: ignore[index]

        # Nothing was left failed or unrecognised: every input above was understood.
        stuck = await raw_sql(
            url, "SELECT source, status, last_error FROM webhook_event WHERE status <> 'done'"
        )
        assert not stuck, [dict(row) for row in stuck]
