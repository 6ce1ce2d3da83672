"""``contactsync rotate-keys`` over the real database: every encrypted column moves to the first key, a run can
stop and resume, and a write by the running service during the rotation is kept."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import BigInteger, Column, MetaData, String, Table, select, text

from app.config import Settings
from app.context import ProcessContext
from app.db.base import Base, utcnow
from app.db.models import EspAccount, Integration, KommoToken
from app.db.schema import upgrade_async
from app.db.session import Database, create_engine
from app.security.crypto import Cipher, DecryptionError, EncryptedString, configure_encryption
from app.security.rotation import encrypted_columns, rotate_keys
from tests.conftest import raw_sql

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 7
# The secrets the seeded rows hold: (table, column) -> {account_id: plaintext}. Odd accounts have no webhook
# token (a NULL must be left alone).
ENCRYPTED = {
    ("integration", "client_secret"),
    ("integration", "webhook_token"),
    ("kommo_token", "access_token"),
    ("kommo_token", "refresh_token"),
    ("esp_account", "api_key"),
}


def expected_plaintexts() -> dict[tuple[str, str], dict[int, str]]:
    out: dict[tuple[str, str], dict[int, str]] = {}
    for table, column in ENCRYPTED:
        out[(table, column)] = {
            i: f"{column}-{i}" for i in range(1, ACCOUNTS + 1) if column != "webhook_token" or i % 2 == 0
        }
    return out


TOTAL = sum(len(v) for v in expected_plaintexts().values())


async def seed(ctx: ProcessContext | Database) -> None:
    """Rows written the way the service writes them, under the configured key (the old key, A)."""
    db = ctx if isinstance(ctx, Database) else ctx.db
    async with db.session_scope() as session:
        for i in range(1, ACCOUNTS + 1):
            session.add(
                Integration(
                    account_id=i,
                    subdomain=f"acme{i}",
                    client_id=f"cid{i}",
                    client_secret=f"client_secret-{i}",
                    redirect_uri="https://x/cb",
                    webhook_token_hash="0" * 64,
                    webhook_token=f"webhook_token-{i}" if i % 2 == 0 else None,
                )
            )
        await session.flush()
        for i in range(1, ACCOUNTS + 1):
            session.add(
                KommoToken(
                    account_id=i,
                    access_token=f"access_token-{i}",
                    refresh_token=f"refresh_token-{i}",
                    expires_at=utcnow(),
                )
            )
            session.add(EspAccount(account_id=i, api_key=f"api_key-{i}"))


async def raw_values(url: str) -> dict[tuple[str, str], dict[int, str]]:
    out: dict[tuple[str, str], dict[int, str]] = {}
    for table, column in ENCRYPTED:
        rows = await raw_sql(url, f"SELECT account_id, {column} AS v FROM {table} WHERE {column} IS NOT NULL")
        out[(table, column)] = {r["account_id"]: r["v"] for r in rows}
    return out


def readable_by(cipher: Cipher, raw: dict[tuple[str, str], dict[int, str]]) -> int:
    n = 0
    for values in raw.values():
        for value in values.values():
            try:
                cipher.decrypt(value)
            except DecryptionError:
                continue
            n += 1
    return n


@pytest.fixture
def old_key(secret_keys: str) -> bytes:
    return secret_keys.encode()  # the key the test settings (and so ``seed``) encrypt with


@pytest.fixture
def new_key() -> bytes:
    return Fernet.generate_key()


def test_every_encrypted_column_of_the_models_is_found() -> None:
    found = {(t.name, c.name) for t, cols in encrypted_columns(Base.metadata) for c in cols}
    assert found == ENCRYPTED


async def test_rotation_moves_everything_to_the_first_key_and_the_old_key_can_go(
    ctx: ProcessContext, clean_db: str, old_key: bytes, new_key: bytes
) -> None:
    await seed(ctx)
    lines: list[str] = []
    report = await rotate_keys(
        ctx.db, Cipher([new_key, old_key]), Base.metadata, batch_size=3, progress=lines.append
    )
    assert report.complete
    assert report.rotated == TOTAL
    assert report.unreadable == 0
    assert report.changed == 0
    assert "esp_account: 7 rows scanned, 7 values re-encrypted" in lines  # progress, batch by batch
    raw = await raw_values(clean_db)
    assert readable_by(Cipher([new_key]), raw) == TOTAL
    assert readable_by(Cipher([old_key]), raw) == 0

    # Settings with only the new key read every secret through the models.
    configure_encryption([new_key])
    async with ctx.db.session_scope() as session:
        integrations = (await session.execute(select(Integration))).scalars().all()
        tokens = (await session.execute(select(KommoToken))).scalars().all()
        esps = (await session.execute(select(EspAccount))).scalars().all()
    read = {
        ("integration", "client_secret"): {r.account_id: r.client_secret for r in integrations},
        ("integration", "webhook_token"): {
            r.account_id: r.webhook_token for r in integrations if r.webhook_token
        },
        ("kommo_token", "access_token"): {r.account_id: r.access_token for r in tokens},
        ("kommo_token", "refresh_token"): {r.account_id: r.refresh_token for r in tokens},
        ("esp_account", "api_key"): {r.account_id: r.api_key for r in esps},
    }
    assert read == expected_plaintexts()
    assert all(r.webhook_token is None for r in integrations if r.account_id % 2)

    again = await rotate_keys(ctx.db, Cipher([new_key, old_key]), Base.metadata)
    assert again.rotated == 0
    assert sum(c.current for c in again.columns) == TOTAL
    assert await raw_values(clean_db) == raw  # nothing rewritten


async def test_an_interrupted_run_resumes_with_only_the_rest(
    ctx: ProcessContext, clean_db: str, old_key: bytes, new_key: bytes
) -> None:
    await seed(ctx)
    cipher = Cipher([new_key, old_key])
    first = await rotate_keys(ctx.db, cipher, Base.metadata, batch_size=2, max_batches=3)
    assert not first.complete
    # integration first (dependency order): batches of 2 accounts, 3 batches = accounts 1-6, 2 columns.
    assert first.rotated == 6 + 3
    assert readable_by(Cipher([new_key]), await raw_values(clean_db)) == first.rotated

    dry = await rotate_keys(ctx.db, cipher, Base.metadata, dry_run=True)
    assert dry.rotated == TOTAL - first.rotated
    assert readable_by(Cipher([new_key]), await raw_values(clean_db)) == first.rotated  # nothing written

    rest = await rotate_keys(ctx.db, cipher, Base.metadata, batch_size=2)
    assert rest.complete
    assert rest.rotated == TOTAL - first.rotated
    assert readable_by(Cipher([new_key]), await raw_values(clean_db)) == TOTAL


async def test_a_value_written_by_the_service_during_rotation_is_kept(
    ctx: ProcessContext, clean_db: str, old_key: bytes, new_key: bytes
) -> None:
    await seed(ctx)
    cipher = Cipher([new_key, old_key])
    # The running service (already deployed with NEW,OLD) stores a new Unisender key for account 3 in a
    # transaction that is still open when the rotation reaches the row.
    writer = await asyncpg.connect(clean_db.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        tx = writer.transaction()
        await tx.start()
        await writer.execute(
            "UPDATE esp_account SET api_key = $1 WHERE account_id = 3", cipher.encrypt("api_key-NEW")
        )
        rotation = asyncio.create_task(rotate_keys(ctx.db, cipher, Base.metadata, batch_size=100))
        deadline = time.monotonic() + 15
        while True:
            waiting = await raw_sql(
                clean_db,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'",
            )
            if waiting[0]["n"] >= 1:
                break
            assert not rotation.done(), "rotation finished without waiting for the open write"
            assert time.monotonic() < deadline, "rotation never waited on the row the service is writing"
            await asyncio.sleep(0.02)
        await tx.commit()
    finally:
        await writer.close()
    report = await asyncio.wait_for(rotation, timeout=30)
    assert report.complete
    assert report.unreadable == 0
    stored = await raw_sql(clean_db, "SELECT api_key FROM esp_account WHERE account_id = 3")
    assert Cipher([new_key]).decrypt(stored[0]["api_key"]) == "api_key-NEW"
    assert readable_by(Cipher([new_key]), await raw_values(clean_db)) == TOTAL


async def test_a_new_encrypted_column_is_covered_without_naming_it(
    ctx: ProcessContext, clean_db: str, old_key: bytes, new_key: bytes
) -> None:
    # A table the rotation module has never heard of, with a two-column primary key.
    metadata = MetaData()
    probe = Table(
        "rotation_probe",
        metadata,
        Column("tenant", BigInteger, primary_key=True),
        Column("name", String(20), primary_key=True),
        Column("secret", EncryptedString()),
    )
    async with ctx.db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        async with ctx.db.session_scope() as session:
            await session.execute(
                probe.insert(),
                [{"tenant": t, "name": n, "secret": f"s-{t}-{n}"} for t in (1, 2) for n in ("a", "b", "c")],
            )
        report = await rotate_keys(ctx.db, Cipher([new_key, old_key]), metadata, batch_size=4)
        assert report.rotated == 6
        async with ctx.db.session_scope() as session:
            rows = (await session.execute(text("SELECT secret FROM rotation_probe"))).scalars().all()
        assert sorted(Cipher([new_key]).decrypt(v) for v in rows) == sorted(
            f"s-{t}-{n}" for t in (1, 2) for n in ("a", "b", "c")
        )
    finally:
        async with ctx.db.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)


async def test_unreadable_values_are_reported_and_left_alone(
    ctx: ProcessContext, clean_db: str, old_key: bytes, new_key: bytes
) -> None:
    await seed(ctx)
    foreign = Cipher([Fernet.generate_key()]).encrypt("lost")
    await raw_sql(clean_db, "UPDATE esp_account SET api_key = $1 WHERE account_id = 5", foreign)
    report = await rotate_keys(ctx.db, Cipher([new_key, old_key]), Base.metadata)
    esp = next(c for c in report.columns if c.table == "esp_account")
    assert esp.unreadable == ["5"]
    assert report.rotated == TOTAL - 1
    stored = await raw_sql(clean_db, "SELECT api_key FROM esp_account WHERE account_id = 5")
    assert stored[0]["api_key"] == foreign


async def test_without_a_database_url_the_command_rotates_the_embedded_database(
    tmp_path: Path, new_key: bytes
) -> None:
    """No CONTACTSYNC_DATABASE_URL: rotate-keys works on the database of `serve --embedded` in the state dir
    (its own PostgreSQL, started and stopped by the command)."""
    from app.localservers import embedded_servers

    state = tmp_path / "state"
    old = Fernet.generate_key()
    with embedded_servers(state) as servers:
        await upgrade_async(servers.database_url)
        db = Database(create_engine(servers.database_url))
        try:
            configure_encryption([old])
            await seed(db)
        finally:
            await db.dispose()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "CONTACTSYNC_STATE_DIR": str(state),
        "CONTACTSYNC_SECRET_KEYS": f"{new_key.decode()},{old.decode()}",
    }
    r = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "rotate-keys", "--batch-size", "4"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"rotate-keys: done: {TOTAL} values re-encrypted" in r.stdout
    with embedded_servers(state) as servers:
        db = Database(create_engine(servers.database_url))
        try:
            configure_encryption([new_key])
            async with db.session_scope() as session:
                keys = (
                    await session.execute(select(EspAccount.api_key).order_by(EspAccount.account_id))
                ).scalars()
                assert list(keys) == [f"api_key-{i}" for i in range(1, ACCOUNTS + 1)]
        finally:
            await db.dispose()


def _cli(settings: Settings, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert settings.database_url
    assert settings.redis_url
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CONTACTSYNC_ENV": "test",
        "CONTACTSYNC_DATABASE_URL": settings.database_url,
        "CONTACTSYNC_REDIS_URL": settings.redis_url,
        "CONTACTSYNC_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
        "CONTACTSYNC_SECRET_KEYS": keys,
    }
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "rotate-keys", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


async def test_the_command_rotates_then_the_new_key_alone_reads_everything(
    ctx: ProcessContext, settings: Settings, old_key: bytes, new_key: bytes
) -> None:
    await seed(ctx)
    both = f"{new_key.decode()},{old_key.decode()}"
    r = await asyncio.to_thread(_cli, settings, both, "--batch-size", "3")
    assert r.returncode == 0, r.stderr
    assert "rotate-keys: esp_account: 6 rows scanned, 6 values re-encrypted" in r.stdout
    assert f"rotate-keys: done: {TOTAL} values re-encrypted" in r.stdout
    assert new_key.decode() not in r.stdout + r.stderr
    assert old_key.decode() not in r.stdout + r.stderr

    # With only the new key, a dry run finds every value readable and current.
    r = await asyncio.to_thread(_cli, settings, new_key.decode(), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rotate-keys: dry run: 0 values to re-encrypt" in r.stdout
    assert "rotate-keys: esp_account.api_key: 0 to re-encrypt, 7 already under the first key" in r.stdout
    assert " 0 unreadable" in r.stdout
    assert "unreadable (primary keys" not in r.stdout

    # With only the old key, everything is unreadable: the command says so and fails.
    r = await asyncio.to_thread(_cli, settings, old_key.decode(), "--dry-run")
    assert r.returncode == 1
    assert f"{TOTAL} values cannot be decrypted with any configured key" in r.stdout
