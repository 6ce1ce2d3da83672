from __future__ import annotations

import base64
import secrets
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from app.config import ConfigError, Environment, Settings


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[arg-type]


GOOD = {
    "env": Environment.PRODUCTION,
    "database_url": "postgresql+asyncpg://u@db/x",
    "redis_url": "redis://r:6379/0",
    "admin_token": SecretStr(secrets.token_urlsafe(32)),
}


def key_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.usefixtures("fresh_env")
class TestProductionSecrets:
    def test_valid_configuration_is_accepted(self) -> None:
        s = make(**GOOD, secret_keys=SecretStr(Fernet.generate_key().decode()))
        assert s.require_database_url() == GOOD["database_url"]
        assert s.require_redis_url() == GOOD["redis_url"]
        assert s.effective_log_format == "json"

    @pytest.mark.parametrize("token", ["changethis", "dev-admin-token", "short"])
    def test_placeholder_admin_token_is_refused(self, token: str) -> None:
        with pytest.raises(ConfigError, match="CONTACTSYNC_ADMIN_TOKEN"):
            make(
                **{**GOOD, "admin_token": SecretStr(token)},
                secret_keys=SecretStr(Fernet.generate_key().decode()),
            )

    @pytest.mark.parametrize(
        "token",
        [
            "a" * 16,
            "a" * 64,
            "abababababababababababab",
            "passwordpassword",
            "0123456789abcde",  # 15 characters
            "abcdabcdabcdabcdabcd",  # 4 distinct characters
            "qwertyuiopasdf",  # one class, too short
            "compose-local-admin-token-replace-me",
            "my-admin-token-CHANGEME-2026",
        ],
    )
    def test_low_entropy_or_published_admin_token_is_refused_naming_the_rule(self, token: str) -> None:
        with pytest.raises(ConfigError) as info:
            make(
                **{**GOOD, "admin_token": SecretStr(token)},
                secret_keys=SecretStr(Fernet.generate_key().decode()),
            )
        message = str(info.value)
        assert "CONTACTSYNC_ADMIN_TOKEN" in message
        assert "secrets.token_urlsafe" in message  # says how to make a good one
        assert token not in message

    def test_the_entropy_rule_is_stated_in_the_message(self) -> None:
        with pytest.raises(
            ConfigError, match=r"8 distinct characters and 64 bits of estimated entropy \(length × log2"
        ):
            make(
                **{**GOOD, "admin_token": SecretStr("a" * 40)},
                secret_keys=SecretStr(Fernet.generate_key().decode()),
            )

    @pytest.mark.parametrize(
        "generate",
        [lambda: secrets.token_urlsafe(12), lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(16)],
    )
    def test_generated_admin_tokens_are_accepted(self, generate: Callable[[], str]) -> None:
        for _ in range(300):
            make(
                **{**GOOD, "admin_token": SecretStr(generate())},
                secret_keys=SecretStr(Fernet.generate_key().decode()),
            )

    @pytest.mark.parametrize(
        ("raw", "why"),
        [
            (b"\x00" * 32, "not random"),
            (b"A" * 32, "not random"),
            (bytes(range(8)) * 4, "not random"),
            (base64.urlsafe_b64decode("8Ty2sUo0JYbqkVbUGDN1ObhZLQdQXXqH3qbEGjDD8rE="), "published example"),
        ],
        ids=["zero-bytes", "one-letter", "repeating-pattern", "compose-fallback"],
    )
    def test_low_entropy_or_published_fernet_key_is_refused_naming_the_key(
        self, raw: bytes, why: str
    ) -> None:
        good = Fernet.generate_key().decode()
        with pytest.raises(ConfigError) as info:
            make(**GOOD, secret_keys=SecretStr(f"{good},{key_of(raw)}"))
        message = str(info.value)
        assert "CONTACTSYNC_SECRET_KEYS: key #2" in message
        assert why in message
        assert key_of(raw) not in message
        assert "key #1" not in message

    def test_development_accepts_the_trial_values(self) -> None:
        s = make(
            env=Environment.DEVELOPMENT,
            admin_token=SecretStr("compose-local-admin-token-replace-me"),
            secret_keys=SecretStr(key_of(b"\x00" * 32)),
        )
        assert s.admin_token.get_secret_value() == "compose-local-admin-token-replace-me"

    def test_missing_secret_keys_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="CONTACTSYNC_SECRET_KEYS"):
            make(**GOOD)

    def test_malformed_key_is_named(self) -> None:
        good = Fernet.generate_key().decode()
        with pytest.raises(ConfigError, match="key #2"):
            make(**GOOD, secret_keys=SecretStr(f"{good},not-a-key"))

    def test_missing_urls_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="DATABASE_URL is required"):
            make(**{**GOOD, "database_url": None}, secret_keys=SecretStr(Fernet.generate_key().decode()))

    def test_error_message_never_echoes_the_secret(self) -> None:
        with pytest.raises(ConfigError) as info:
            make(**GOOD, secret_keys=SecretStr("super-secret-value-123"))
        assert "super-secret-value-123" not in str(info.value)


@pytest.mark.usefixtures("fresh_env")
class TestEnvironment:
    def test_reads_prefixed_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CONTACTSYNC_KOMMO_BASE_URL", "http://127.0.0.1:9/{host}")
        monkeypatch.setenv("CONTACTSYNC_KOMMO_ACCOUNT_DOMAINS", " Kommo.com, amocrm.ru ")
        monkeypatch.setenv("CONTACTSYNC_LOG_LEVEL", "DEBUG")
        s = make()
        assert s.kommo_url_for("acme.amocrm.ru") == "http://127.0.0.1:9/acme.amocrm.ru"
        assert s.account_domains == ("kommo.com", "amocrm.ru")
        assert s.log_level == "DEBUG"

    def test_kommo_hosts_default_to_the_account_host(self) -> None:
        s = make()
        assert s.kommo_url_for("etesttask.amocrm.ru") == "https://etesttask.amocrm.ru"
        assert s.account_domains == ("kommo.com", "amocrm.ru", "amocrm.com")
        assert make(kommo_base_url="http://sim/{subdomain}/{host}/").kommo_url_for("a.kommo.com") == (
            "http://sim/a/a.kommo.com"
        )

    @pytest.mark.parametrize(
        ("template", "message"),
        [
            # Without {host}, every account would be called on one domain (amocrm.ru ones on the wrong host).
            ("https://{subdomain}.kommo.com", "must contain {host}"),
            ("https://{host}/{account}", "only {host} and {subdomain}"),
        ],
    )
    def test_kommo_base_url_must_name_the_host(self, template: str, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            make(kommo_base_url=template)

    @pytest.mark.parametrize("domains", ["", " , ", "kommo", "kommo.com,https://x.io", "*.kommo.com"])
    def test_account_domains_must_be_domains(self, domains: str) -> None:
        with pytest.raises(ValidationError, match="comma-separated domains"):
            make(kommo_account_domains=domains)

    def test_development_defaults_are_embedded_with_a_persistent_dev_key(self, tmp_path: object) -> None:
        from pathlib import Path

        state = Path(str(tmp_path)) / "st"
        s = make(state_dir=state)
        # No URLs: only `serve --embedded`/`demo` (which fill them with their own servers') can run.
        with pytest.raises(ConfigError, match="serve --embedded"):
            s.require_database_url()
        with pytest.raises(ConfigError, match="serve --embedded"):
            s.require_redis_url()
        first = s.encryption_keys()
        assert make(state_dir=state).encryption_keys() == first  # same key on restart
        assert (state / "dev-secret.key").stat().st_mode & 0o077 == 0
