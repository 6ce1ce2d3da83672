from __future__ import annotations

import json
import logging

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
