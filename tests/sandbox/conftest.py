"""Fixtures of the sandbox tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.kommo_notes import Kommo, kommo_sandbox


@pytest.fixture
async def kommo() -> AsyncIterator[Kommo]:
    async with kommo_sandbox() as sandbox:
        yield sandbox
