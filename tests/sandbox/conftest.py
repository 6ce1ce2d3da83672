"""Fixtures of the sandbox tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from app.context import tls_context
from app.servers import serve_in_background
from sandbox.unisender import UnisenderSandboxConfig, create_unisender_sandbox
from tests.sandbox.unisender_activity import Sb
from tests.support.kommo_notes import Kommo, kommo_sandbox


@pytest.fixture
async def kommo() -> AsyncIterator[Kommo]:
    async with kommo_sandbox() as sandbox:
        yield sandbox


# A Unisender sandbox per test module (its campaign and export tests), with quick hook retries.
@pytest.fixture(scope="module")
async def sb() -> AsyncIterator[Sb]:
    app = create_unisender_sandbox(
        UnisenderSandboxConfig(hook_retry_interval_seconds=0.05, hook_max_retries=1)
    )
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), base_url=url, timeout=10) as http,
    ):
        yield Sb(url, app, http)


@pytest.fixture
async def key(sb: Sb) -> str:
    return str((await sb.control("POST", "/accounts", {"api_key": "c" + uuid.uuid4().hex}))["api_key"])
