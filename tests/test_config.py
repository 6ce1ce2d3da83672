from __future__ import annotations

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
    "admin_token": SecretStr("a" * 32),
}


@pytest.mark.usefixtures("fresh_env")
class TestProductionSecrets:
    def test_valid_configuration_is_accepted(self) -> None:
        s = make(**GOOD, secret_keys=SecretStr(Fernet.generate_key().decode()))
        assert s.embedded is False
        assert s.effective_log_format == "json"

    @pytest.mark.parametrize("token", ["changethis", "dev-admin-token", "short"])
    def test_placeholder_admin_token_is_refused(self, token: str) -> None:
        with pytest.raises(ConfigError, match="CONTACTSYNC_ADMIN_TOKEN"):
            make(
                **{**GOOD, "admin_token": SecretStr(token)},
                secret_keys=SecretStr(Fernet.generate_key().decode()),
            )

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
        assert s.embedded
        assert s.resolved_database_url().startswith("sqlite+aiosqlite:///")
        first = s.encryption_keys()
        assert make(state_dir=state).encryption_keys() == first  # same key on restart
        assert (state / "dev-secret.key").stat().st_mode & 0o077 == 0
