from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import pytest
import structlog

from app.logging import REDACTED, configure_logging, redact_secrets, redact_text, register_secret


class TestRedaction:
    @pytest.mark.parametrize(
        "key",
        [
            "access_token",
            "refresh_token",
            "client_secret",
            "api_key",
            "password",
            "Authorization",
            "secret_keys",
        ],
    )
    def test_secret_named_keys_are_masked(self, key: str) -> None:
        out = redact_secrets(None, "info", {"event": "x", key: "value-123456"})
        assert out[key] == REDACTED

    def test_ordinary_keys_are_kept(self) -> None:
        out = redact_secrets(
            None, "info", {"event": "x", "account_id": 5, "email_count": 3, "token_expires_at": "t"}
        )
        assert out == {"event": "x", "account_id": 5, "email_count": 3, "token_expires_at": "t"}

    @pytest.mark.parametrize(
        ("text", "leak"),
        [
            ("GET /x?api_key=abcdef123456&format=json", "abcdef123456"),
            ("Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.sig", "eyJhbGciOi"),
            (
                "token eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiIxMjMifQ.abc123 expired",
                "eyJ0eXAiOiJKV1Qi",
            ),
            ("refresh with def50200aabbccddeeff00112233445566778899 failed", "def50200aabbcc"),
            ("body client_secret=hunter22&x=1", "hunter22"),
        ],
    )
    def test_secret_looking_values_in_text_are_masked(self, text: str, leak: str) -> None:
        assert leak not in redact_text(text)

    def test_registered_secrets_are_masked_anywhere(self) -> None:
        register_secret("plain-looking-key-9876")
        out = redact_secrets(
            None,
            "info",
            {"event": "call failed for plain-looking-key-9876", "detail": ["x plain-looking-key-9876"]},
        )
        assert "plain-looking-key-9876" not in json.dumps(out)

    def test_nested_structures(self) -> None:
        out = redact_secrets(None, "info", {"event": "x", "payload": {"nested": {"api_key": "k" * 10}}})
        assert out["payload"]["nested"]["api_key"] == REDACTED


def test_json_output_is_redacted_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt="json", level="INFO", force=True)
    structlog.get_logger("t").info("kommo.refreshed", refresh_token="def50200" + "ab" * 20, account_id=1)
    stdlib = logging.getLogger("contactsync.test.stdlib")
    stdlib.setLevel(logging.INFO)
    stdlib.info("stdlib line with api_key=zzzzzzzzzz")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 2, err
    first = json.loads(err[-2])
    assert first["event"] == "kommo.refreshed"
    assert first["refresh_token"] == REDACTED
    assert first["account_id"] == 1
    assert "zzzzzzzzzz" not in err[-1]


# --- exceptions: tracebacks must never carry secrets (no locals; text redacted in every renderer) ----------


@pytest.fixture
def secrets_in_play() -> dict[str, str]:
    """The secrets a real process holds: admin token (from Settings), a ciphertext, a Kommo access token and
    a Unisender key as the service gets them (through an ``EncryptedString`` column)."""
    from cryptography.fernet import Fernet
    from pydantic import SecretStr

    from app.config import Environment, Settings
    from app.security.crypto import Cipher, EncryptedString, configure_encryption

    key = Fernet.generate_key()
    admin = secrets.token_urlsafe(24)
    Settings(
        env=Environment.TEST,
        database_url="postgresql+asyncpg://u@db/x",
        redis_url="redis://r:6379/0",
        admin_token=SecretStr(admin),
        secret_keys=SecretStr(key.decode()),
        _env_file=None,  # type: ignore[call-arg]
    )
    configure_encryption([key])
    unisender_key = secrets.token_hex(16)
    column = EncryptedString()
    stored = column.process_bind_param(unisender_key, postgresql_dialect())
    assert stored is not None
    assert column.process_result_value(stored, postgresql_dialect()) == unisender_key
    return {
        "admin": admin,
        "ciphertext": Cipher([key]).encrypt("anything"),
        "access": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9."
        + secrets.token_urlsafe(40)
        + "."
        + secrets.token_urlsafe(30),
        "unisender": unisender_key,
    }


def postgresql_dialect() -> Any:
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


def _fail_with_secrets_in_frame(found: dict[str, str]) -> None:
    admin_token = found["admin"]  # noqa: F841 - a local the traceback must not show
    ciphertext = found["ciphertext"]  # noqa: F841
    access_token = found["access"]  # noqa: F841
    unisender_key = found["unisender"]
    raise RuntimeError(
        f"upstream refused key {unisender_key} with admin {found['admin']} "
        f"for {found['access']} stored as {found['ciphertext']}"
    )


def _log_failures(found: dict[str, str]) -> None:
    caught: RuntimeError | None = None
    try:
        _fail_with_secrets_in_frame(found)
    except RuntimeError as exc:
        caught = exc
        structlog.get_logger("t").exception("job.failed")
        stdlib = logging.getLogger("uvicorn.error")
        stdlib.setLevel(logging.INFO)
        stdlib.exception("Exception in ASGI application")
        logging.getLogger("sqlalchemy.pool").error("pool error", exc_info=True)
    # Outside the except block, as a task's stored exception is logged: the traceback comes from the object.
    structlog.get_logger("t").error("request.unhandled_error", exc_info=caught)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_tracebacks_show_no_locals_and_no_secrets(
    fmt: str, secrets_in_play: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(fmt=fmt, level="INFO", force=True)
    try:
        _log_failures(secrets_in_play)
    finally:
        configure_logging(fmt="json", level="INFO", force=True)
    err = capsys.readouterr().err
    # All four log calls rendered their traceback (the frame that raised is named in each)…
    assert err.count("_fail_with_secrets_in_frame") >= 4, err
    assert err.count("RuntimeError") >= 4, err
    # …with no secret, whether it sat in a local or in the exception's message.
    leaked = [name for name, value in secrets_in_play.items() if value in err]
    assert not leaked, f"{leaked} leaked in {fmt} output:\n{err}"
    assert "admin_token =" not in err  # no table of locals
    assert "admin_token=" not in err
    assert REDACTED in err


def test_configuration_secrets_outlive_the_runtime_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.logging as app_logging

    monkeypatch.setattr(app_logging, "_MAX_KNOWN", 3)
    admin = secrets.token_urlsafe(24)
    register_secret(admin, pinned=True)
    for _ in range(10):  # many tokens read later empty the bounded cache several times
        register_secret(secrets.token_hex(16))
    assert admin not in redact_text(f"compare failed for {admin}")


def test_a_secret_inside_a_longer_one_does_not_unmask_the_rest() -> None:
    inner = secrets.token_hex(8)
    outer = f"{secrets.token_hex(8)}{inner}{secrets.token_hex(8)}"
    register_secret(inner)
    register_secret(outer)
    assert redact_text(f"key {outer} refused") == f"key {REDACTED} refused"
