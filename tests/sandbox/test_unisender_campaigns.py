"""The Unisender sandbox's campaigns over loopback HTTP: seeded facts equal the stats methods' answers and the
hook deliveries exactly."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from typing import Any

from app.servers import serve_in_background
from tests.sandbox.unisender_activity import (
    Receiver,
    Sb,
    completed_facts,
    expected_common_stats,
    members,
    receiver_app,
    send,
    signed,
    wait_for,
)

# --- campaigns -------------------------------------------------------------------------------------------


async def test_facts_cover_every_outcome_and_equal_every_stats_answer(sb: Sb, key: str) -> None:
    list_id, emails = await members(sb, key)
    campaign_id = await send(sb, key, list_id)
    facts = await completed_facts(sb, key, campaign_id)
    assert sorted(facts) == emails  # the unsubscribed member and the non-member get nothing
    results = Counter(f["send_result"] for f in facts.values())
    assert {"ok_sent", "ok_delivered", "ok_read", "ok_link_visited", "ok_unsubscribed", "ok_fbl"} <= set(
        results
    )
    assert any(r.startswith("err_") for r in results)
    assert any(f["opens"] > 1 for f in facts.values())
    assert any(f["clicks"] and not f["opens"] for f in facts.values())  # read_unique must count clickers

    stats = await sb.result("getCampaignCommonStats", key, {"campaign_id": str(campaign_id)})
    assert stats == expected_common_stats(facts)
    assert stats["read_unique"] > sum(1 for f in facts.values() if f["opens"])

    delivery = await sb.result("getCampaignDeliveryStats", key, {"campaign_id": str(campaign_id)})
    assert delivery["fields"] == ["email", "send_result", "last_update"]
    assert {row[0]: row[1] for row in delivery["data"]} == {e: f["send_result"] for e, f in facts.items()}

    links = await sb.result("getVisitedLinks", key, {"campaign_id": str(campaign_id), "group": "0"})
    assert links["fields"] == ["email", "url", "request_time", "ip"]
    clicks = sorted((e, url) for e, f in facts.items() for url in f["clicks"])
    assert sorted((row[0], row[1]) for row in links["data"]) == clicks
    grouped = await sb.result("getVisitedLinks", key, {"campaign_id": str(campaign_id), "group": "1"})
    assert grouped["fields"] == ["email", "url", "request_time", "ip", "count"]
    assert {(r[0], r[1]): r[4] for r in grouped["data"]} == dict(Counter(clicks))

    (listed,) = await sb.result("getCampaigns", key)
    assert (listed["id"], listed["status"], listed["list_id"], listed["subject"]) == (
        campaign_id,
        "completed",
        list_id,
        "Sale",
    )
    status = await sb.result("getCampaignStatus", key, {"campaign_id": str(campaign_id)})
    assert status["status"] == "completed"
    assert status["start_time"] == listed["start_time"]


async def test_the_contacts_carry_the_campaigns_consequences(sb: Sb, key: str) -> None:
    list_id, _ = await members(sb, key)
    facts = await completed_facts(sb, key, await send(sb, key, list_id, duration_s=0))
    columns = [
        "email",
        "email_availability",
        "email_unsubscribed_list_ids",
        "email_last_delivered_at",
        "email_last_read_at",
        "email_last_clicked_at",
    ]
    args = {f"field_names[{i}]": c for i, c in enumerate(columns)}
    export = await sb.result("exportContacts", key, {**args, "list_id": str(list_id)})
    rows = {row[0]: dict(zip(columns, row, strict=True)) for row in export["data"] if row[0] in facts}
    assert sorted(rows) == sorted(facts)
    hard = ("err_user_unknown", "err_domain_inactive", "err_dest_invalid")
    for email, fact in facts.items():
        row = rows[email]
        assert (row["email_unsubscribed_list_ids"] == str(list_id)) == fact["unsubscribe"], email
        assert (row["email_availability"] == "unreachable") == (fact["send_result"] in hard), email
        delivered = fact["send_result"] in (
            "ok_delivered",
            "ok_read",
            "ok_link_visited",
            "ok_unsubscribed",
            "ok_fbl",
        )
        assert bool(row["email_last_delivered_at"]) == delivered, email
        assert bool(row["email_last_read_at"]) == (fact["opens"] > 0), email
        assert bool(row["email_last_clicked_at"]) == bool(fact["clicks"]), email
    reader = next(e for e, f in facts.items() if f["opens"] and f["clicks"])
    details = (await sb.result("getContact", key, {"email": reader, "include_details": "1"}))["email"]
    assert details["last_read_datetime"] == rows[reader]["email_last_read_at"]
    assert details["last_click_datetime"] == rows[reader]["email_last_clicked_at"]


async def test_the_same_seed_draws_the_same_facts_and_another_seed_does_not(sb: Sb, key: str) -> None:
    other = str((await sb.control("POST", "/accounts", {"api_key": "c" + uuid.uuid4().hex}))["api_key"])
    first = await completed_facts(sb, key, await send(sb, key, (await members(sb, key))[0], duration_s=0))
    list_b = (await members(sb, other))[0]
    again = await completed_facts(sb, other, await send(sb, other, list_b, duration_s=0))
    assert again == first
    changed = await completed_facts(sb, other, await send(sb, other, list_b, seed=8, duration_s=0))
    assert changed != first


async def test_hook_deliveries_are_exactly_the_facts_signed_and_batched(sb: Sb, key: str) -> None:
    receiver = Receiver()
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        names = ("email_status", "unsubscribe", "campaign_status", "subscribe")
        args = {"hook_url": f"{hook_base}/hook", **{f"events[{n}]": "*" for n in names}}
        assert await sb.result("setHook", key, args) == {}
        list_id, _ = await members(sb, key)
        campaign_id = await send(sb, key, list_id, duration_s=0.4)
        facts = await completed_facts(sb, key, campaign_id)
        expected: Counter[tuple[Any, ...]] = Counter()
        for email, f in facts.items():
            expected[("email_status", email, "ok_sent")] += 1
            if f["send_result"] != "ok_sent":
                first = f["send_result"] if f["send_result"].startswith("err_") else "ok_delivered"
                expected[("email_status", email, first)] += 1
            expected[("email_status", email, "ok_read")] += f["opens"]
            expected[("email_status", email, "ok_link_visited")] += len(f["clicks"])
            if f["complaint"]:
                expected[("email_status", email, "ok_fbl")] += 1
            if f["unsubscribe"]:
                expected[("email_status", email, "ok_unsubscribed")] += 1
                expected[("unsubscribe", email, list_id)] += 1
        expected[("campaign_status", campaign_id, "in_progress")] += 1
        expected[("campaign_status", campaign_id, "completed")] += 1
        total = sum(expected.values())
        await wait_for(lambda: len(receiver.events()) >= total)
        await asyncio.sleep(0.05)  # nothing more arrives

    events = receiver.events()
    assert len(events) == total
    seen: Counter[tuple[Any, ...]] = Counter()
    for e in events:
        data = e["event_data"]
        if e["event_name"] == "email_status":
            seen[("email_status", data["email"], data["status"])] += 1
            assert data["campaign_id"] == campaign_id
            assert list(data) == ["email", "status", "status_group", "campaign_id"]
        elif e["event_name"] == "unsubscribe":
            seen[("unsubscribe", data["email"], data["list_id"])] += 1
        else:
            seen[(e["event_name"], data["campaign_id"], data["status"])] += 1
    assert seen == expected
    groups = {
        (e["event_data"]["status"], e["event_data"]["status_group"])
        for e in events
        if e["event_name"] == "email_status"
    }
    assert ("ok_sent", "success_pending_group") in groups
    assert ("ok_read", "success_group") in groups
    assert ("ok_unsubscribed", "unsubscribed_group") in groups
    assert all(g == "error_group" for s, g in groups if s.startswith("err_"))
    # Batched over the duration: several bodies, each a signed classic envelope.
    assert len(receiver.bodies) > 1
    assert all(signed(body, key) for body in receiver.bodies)
    assert all(list(json.loads(body)) == ["auth", "events_by_user"] for body in receiver.bodies)


async def test_delivery_stats_changed_since_field_ids_and_the_async_form(sb: Sb, key: str) -> None:
    list_id, _ = await members(sb, key, count=12)
    await sb.result(
        "importContacts",
        key,
        {
            "field_names[0]": "email",
            "field_names[1]": "Name",
            "data[0][0]": "m03@example.com",
            "data[0][1]": "Mia",
        },
    )
    campaign_id = await send(sb, key, list_id, duration_s=0)
    facts = await completed_facts(sb, key, campaign_id)
    args = {"campaign_id": str(campaign_id), "field_ids[0]": "1"}
    table = await sb.result("getCampaignDeliveryStats", key, args)
    assert table["fields"] == ["email", "send_result", "last_update", "Name"]
    rows = {r[0]: r for r in table["data"]}
    assert rows["m03@example.com"][3] == "Mia"
    newest = max(r[2] for r in table["data"])
    later = await sb.result("getCampaignDeliveryStats", key, {**args, "changed_since": newest})
    assert sorted(r[0] for r in later["data"]) == sorted(e for e, r in rows.items() if r[2] >= newest)
    future = await sb.result(
        "getCampaignDeliveryStats", key, {**args, "changed_since": "2999-01-01 00:00:00"}
    )
    assert future["data"] == []

    task = await sb.result("async/getCampaignDeliveryStats", key, args)
    assert task["status"] == "new"
    done = await sb.result("async/getTaskResult", key, {"task_uuid": task["task_uuid"]})
    assert (done["status"], done["task_type"]) == ("completed", "campaign_delivery_stats")
    lines = (await sb.http.get(done["file_to_download"])).text.splitlines()
    assert lines[0] == "email,send_result,last_update,Name"
    assert {line.split(",")[0]: line.split(",")[1] for line in lines[1:]} == {
        e: f["send_result"] for e, f in facts.items()
    }


async def test_campaign_errors(sb: Sb, key: str) -> None:
    list_id, _ = await members(sb, key, count=2)
    unknown = await sb.call("getCampaignCommonStats", key, {"campaign_id": "999999"})
    assert unknown["code"] == "invalid_arg"
    assert (await sb.call("getCampaigns", key, {"limit": "101"}))["code"] == "invalid_arg"
    assert (await sb.call("getCampaigns", key, {"from": "yesterday"}))["code"] == "invalid_arg"
    path = f"/accounts/{key}/campaigns"
    await sb.control("POST", path, {"list_id": 1}, status=404)
    await sb.control(
        "POST", path, {"list_id": list_id, "rates": {"hard_bounce": 0.6, "delivered": 0.6}}, status=400
    )
    await sb.control("POST", path, {"list_id": list_id, "rates": {"clicked": 0.5}}, status=400)
    await sb.control("GET", f"{path}/999999/facts", status=404)
