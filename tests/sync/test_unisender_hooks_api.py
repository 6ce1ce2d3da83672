"""The Unisender hook receiver over real HTTP: every layout Unisender posts is answered 200 and stored one row
per event; unsubscribes take effect, unknown events are kept and counted, redeliveries add nothing, and
only a wrong signature is refused. End to end: an unsubscribe in the sandbox tags the Kommo contact.

Bodies: tests/fixtures/unisender/ (README.md there says which are captured and which constructed).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.context import build_context
from app.sync.unsubscribes import process_unisender_events
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, kommo_contacts, wait_for, wait_quiet

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "unisender"
FIXTURE_KEY = "fixture-api-key-5f2c"  # the key the constructed fixtures are signed with
JSON = {"Content-Type": "application/json"}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sign(text: str, api_key: str) -> bytes:
    placeholder = "#" * 32
    digest = hashlib.md5(text.replace(placeholder, api_key, 1).encode()).hexdigest()
    return text.replace(placeholder, digest, 1).encode()


async def post(stack: Stack, account: Account, body: bytes, token: str | None = None) -> httpx.Response:
    return await stack.api.post(
        f"/webhooks/unisender/{account.account_id}",
        params={"token": token or account.webhook_token},
        content=body,
        headers=JSON,
    )


async def rows(stack: Stack) -> list[dict[str, Any]]:
    assert stack.settings.database_url
    sql = "SELECT source, status, body, last_error FROM webhook_event ORDER BY id"
    return [dict(r) for r in await raw_sql(stack.settings.database_url, sql)]


async def unsubscribed(stack: Stack) -> set[str]:
    assert stack.settings.database_url
    sql = "SELECT email FROM contact_email WHERE consent = 'unsubscribed'"
    return {r["email"] for r in await raw_sql(stack.settings.database_url, sql)}


async def process(stack: Stack, account: Account) -> None:
    pc = await build_context(stack.settings)
    try:
        await process_unisender_events(pc, account.account_id)
    finally:
        await pc.close()


async def metric(stack: Stack, event: str, outcome: str) -> float:
    text = (await stack.api.get("/metrics")).text
    pattern = (
        r'^contactsync_unisender_hook_events_total\{event="' + event + '",outcome="' + outcome + r'"\} (\S+)$'
    )
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("name", "statuses", "unsubscribes"),
    [
        ("classic_captured_resigned.json", ["pending"], set()),
        ("classic_unsubscribe.json", ["pending"], {"kate@example.com"}),
        (
            "classic_batch.json",
            ["pending"] * 7 + ["unrecognised"] + ["pending"] * 2,
            {"ann@example.com", "bob@example.com", "dave@example.org", "erin@example.org"}
            | {"jack@example.com", "эмма@пример.рф"},
        ),
        ("flat_unsubscribe.json", ["pending"], {"gina@example.com"}),
        (
            "go_layout.json",
            ["pending", "pending", "unrecognised", "unrecognised"],
            {"hank@example.net", "ivy@example.net"},
        ),
        ("classic_unknown_events_only.json", ["unrecognised", "unrecognised"], set()),
        ("unknown_layout.json", ["unrecognised"], set()),
    ],
)
async def test_every_layout_is_accepted_stored_and_applied(
    stack: Stack, name: str, statuses: list[str], unsubscribes: set[str]
) -> None:
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    r = await post(stack, account, fixture(name))
    assert (r.status_code, r.json()) == (200, {"status": "accepted"}), r.text
    stored = await rows(stack)
    assert [row["status"] for row in stored] == statuses
    assert {row["source"] for row in stored} == {"unisender"}
    assert all(row["last_error"] for row in stored if row["status"] == "unrecognised")

    await process(stack, account)
    after = await rows(stack)
    # Recognised events are handled (subscribe, delivery and campaign statuses: kept, no effect); unknown
    # ones stay as they were stored, never retried.
    assert [row["status"] for row in after] == [s.replace("pending", "done") for s in statuses]
    assert await unsubscribed(stack) == unsubscribes


async def test_an_event_the_database_refuses_fails_alone_and_the_others_take_effect(stack: Stack) -> None:
    """One event PostgreSQL refuses (a CHECK the test adds refuses frank's click: a value our parsing does not
    catch, as a NUL once was) must not hold back the account's other events, unsubscribes above all: they are
    applied one by one, the bad one is retried alone and, after 5 attempts, failed with its reason."""
    url = stack.settings.database_url
    assert url
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    r = await post(stack, account, fixture("classic_batch.json"))
    assert r.status_code == 200, r.text
    check = "ALTER TABLE email_activity ADD CONSTRAINT test_poison CHECK (email <> 'frank@example.org')"
    await raw_sql(url, check)
    try:
        await process(stack, account)
        after = await rows(stack)
        frank = [row for row in after if "frank@example.org" in row["body"]]
        assert [row["status"] for row in frank] == ["pending"]
        assert "test_poison" in frank[0]["last_error"]
        others = [row["status"] for row in after if row not in frank and row["status"] != "unrecognised"]
        assert others == ["done"] * 8
        assert await unsubscribed(stack) == {
            "ann@example.com",
            "bob@example.com",
            "dave@example.org",
            "erin@example.org",
            "jack@example.com",
            "эмма@пример.рф",
        }
        for _ in range(5):
            await process(stack, account)
        [final] = [row for row in await rows(stack) if "frank@example.org" in row["body"]]
        assert final["status"] == "failed"
        assert "test_poison" in final["last_error"]
    finally:
        await raw_sql(url, "ALTER TABLE email_activity DROP CONSTRAINT IF EXISTS test_poison")


async def test_a_redelivery_with_retry_count_adds_nothing(stack: Stack) -> None:
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    first = await post(stack, account, fixture("classic_unsubscribe.json"))
    again = await post(stack, account, fixture("classic_unsubscribe_retry.json"))
    assert [r.json()["status"] for r in (first, again)] == ["accepted", "duplicate"]
    # The same event in a batch is not stored again either; the batch's other events are.
    batch = json.loads(fixture("classic_batch.json"))
    batch["events_by_user"][0]["events"].append(
        json.loads(fixture("classic_unsubscribe.json"))["events_by_user"][0]["events"][0]
    )
    del batch["auth"]
    body = sign(json.dumps({"auth": "#" * 32, **batch}, separators=(",", ":")), FIXTURE_KEY)
    assert (await post(stack, account, body)).json()["status"] == "accepted"
    assert len(await rows(stack)) == 1 + 10
    assert (await post(stack, account, fixture("classic_batch.json"))).json()["status"] == "duplicate"
    await process(stack, account)
    assert "kate@example.com" in await unsubscribed(stack)


async def test_unknown_events_are_acknowledged_kept_and_counted(stack: Stack) -> None:
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    before = {
        (event, outcome): await metric(stack, event, outcome)
        for event, outcome in [
            ("unknown", "unrecognised"),
            ("unknown", "duplicate"),
            ("unsubscribe", "accepted"),
        ]
    }
    r = await post(stack, account, fixture("classic_unknown_events_only.json"))
    assert (r.status_code, r.json()["status"]) == (200, "accepted")
    r = await post(stack, account, fixture("classic_unknown_events_only.json"))
    assert (r.status_code, r.json()["status"]) == (200, "duplicate")
    await post(stack, account, fixture("classic_unsubscribe.json"))
    assert await metric(stack, "unknown", "unrecognised") == before[("unknown", "unrecognised")] + 2
    assert await metric(stack, "unknown", "duplicate") == before[("unknown", "duplicate")] + 2
    assert await metric(stack, "unsubscribe", "accepted") == before[("unsubscribe", "accepted")] + 1
    stored = await rows(stack)
    assert [(row["status"], row["last_error"]) for row in stored[:2]] == [
        ("unrecognised", "unknown event name")
    ] * 2
    assert json.loads(stored[0]["body"])["event_name"] == "balance_changed"


async def test_wrong_or_missing_signatures_are_refused_and_store_nothing(stack: Stack) -> None:
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    good = fixture("classic_unsubscribe.json")
    unsigned = json.loads(good)
    del unsigned["auth"]
    other_key = sign('{"auth":"' + "#" * 32 + '",' + good.decode().split(",", 1)[1], "another-key")
    refused = [
        json.dumps(unsigned).encode(),  # unsigned
        other_key,  # signed with another account's key
        fixture("classic_captured.json"),  # signed with a key we do not have
        json.dumps(json.loads(good)).encode(),  # the same JSON re-serialized: the signature covers bytes
        b"not json at all",
    ]
    for body in refused:
        r = await post(stack, account, body)
        assert (r.status_code, r.json()["error"]) == (401, "invalid_signature"), body[:80]
        assert r.json()["detail"]
    r = await post(stack, account, good, token="x" * 43)
    assert (r.status_code, r.json()["error"]) == (401, "invalid_token")
    assert await rows(stack) == []


async def test_a_signed_body_that_is_not_json_is_kept_and_acknowledged(stack: Stack) -> None:
    """Refusing it would make Unisender resend the same bytes for a day and then stop the hook."""
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    garbled = sign('{"auth":"' + "#" * 32 + '","events_by_user":[{"login":"acme","events":[\x00', FIXTURE_KEY)
    r = await post(stack, account, garbled)
    assert (r.status_code, r.json()["status"]) == (200, "accepted")
    (row,) = await rows(stack)
    assert row["status"] == "unrecognised"
    assert row["last_error"] == "hook body is not valid JSON"
    assert row["body"].endswith("[\ufffd")


async def test_a_delivery_without_events_is_acknowledged(stack: Stack) -> None:
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    r = await post(stack, account, sign('{"auth":"' + "#" * 32 + '","events_by_user":[]}', FIXTURE_KEY))
    assert (r.status_code, r.json()["status"]) == (200, "accepted")
    assert await rows(stack) == []


async def test_before_a_key_is_connected_the_url_token_is_enough(stack: Stack) -> None:
    account = await connect_account(stack, api_key=FIXTURE_KEY)
    assert stack.settings.database_url
    await raw_sql(stack.settings.database_url, "DELETE FROM esp_account")
    flat = json.loads(fixture("flat_unsubscribe.json"))
    del flat["auth"]
    r = await post(stack, account, json.dumps(flat).encode())
    assert (r.status_code, r.json()["status"]) == (200, "accepted")
    r = await post(stack, account, json.dumps(flat).encode(), token="x" * 43)
    assert r.status_code == 401
    await process(stack, account)
    assert await unsubscribed(stack) == {"gina@example.com"}


async def test_sandbox_delivers_the_classic_layout_and_the_kommo_contact_is_tagged(stack: Stack) -> None:
    account = await connect_account(stack, contacts=3, seed=5)
    async with running_worker(stack.settings):
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account)
        contacts = await kommo_contacts(stack, account)
        cid, chosen = next((cid, c) for cid, c in sorted(contacts.items()) if c["emails"])
        email = str(chosen["emails"][0]).lower()  # type: ignore[index]
        r = await stack.unisender.post(
            f"/_sandbox/accounts/{account.api_key}/contacts/{email}/unsubscribe",
            json={"list_id": account.list_id, "campaign_id": 77},
        )
        assert r.json()["changed"] is True, r.text

        async def tagged() -> bool:
            live = await kommo_contacts(stack, account)
            return "unsubscribed" in live[cid]["tags"]  # type: ignore[operator]

        await wait_for(tagged, within=30)
    deliveries = (
        await stack.unisender.get("/_sandbox/deliveries", params={"api_key": account.api_key})
    ).json()
    delivery = deliveries["deliveries"][0]  # later ones may follow (the mirror writes the unsubscribe back)
    assert (delivery["status_code"], delivery["retry_count"]) == (200, 0)
    body = json.loads(delivery["body"])
    assert list(body) == ["auth", "events_by_user"]
    (user,) = body["events_by_user"]
    assert user["login"] == account.subdomain
    assert [(e["event_name"], e["event_data"]) for e in user["events"]] == [
        ("unsubscribe", {"email": email, "list_id": account.list_id}),
        (
            "email_status",
            {
                "email": email,
                "status": "ok_unsubscribed",
                "status_group": "unsubscribed_group",
                "campaign_id": 77,
            },
        ),
    ]
    stored = await rows(stack)
    unisender_rows = [row for row in stored if row["source"] == "unisender"]
    assert [row["status"] for row in unisender_rows[:2]] == ["done", "done"]
