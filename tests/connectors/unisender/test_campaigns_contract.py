"""Contract tests: UnisenderClient's campaign reads and exports against the Unisender sandbox over loopback
HTTP (seeded campaign facts must come back exactly), plus a loopback fake answering the other shapes the spec
documents (string numbers, object rows, the async delivery-stats form, gzipped CSV with a BOM…)."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from app.connectors.base import ImportRow
from app.connectors.unisender import (
    UnisenderClient,
    UnisenderRateLimited,
    UnisenderRequestError,
    UnisenderTransientError,
    split_ids,
)
from app.context import tls_context
from app.servers import serve_in_background
from tests.support.limits import Unlimited

sandbox = pytest.importorskip("sandbox.unisender", reason="Unisender sandbox not available")

KEY = "campaign-contract-key"
LINKS = ["https://shop.example.com/a", "https://shop.example.com/b"]
RATES = {
    "hard_bounce": 0.1,
    "soft_bounce": 0.1,
    "delivered": 0.72,
    "opened": 0.6,
    "clicked": 0.45,
    "complaint": 0.08,
    "unsubscribe": 0.15,
}


class CountingLimiter(Unlimited):
    """Counts the API calls the client makes (each acquires one unit)."""

    def __init__(self) -> None:
        self.calls = 0

    async def acquire(self, cost: float = 1.0) -> None:
        self.calls += 1


class Env:
    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http
        self.limiter = CountingLimiter()
        self.client = UnisenderClient(http, base_url=url, api_key=KEY, limiter=self.limiter)

    async def control(self, method: str, path: str, json: Any = None) -> Any:
        response = await self.http.request(method, f"{self.url}/_sandbox{path}", json=json)
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[Env]:
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(10.0, connect=2.0)) as http,
    ):
        yield Env(url, http)


def sandbox_app(**config: Any) -> FastAPI:
    return sandbox.create_unisender_sandbox(sandbox.UnisenderSandboxConfig(accounts={KEY: "acme"}, **config))


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with running(sandbox_app()) as e:
        yield e


async def wait_for(predicate: Callable[[], Any], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def seeded_campaign(env: Env, count: int = 40) -> tuple[int, int, dict[str, Any]]:
    """A list of ``count`` contacts (Name set), a campaign to it, its facts once completed."""
    list_id = await env.client.create_list("News")
    rows = [
        ImportRow(email=f"r{i:02d}@example.com", fields=(("Name", f"R{i}"),), list_ids=(list_id,))
        for i in range(count)
    ]
    await env.client.import_contacts(rows)
    body = {
        "list_id": list_id,
        "subject": "Sale",
        "rates": RATES,
        "links": LINKS,
        "seed": 11,
        "duration_s": 0.2,
    }
    campaign_id = int((await env.control("POST", f"/accounts/{KEY}/campaigns", body))["campaign_id"])
    path = f"/accounts/{KEY}/campaigns/{campaign_id}/facts"

    async def done() -> bool:
        return bool((await env.control("GET", path))["status"] == "completed")

    await wait_for(done)
    return list_id, campaign_id, (await env.control("GET", path))["addresses"]


# --- against the sandbox ---------------------------------------------------------------------------------


async def test_campaign_reads_equal_the_seeded_facts(env: Env) -> None:
    list_id, campaign_id, facts = await seeded_campaign(env)
    results = Counter(f["send_result"] for f in facts.values())
    assert len(results) >= 6  # every kind of outcome is there to be read back
    assert any(f["clicks"] and not f["opens"] for f in facts.values())

    (campaign,) = await env.client.get_campaigns()
    assert (campaign.id, campaign.list_id, campaign.status, campaign.subject) == (
        campaign_id,
        list_id,
        "completed",
        "Sale",
    )
    assert campaign.start_time is not None
    assert campaign.start_time.tzinfo is UTC
    assert abs((datetime.now(UTC) - campaign.start_time).total_seconds()) < 60
    assert await env.client.get_campaigns(start_from=datetime(2999, 1, 1, tzinfo=UTC)) == []
    status = await env.client.get_campaign_status(campaign_id)
    assert (status.status, status.start_time) == ("completed", campaign.start_time)

    stats = await env.client.get_campaign_common_stats(campaign_id)
    clickers = {e for e, f in facts.items() if f["clicks"]}
    readers = {e for e, f in facts.items() if f["opens"]}
    assert stats.total == stats.sent == len(facts)
    assert stats.read_unique == len(readers | clickers)
    assert stats.clicked_unique == len(clickers)
    assert stats.clicked_all == sum(len(f["clicks"]) for f in facts.values())
    assert stats.unsubscribed == sum(f["unsubscribe"] for f in facts.values())
    assert stats.spam == sum(f["complaint"] for f in facts.values())
    assert stats.delivered == sum(
        r.startswith("ok_") and r != "ok_sent" for r in (f["send_result"] for f in facts.values())
    )

    delivery = await env.client.get_campaign_delivery_stats(campaign_id, field_ids=[1])
    assert {d.email: d.send_result for d in delivery} == {e: f["send_result"] for e, f in facts.items()}
    assert all(d.last_update is not None and d.fields == {"Name": f"R{int(d.email[1:3])}"} for d in delivery)
    future = datetime(2999, 1, 1, tzinfo=UTC)
    assert await env.client.get_campaign_delivery_stats(campaign_id, changed_since=future) == []

    clicks = sorted((e, url) for e, f in facts.items() for url in f["clicks"])
    links = await env.client.get_visited_links(campaign_id)
    assert sorted((v.email, v.url) for v in links) == clicks
    assert all(v.count == 1 and v.ip and v.request_time for v in links)
    grouped = await env.client.get_visited_links(campaign_id, group=True)
    assert {(v.email, v.url): v.count for v in grouped} == dict(Counter(clicks))


async def test_the_async_delivery_stats_task_reads_the_same_facts(env: Env) -> None:
    _, campaign_id, facts = await seeded_campaign(env, count=10)
    before = env.limiter.calls
    table = await env.client.run_task("async/getCampaignDeliveryStats", [("campaign_id", str(campaign_id))])
    assert env.limiter.calls - before == 2  # the start and one getTaskResult, both through the limiter
    assert {r["email"]: r["send_result"] for r in table.records()} == {
        e: f["send_result"] for e, f in facts.items()
    }


async def test_unknown_campaign_is_a_request_error(env: Env) -> None:
    with pytest.raises(UnisenderRequestError) as caught:
        await env.client.get_campaign_common_stats(123456789)
    assert caught.value.code == "invalid_arg"


async def test_export_polls_until_completed_and_reads_the_gzipped_file() -> None:
    async with running(sandbox_app(task_seconds=0.25, export_gzip=True)) as env:
        first = await env.client.create_list("A")
        second = await env.client.create_list("B")
        rows = [
            ImportRow(
                email=f"x{i}@example.com", fields=(("Name", f"Имя {i}, младший"),), list_ids=(first, second)
            )
            for i in range(5)
        ]
        rows.append(ImportRow(email="other@example.com", list_ids=(second,)))
        await env.client.import_contacts(rows)
        exported = await env.client.export_contacts(
            list_id=first, field_names=["email", "Name", "email_list_ids"], poll_interval=0.05, max_polls=40
        )
        assert exported.columns == ("email", "Name", "email_list_ids")
        assert sorted(exported.contacts, key=lambda c: c["email"]) == [
            {"email": f"x{i}@example.com", "Name": f"Имя {i}, младший", "email_list_ids": f"{first},{second}"}
            for i in range(5)
        ]
        assert split_ids(exported.contacts[0]["email_list_ids"]) == (first, second)
        (task,) = (await env.control("GET", "/tasks"))["tasks"]
        assert task["polls"] >= 3  # new → processing … → completed: the client really polled

        everything = await env.client.export_contacts(poll_interval=0.05, max_polls=40)
        assert everything.columns[:2] == ("id", "email")
        assert "Name" in everything.columns
        assert sorted(c["email"] for c in everything.contacts) == sorted(r.email for r in rows)


async def test_export_gives_up_after_its_bounded_polls() -> None:
    async with running(sandbox_app(task_seconds=30.0)) as env:
        with pytest.raises(UnisenderTransientError) as caught:
            await env.client.export_contacts(poll_interval=0.01, max_polls=3)
        assert caught.value.code == "task_timeout"
        (task,) = (await env.control("GET", "/tasks"))["tasks"]
        assert (task["status"], task["polls"]) == ("processing", 3)


async def test_export_rate_limit_is_the_clients_error_tree() -> None:
    async with running(sandbox_app(method_limits={"async/exportContacts": 1})) as env:
        await env.client.export_contacts(poll_interval=0.01)
        with pytest.raises(UnisenderRateLimited):
            await env.client.export_contacts(poll_interval=0.01)


# --- the other documented shapes, from a loopback fake ------------------------------------------------------


def fake_unisender(answers: dict[str, Any], files: dict[str, bytes]) -> FastAPI:
    """Answers ``/en/api/{method}`` from ``answers`` (a value, or a list consumed one per call)."""
    app = FastAPI()

    @app.post("/en/api/{method:path}")
    async def api(method: str) -> Response:
        answer = answers[method]
        if isinstance(answer, list) and answer and isinstance(answer[0], dict) and "__seq__" in answer[0]:
            answer = answer.pop(0)["__seq__"]
        return JSONResponse(answer)

    @app.get("/files/{name}")
    async def file(name: str) -> Response:
        if name not in files:
            return Response("gone", status_code=404)
        return Response(files[name], media_type="application/octet-stream")

    return app


def seq(*answers: Any) -> list[dict[str, Any]]:
    return [{"__seq__": a} for a in answers]


async def test_every_documented_shape_is_read() -> None:
    task = str(uuid.uuid4())
    csv_text = "\ufeffemail;send_result;last_update;Name\nA@x.org;ok_read;2024-05-01 10:00:00;Ann\nb@x.org;err_user_unknown;;\n"
    answers: dict[str, Any] = {
        "getCampaigns": {
            "result": {
                "0": {"id": "77", "start_time": "0000-00-00 00:00:00", "list_id": "", "status": "completed"}
            }
        },
        "getCampaignCommonStats": {
            "result": {"total": "3", "sent": 3, "delivered": None, "read_unique": "2", "extra": 1}
        },
        "getCampaignDeliveryStats": {"error": "Unknown method", "code": "unknown_method"},
        "async/getCampaignDeliveryStats": {"result": {"task_uuid": task, "status": "new"}},
        "async/getTaskResult": seq(
            {"result": {"task_uuid": task, "status": "processing"}},
            {"result": {"task_uuid": task, "status": "completed", "file_to_download": "FILE"}},
        ),
        "getVisitedLinks": {
            "result": {
                "fields": ["email", "url", "request_time", "ip"],
                "data": {
                    "0": {"email": "a@x.org", "url": "https://u", "request_time": 1714557600, "ip": None}
                },
            }
        },
    }
    files = {"stats.csv.gz": gzip.compress(csv_text.encode())}
    async with running(fake_unisender(answers, files)) as env:
        answers["async/getTaskResult"][1]["__seq__"]["result"]["file_to_download"] = (
            f"{env.url}/files/stats.csv.gz"
        )
        (campaign,) = await env.client.get_campaigns()
        assert (campaign.id, campaign.start_time, campaign.list_id) == (77, None, None)
        stats = await env.client.get_campaign_common_stats(77)
        assert (stats.total, stats.sent, stats.delivered, stats.read_unique, stats.spam) == (3, 3, 0, 2, 0)
        delivery = await env.client.get_campaign_delivery_stats(77, poll_interval=0.01)
        assert [(d.email, d.send_result, d.fields) for d in delivery] == [
            ("a@x.org", "ok_read", {"Name": "Ann"}),
            ("b@x.org", "err_user_unknown", {"Name": ""}),
        ]
        assert delivery[0].last_update == datetime(2024, 5, 1, 10, tzinfo=UTC)
        assert delivery[1].last_update is None
        (link,) = await env.client.get_visited_links(77)
        assert (link.email, link.url, link.ip, link.count) == ("a@x.org", "https://u", None, 1)
        assert link.request_time == datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("task_answer", "code"),
    [
        ({"status": "failed"}, "task_failed"),
        ({"status": "completed"}, "bad_response"),
        ({"status": "completed", "file_to_download": "MISSING"}, "http_404"),
        ("not an object", "bad_response"),
    ],
)
async def test_a_task_that_cannot_deliver_its_file_is_a_transient_or_request_error(
    task_answer: Any, code: str
) -> None:
    answers: dict[str, Any] = {
        "async/exportContacts": {"result": {"task_uuid": "t1", "status": "new"}},
        "async/getTaskResult": {"result": task_answer},
    }
    async with running(fake_unisender(answers, {})) as env:
        if isinstance(task_answer, dict) and task_answer.get("file_to_download") == "MISSING":
            task_answer["file_to_download"] = f"{env.url}/files/missing.csv"
        with pytest.raises((UnisenderTransientError, UnisenderRequestError)) as caught:
            await env.client.export_contacts(poll_interval=0.01, max_polls=2)
        assert caught.value.code == code
