"""Shared by the Unisender sandbox's campaign, export and UI-change tests: a loopback client for the API and
the control API, a hook receiver, and a seeded campaign over a list of members."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

FORM = {"content-type": "application/x-www-form-urlencoded"}
LINKS = ["https://shop.example.com/sale", "https://shop.example.com/new"]
# Every outcome occurs with these rates and seed among 40 recipients (asserted, so a change shows).
RATES = {
    "hard_bounce": 0.1,
    "soft_bounce": 0.1,
    "delivered": 0.72,
    "opened": 0.6,
    "clicked": 0.45,
    "complaint": 0.08,
    "unsubscribe": 0.15,
}


@dataclass
class Sb:
    url: str
    app: FastAPI
    http: httpx.AsyncClient

    async def call(self, method: str, key: str, args: dict[str, str] | None = None) -> Any:
        body = str(httpx.QueryParams({"api_key": key, **(args or {})}))
        response = await self.http.post(f"/en/api/{method}?format=json", content=body.encode(), headers=FORM)
        assert response.status_code == 200, response.text
        return response.json()

    async def result(self, method: str, key: str, args: dict[str, str] | None = None) -> Any:
        answer = await self.call(method, key, args)
        assert "result" in answer, answer
        return answer["result"]

    async def control(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.http.request(method, f"/_sandbox{path}", json=body)
        assert response.status_code == status, response.text
        return response.json()


@dataclass
class Receiver:
    bodies: list[bytes] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.bodies for e in json.loads(b)["events_by_user"][0]["events"]]


def receiver_app(receiver: Receiver) -> FastAPI:
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        receiver.bodies.append(await request.body())
        return Response("ok")

    return app


def signed(raw: bytes, api_key: str) -> bool:
    digest = json.loads(raw)["auth"]
    restored = raw.replace(digest.encode(), api_key.encode(), 1)
    return hmac.compare_digest(hashlib.md5(restored).hexdigest(), digest)


async def wait_for(predicate: Callable[[], Any], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if await predicate() if asyncio.iscoroutinefunction(predicate) else predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def members(sb: Sb, key: str, count: int = 40) -> tuple[int, list[str]]:
    """A list with ``count`` members, plus one unsubscribed member and one non-member (neither is a recipient)."""
    list_id = int((await sb.result("createList", key, {"title": "News"}))["id"])
    emails = [f"m{i:02d}@example.com" for i in range(count)]
    rows = [
        *([e, str(list_id), ""] for e in emails),
        ["gone@example.com", "", str(list_id)],
        ["out@example.com", "", ""],
    ]
    args = {
        "field_names[0]": "email",
        "field_names[1]": "email_list_ids",
        "field_names[2]": "email_unsubscribed_list_ids",
    }
    for r, row in enumerate(rows):
        args.update({f"data[{r}][{c}]": v for c, v in enumerate(row)})
    assert (await sb.result("importContacts", key, args))["inserted"] == count + 2
    return list_id, emails


async def send(sb: Sb, key: str, list_id: int, *, seed: int = 7, duration_s: float = 0.3) -> int:
    body = {
        "list_id": list_id,
        "subject": "Sale",
        "rates": RATES,
        "links": LINKS,
        "seed": seed,
        "duration_s": duration_s,
    }
    return int((await sb.control("POST", f"/accounts/{key}/campaigns", body))["campaign_id"])


async def completed_facts(sb: Sb, key: str, campaign_id: int) -> dict[str, Any]:
    path = f"/accounts/{key}/campaigns/{campaign_id}/facts"

    async def done() -> bool:
        return bool((await sb.control("GET", path))["status"] == "completed")

    await wait_for(done)
    facts: dict[str, Any] = (await sb.control("GET", path))["addresses"]
    return facts


def expected_common_stats(facts: dict[str, Any]) -> dict[str, int]:
    delivered = [
        f for f in facts.values() if f["send_result"].startswith("ok_") and f["send_result"] != "ok_sent"
    ]
    return {
        "total": len(facts),
        "sent": len(facts),
        "delivered": len(delivered),
        "read_unique": sum(1 for f in facts.values() if f["opens"] or f["clicks"]),
        "read_all": sum(f["opens"] or (1 if f["clicks"] else 0) for f in facts.values()),
        "clicked_unique": sum(1 for f in facts.values() if f["clicks"]),
        "clicked_all": sum(len(f["clicks"]) for f in facts.values()),
        "unsubscribed": sum(1 for f in facts.values() if f["unsubscribe"]),
        "spam": sum(1 for f in facts.values() if f["complaint"]),
    }
