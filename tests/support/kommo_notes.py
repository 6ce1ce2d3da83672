"""Helpers for the Kommo sandbox's notes and batch-write tests (``tests/sandbox/test_kommo_notes*.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.context import loopback_client
from app.servers import serve_in_background
from sandbox.kommo import KommoSandboxConfig, create_kommo_sandbox

PROBLEM = "application/problem+json"
HAL = "application/hal+json"
NOTES = "/acme/api/v4/contacts/notes"
VALID_NOTE: dict[str, Any] = {"note_type": "common", "params": {"text": "hello"}}

VALID_PARAMS: dict[str, dict[str, Any]] = {
    "common": {"text": "Hello"},
    "call_in": {
        "uniq": "8f52d38a-5fb3-406d-93a3-a4832dc28f8b",
        "duration": 60,
        "source": "Twilio",
        "phone": "+1415",
    },
    "call_out": {
        "uniq": "8f52d38a-5fb3-406d-93a3-a4832dc28f8c",
        "duration": 0,
        "source": "Twilio",
        "link": "https://example.com/rec.mp3",
        "phone": "+1415",
    },
    "service_message": {"service": "Unisender sync", "text": "Unsubscribed"},
    "extended_service_message": {"service": "Unisender sync", "text": "A long text"},
    "geolocation": {"text": "Here", "address": "1 Main St", "longitude": "-13", "latitude": "32"},
    "sms_in": {"text": "Hi", "phone": "+1415"},
    "sms_out": {"text": "Hi back", "phone": "+1415"},
    "attachment": {"file_uuid": "a1b2", "file_name": "image.png"},
}


@dataclass
class Kommo:
    http: httpx.AsyncClient
    auth: dict[str, str]
    client_id: str

    async def control(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.http.request(method, f"/_sandbox{path}", json=body)
        assert resp.status_code == status, resp.text
        return resp.json()

    async def contacts(self, n: int) -> list[int]:
        body = await self.control("POST", "/accounts/acme/contacts", [{"name": f"C{i}"} for i in range(n)])
        return [c["id"] for c in body["_embedded"]["contacts"]]

    async def notes(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = await self.control("GET", "/accounts/acme/notes")
        return listed


def bad_request(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "validation-errors": groups,
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Request validation failed",
    }


def assert_problem(resp: httpx.Response, status: int, body: dict[str, Any]) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json() == body


TOO_MANY = {
    "title": "Unprocessable Entity",
    "type": "https://httpstatus.es/422",
    "status": 422,
    "detail": "Limit of 250 per page",
}


@asynccontextmanager
async def kommo_sandbox() -> AsyncIterator[Kommo]:
    """A sandbox with account ``acme`` and a token for it; no rate limit unless a test sets one."""
    app = create_kommo_sandbox(KommoSandboxConfig(rate_limit_rps=None))
    async with (
        serve_in_background(app) as url,
        loopback_client(url, timeout=10) as http,
    ):
        assert (await http.post("/_sandbox/accounts", json={"subdomain": "acme"})).status_code == 201
        integ = (
            await http.post("/_sandbox/integrations", json={"redirect_uri": "https://x.example/cb"})
        ).json()
        tokens = (
            await http.post("/_sandbox/tokens", json={"client_id": integ["client_id"], "subdomain": "acme"})
        ).json()
        yield Kommo(http, {"Authorization": f"Bearer {tokens['access_token']}"}, integ["client_id"])
