"""Embedded mode: no DATABASE_URL/REDIS_URL, SQLite file + in-process Redis, API and worker in one process."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.main import create_app
from app.serving import serve_in_background


@pytest.mark.usefixtures("fresh_env")
async def test_embedded_app_migrates_sqlite_and_is_ready(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", log_format="json", _env_file=None)  # type: ignore[call-arg]
    assert settings.embedded
    async with serve_in_background(create_app(settings)) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/readyz")
    assert r.status_code == 200, r.text
    assert (tmp_path / "state" / "contactsync.db").exists()
