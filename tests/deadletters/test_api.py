"""The dead-letter endpoints over real HTTP, on rows seeded in their dead states: listing, paging and filters,
replay and discard (idempotent, recorded), and every refusal (a code, nothing changed)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.context import ProcessContext
from app.deadletters import service
from app.queue import QUEUE_NAME
from tests.conftest import REDIS_URL, raw_sql
from tests.deadletters.support import ACCOUNT, OTHER, Seeded, register, seed, states

BASE = f"/accounts/{ACCOUNT}/dead-letters"


@pytest.fixture
async def seeded(api: httpx.AsyncClient, admin_headers: dict[str, str], settings: Any) -> Seeded:
    await register(api, admin_headers, ACCOUNT)
    await register(api, admin_headers, OTHER)
    return await seed(settings.database_url)


async def _queued() -> list[str]:
    client = aioredis.from_url(REDIS_URL)
    try:
        return sorted(k.decode() for k in await client.zrange(QUEUE_NAME, 0, -1))
    finally:
        await client.aclose()


async def _actions(url: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await raw_sql(url, "SELECT * FROM dead_letter_action ORDER BY id")]


class TestList:
    async def test_every_kind_newest_first_with_reason_answer_and_attempts(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded
    ) -> None:
        r = await api.get(BASE, headers=admin_headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [i["id"] for i in body["items"]] == seeded.listed()
        assert body["counts"] == {"event": 2, "outbox": 3, "crm_write": 1, "signup": 1}
        assert (body["total"], body["pages"], body["page"], body["kind"]) == (7, 1, 1, None)
        by_id = {i["id"]: i for i in body["items"]}
        rejected = by_id[f"outbox:{seeded.outbox_rejected}"]
        assert rejected["status"] == "rejected"
        assert rejected["reason"] == "refused by the email platform"
        assert rejected["code"] == "role_address"
        assert "Role address" in rejected["error"]
        assert rejected["email"] == "info@example.com"
        assert rejected["attempts"] == 0
        dead = by_id[f"outbox:{seeded.outbox_dead}"]
        assert (dead["status"], dead["reason"], dead["attempts"]) == ("dead", "attempts exhausted", 15)
        failed = by_id[f"event:{seeded.event_failed}"]
        assert (failed["reason"], failed["attempts"], failed["detail"]) == (
            "could not be applied",
            5,
            "kommo",
        )
        assert "CheckViolation" in failed["error"]
        write = by_id[f"crm_write:{seeded.crm_write_failed}"]
        assert (write["kommo_id"], write["detail"], write["attempts"]) == (77, "custom_field:5 → City", None)
        assert by_id[f"signup:{seeded.signup_failed}"]["error"] == "NotFoundError: 404"
        # Not dead letters: a discarded row, a done row, another account's failed event.
        assert f"outbox:{seeded.outbox_discarded}" not in by_id
        assert f"outbox:{seeded.outbox_done}" not in by_id

    async def test_paging_and_kind_filter(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded
    ) -> None:
        listed = seeded.listed()
        seen: list[str] = []
        for page in (1, 2, 3, 4):
            r = await api.get(BASE, headers=admin_headers, params={"page": page, "per_page": 2})
            assert r.status_code == 200, r.text
            assert r.json()["pages"] == 4
            seen += [i["id"] for i in r.json()["items"]]
        assert seen == listed
        r = await api.get(BASE, headers=admin_headers, params={"page": 5, "per_page": 2})
        assert (r.status_code, r.json()["items"], r.json()["total"]) == (200, [], 7)
        r = await api.get(BASE, headers=admin_headers, params={"kind": "outbox"})
        body = r.json()
        assert [i["id"] for i in body["items"]] == [x for x in listed if x.startswith("outbox:")]
        assert (body["total"], body["kind"]) == (3, "outbox")
        assert body["counts"]["event"] == 2  # the counts always cover every kind
        other = await api.get(f"/accounts/{OTHER}/dead-letters", headers=admin_headers)
        assert [i["id"] for i in other.json()["items"]] == [f"event:{seeded.other_event}"]

    async def test_refusals(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded
    ) -> None:
        r = await api.get(BASE, headers=admin_headers, params={"kind": "letters"})
        assert (r.status_code, r.json()["error"]) == (422, "unknown_kind")
        assert r.json()["kinds"] == ["event", "outbox", "crm_write", "signup"]
        r = await api.get("/accounts/99999/dead-letters", headers=admin_headers)
        assert (r.status_code, r.json()["error"]) == (404, "unknown_account")
        r = await api.get(BASE)
        assert r.status_code == 401
        r = await api.get(BASE, headers=admin_headers, params={"per_page": 1000})
        assert (r.status_code, r.json()["error"]) == (422, "validation_error")


class TestRefusedActions:
    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({}, 422, "nothing_selected"),
            ({"ids": []}, 422, "nothing_selected"),
            ({"all": False}, 422, "nothing_selected"),
            ({"ids": ["outbox:1"], "all": True}, 422, "ambiguous_selection"),
            ({"all": True, "kind": "letters"}, 422, "unknown_kind"),
            ({"ids": ["letters:1"]}, 422, "unknown_kind"),
            ({"ids": ["12"]}, 422, "invalid_id"),
            ({"ids": ["outbox:x"]}, 422, "invalid_id"),
            ({"ids": ["outbox:1"], "kind": "event"}, 422, "invalid_id"),
            ({"ids": [f"outbox:{i}" for i in range(service.MAX_IDS + 1)]}, 422, "too_many_ids"),
            ({"all": "yes"}, 422, "validation_error"),
            ({"ids": "outbox:1"}, 422, "validation_error"),
            ({"all": True, "extra": 1}, 422, "validation_error"),
        ],
    )
    @pytest.mark.parametrize("action", ["replay", "discard"])
    async def test_bad_input_changes_nothing(
        self,
        api: httpx.AsyncClient,
        admin_headers: dict[str, str],
        seeded: Seeded,
        settings: Any,
        action: str,
        body: dict[str, Any],
        status: int,
        code: str,
    ) -> None:
        before = await states(settings.database_url)
        r = await api.post(f"{BASE}/{action}", headers=admin_headers, json=body)
        assert (r.status_code, r.json()["error"]) == (status, code), r.text
        assert r.json()["detail"]
        assert await states(settings.database_url) == before
        assert await _actions(settings.database_url) == []
        assert await _queued() == []

    @pytest.mark.parametrize("action", ["replay", "discard"])
    async def test_ids_of_another_account_or_unknown_are_404_and_change_nothing(
        self,
        api: httpx.AsyncClient,
        admin_headers: dict[str, str],
        seeded: Seeded,
        settings: Any,
        action: str,
    ) -> None:
        before = await states(settings.database_url)
        mine = f"event:{seeded.event_failed}"
        theirs = f"event:{seeded.other_event}"
        r = await api.post(
            f"{BASE}/{action}", headers=admin_headers, json={"ids": [mine, theirs, "signup:999999"]}
        )
        assert (r.status_code, r.json()["error"]) == (404, "unknown_dead_letter"), r.text
        assert sorted(r.json()["ids"]) == sorted([theirs, "signup:999999"])
        assert await states(settings.database_url) == before
        assert await _actions(settings.database_url) == []
        r = await api.post(
            f"/accounts/99999/dead-letters/{action}", headers=admin_headers, json={"all": True}
        )
        assert (r.status_code, r.json()["error"]) == (404, "unknown_account")
        r = await api.post(f"{BASE}/{action}", json={"all": True})
        assert r.status_code == 401
        assert await states(settings.database_url) == before


class TestReplay:
    async def test_replay_by_ids_resets_enqueues_and_records(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded, settings: Any
    ) -> None:
        url = settings.database_url
        ids = [
            f"event:{seeded.event_failed}",
            f"event:{seeded.event_unrecognised}",
            f"crm_write:{seeded.crm_write_failed}",
            f"signup:{seeded.signup_failed}",
            f"outbox:{seeded.outbox_done}",  # not dead: skipped
        ]
        r = await api.post(f"{BASE}/replay", headers=admin_headers, json={"ids": ids})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["replayed"], body["skipped"], body["requested"], body["more"]) == (4, 1, 5, False)
        assert body["by_kind"] == {
            "event": {"affected": 2, "skipped": 0},
            "crm_write": {"affected": 1, "skipped": 0},
            "signup": {"affected": 1, "skipped": 0},
            "outbox": {"affected": 0, "skipped": 1},
        }
        now = await states(url)
        assert [now[i] for i in ids] == ["pending", "pending", "pending", "pending", "done"]
        events = await raw_sql(
            url,
            "SELECT attempts, last_error, handled_at FROM webhook_event WHERE id = $1",
            seeded.event_failed,
        )
        assert dict(events[0]) == {"attempts": 0, "last_error": None, "handled_at": None}
        # The jobs of the normal path, sent after the commit.
        queued = await _queued()
        for prefix in (f"events:kommo:{ACCOUNT}:", f"crmw:{ACCOUNT}:", f"signups:{ACCOUNT}:"):
            assert any(job.startswith(prefix) for job in queued), (prefix, queued)
        # Listed no more; the others still are.
        listed = [i["id"] for i in (await api.get(BASE, headers=admin_headers)).json()["items"]]
        assert listed == [x for x in seeded.listed() if x not in ids]
        # Again: nothing left to replay, and the answer says so.
        again = await api.post(f"{BASE}/replay", headers=admin_headers, json={"ids": ids})
        assert (again.json()["replayed"], again.json()["skipped"]) == (0, 5)
        assert await states(url) == now
        actions = (await api.get(f"{BASE}/actions", headers=admin_headers)).json()
        assert actions["total"] == 2
        latest, first = actions["actions"]
        assert (first["operation"], first["actor"], first["affected"], first["skipped"]) == (
            "replay",
            "operator",
            4,
            1,
        )
        assert first["items"] == {
            "event": sorted([seeded.event_failed, seeded.event_unrecognised]),
            "crm_write": [seeded.crm_write_failed],
            "signup": [seeded.signup_failed],
        }
        assert first["id"] == body["action_id"]
        assert (latest["affected"], latest["skipped"], latest["items"]) == (0, 5, {})
        assert first["at"] <= latest["at"]

    async def test_outbox_replay_goes_through_the_mirror_rules(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded, settings: Any
    ) -> None:
        """A replayed outbox row is re-derived as any change is: an address unsubscribed since is cancelled,
        never sent; one that no contact holds and the platform never held has nothing to send (settled)."""
        r = await api.post(f"{BASE}/replay", headers=admin_headers, json={"all": True, "kind": "outbox"})
        assert r.status_code == 200, r.text
        assert (r.json()["replayed"], r.json()["skipped"], r.json()["kind"]) == (3, 0, "outbox")
        rows = await raw_sql(
            settings.database_url, "SELECT id, status, attempts, last_error, reject_code FROM outbox"
        )
        by_id = {r["id"]: dict(r) for r in rows}
        assert by_id[seeded.outbox_unsubscribed]["status"] == "cancelled"
        assert by_id[seeded.outbox_unsubscribed]["last_error"] == "unsubscribed"
        for row_id in (seeded.outbox_rejected, seeded.outbox_dead):
            assert by_id[row_id]["status"] == "done"
            assert (by_id[row_id]["attempts"], by_id[row_id]["reject_code"]) == (0, None)
        assert by_id[seeded.outbox_discarded]["status"] == "discarded"  # not a dead letter: untouched
        assert any(job.startswith(f"flush:{ACCOUNT}:") for job in await _queued())

    async def test_all_takes_at_most_max_all_and_says_more(
        self,
        api: httpx.AsyncClient,
        admin_headers: dict[str, str],
        seeded: Seeded,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(service, "MAX_ALL", 3)
        r = await api.post(f"{BASE}/discard", headers=admin_headers, json={"all": True})
        body = r.json()
        assert (body["discarded"], body["more"]) == (3, True)
        # Oldest first: both events, then the oldest outbox row.
        assert body["by_kind"] == {
            "event": {"affected": 2, "skipped": 0},
            "outbox": {"affected": 1, "skipped": 0},
        }
        r = await api.post(f"{BASE}/discard", headers=admin_headers, json={"all": True})
        assert (r.json()["discarded"], r.json()["more"]) == (3, True)
        r = await api.post(f"{BASE}/discard", headers=admin_headers, json={"all": True})
        assert (r.json()["discarded"], r.json()["more"]) == (1, False)
        assert (await api.get(BASE, headers=admin_headers)).json()["total"] == 0


class TestDiscard:
    async def test_discard_hides_keeps_the_reason_and_is_idempotent(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded, settings: Any
    ) -> None:
        ids = [str(seeded.outbox_rejected), str(seeded.outbox_dead)]
        r = await api.post(f"{BASE}/discard", headers=admin_headers, json={"ids": ids, "kind": "outbox"})
        assert r.status_code == 200, r.text
        assert (r.json()["discarded"], r.json()["skipped"]) == (2, 0)
        rows = await raw_sql(
            settings.database_url,
            "SELECT status, reject_code FROM outbox WHERE id = ANY($1::bigint[]) ORDER BY id",
            [seeded.outbox_rejected, seeded.outbox_dead],
        )
        assert [(x["status"], x["reject_code"]) for x in rows] == [
            ("discarded", "role_address"),
            ("discarded", None),
        ]
        listed = (await api.get(BASE, headers=admin_headers, params={"kind": "outbox"})).json()
        assert [i["id"] for i in listed["items"]] == [f"outbox:{seeded.outbox_unsubscribed}"]
        again = await api.post(f"{BASE}/discard", headers=admin_headers, json={"ids": ids, "kind": "outbox"})
        assert (again.json()["discarded"], again.json()["skipped"]) == (0, 2)
        # A discarded row is no dead letter: replaying it does nothing.
        replay = await api.post(f"{BASE}/replay", headers=admin_headers, json={"ids": ids, "kind": "outbox"})
        assert (replay.json()["replayed"], replay.json()["skipped"]) == (0, 2)
        assert await _queued() == []
        actions = (await api.get(f"{BASE}/actions", headers=admin_headers)).json()["actions"]
        assert [(a["operation"], a["affected"]) for a in actions] == [
            ("replay", 0),
            ("discard", 0),
            ("discard", 2),
        ]
        assert actions[2]["items"] == {"outbox": sorted([seeded.outbox_rejected, seeded.outbox_dead])}
        assert actions[2]["kind"] == "outbox"


class TestConcurrent:
    async def test_two_replays_at_once_replay_each_row_once_whatever_their_order(
        self, api: httpx.AsyncClient, admin_headers: dict[str, str], seeded: Seeded
    ) -> None:
        ids = seeded.listed()
        first, second = await asyncio.gather(
            api.post(f"{BASE}/replay", headers=admin_headers, json={"ids": ids}),
            api.post(f"{BASE}/replay", headers=admin_headers, json={"ids": ids[::-1]}),
        )
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        replayed = first.json()["replayed"] + second.json()["replayed"]
        skipped = first.json()["skipped"] + second.json()["skipped"]
        assert (replayed, skipped) == (len(ids), len(ids))
        assert (await api.get(BASE, headers=admin_headers)).json()["total"] == 0


async def test_totals_per_account_in_one_query(seeded: Seeded, ctx: ProcessContext) -> None:
    async with ctx.db.session_scope() as session:
        assert await service.totals(session, [ACCOUNT, OTHER, 99]) == {ACCOUNT: 7, OTHER: 1, 99: 0}
        assert await service.totals(session, []) == {}
