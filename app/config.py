"""Service configuration: one ``Settings`` read from ``CONTACTSYNC_*`` environment variables."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.logging import register_secret
from app.security.strength import (
    GENERATE_KEY,
    admin_token_problem,
    secret_key_problems,
)

DEV_ADMIN_TOKEN = "dev-admin-token"
DEFAULT_STATE_DIR = Path(".contactsync")
_DOMAIN_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says which variable to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONTACTSYNC_", env_file=".env", extra="ignore")

    env: Environment = Field(Environment.DEVELOPMENT, description="development | test | production")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db; unset = the embedded "
        "PostgreSQL of `serve --embedded` (data in state_dir)",
    )
    redis_url: str | None = Field(
        None, description="redis://host:6379/0; unset = the embedded Redis of `serve --embedded`"
    )
    secret_keys: SecretStr | None = Field(
        None,
        description="Comma-separated Fernet keys for encryption at rest; the first encrypts, all decrypt",
    )
    admin_token: SecretStr = Field(
        SecretStr(DEV_ADMIN_TOKEN), description="Bearer token for operator endpoints"
    )
    public_url: str = Field(
        "http://127.0.0.1:8000", description="Where Kommo and Unisender reach this service"
    )
    kommo_base_url: str = Field(
        "https://{host}",
        description="Kommo API base, a template with {host}: the account's host from the OAuth redirect "
        "(acme.kommo.com, acme.amocrm.ru); tests point it at the sandbox, e.g. http://127.0.0.1:8001/{host}",
    )
    kommo_account_domains: str = Field(
        "kommo.com,amocrm.ru,amocrm.com",
        description="Comma-separated domains whose {subdomain}.{domain} hosts are accepted as Kommo accounts",
    )
    kommo_auth_url: str = Field("https://www.kommo.com/oauth", description="Kommo's OAuth consent page")
    unisender_base_url: str = Field("https://api.unisender.com", description="Unisender API base")
    log_format: Literal["console", "json"] | None = Field(
        None, description="console | json; default console in development, json otherwise"
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")

    # Tuning (defaults measured in docs/benchmarks.md; all optional).
    max_body_bytes: int = Field(1_048_576, description="Request body cap in bytes (413 above)")
    db_pool_size: int = Field(20, description="Database connections per process (kept open; no overflow)")
    kommo_rate_per_second: float = Field(7.0, description="Client-side budget per Kommo integration")
    unisender_calls_per_minute: float = Field(1200.0, description="Client-side budget per Unisender key")
    shared_budgets: bool = Field(
        True, description="Hold the Kommo and Unisender budgets in Redis, shared by every process"
    )
    budget_fallback_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a budget one process spends alone while Redis is unreachable (1/processes)",
    )
    oauth_exchanges_per_account: int = Field(
        5, ge=1, description="OAuth code exchanges per account per minute (per API process); 429 page above"
    )
    oauth_exchanges_per_minute: int = Field(
        60, ge=1, description="OAuth code exchanges per minute over all accounts (per API process)"
    )
    unsubscribe_tag: str = Field("unsubscribed", description="Kommo tag set on contacts who unsubscribed")
    unisender_extra_hook_events: str = Field(
        "",
        description="Comma-separated Unisender hook events registered besides the documented four, e.g. the "
        "data-change event (contact_data_change) once its name is confirmed for your account",
    )
    bounce_tag: str = Field("bounced", description="Kommo tag set on contacts whose address hard-bounced")
    complaint_tag: str = Field(
        "complained", description="Kommo tag set on contacts who marked a letter as spam"
    )
    state_dir: Path = Field(
        DEFAULT_STATE_DIR, description="Embedded mode's data directory (PostgreSQL data, dev key)"
    )
    worker_max_jobs: int = Field(50, description="Concurrent jobs per worker process")
    worker_poll_delay: float = Field(0.05, description="Seconds between queue polls")
    worker_job_timeout: int = Field(60, description="Seconds before a job is considered dead and re-run")
    worker_max_bulk_jobs: int = Field(
        25,
        ge=1,
        description="Bulk jobs (full syncs and re-derivations, activity notes, campaign totals, reconciles) a "
        "worker process runs at once, from their own queue, beside its WORKER_MAX_JOBS live jobs",
    )
    account_max_bulk_jobs: int = Field(
        2, ge=1, description="Bulk jobs of one account running at once, across every worker process"
    )
    worker_role: Literal["all", "live", "bulk"] = Field(
        "all",
        description="Which queues a worker process serves: all; live (every job but bulk jobs, and the cron "
        "jobs); bulk (bulk jobs only, WORKER_MAX_JOBS of them at once). A deployment that splits them needs "
        "at least one worker of each kind",
    )
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Port where `contactsync worker` serves /metrics (none: not served)"
    )

    @field_validator("kommo_base_url")
    @classmethod
    def _host_template(cls, value: str) -> str:
        # Without {host} every account would be called on one domain: amocrm.ru accounts on the wrong host.
        if "{host}" not in value:
            raise ValueError("must contain {host} (the account host, e.g. https://{host})")
        try:
            value.format(host="acme.kommo.com", subdomain="acme")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"only {{host}} and {{subdomain}} may appear in braces ({exc!r})") from None
        return value

    @property
    def extra_hook_events(self) -> tuple[str, ...]:
        return tuple(e.strip() for e in self.unisender_extra_hook_events.split(",") if e.strip())

    @field_validator("kommo_account_domains")
    @classmethod
    def _domains(cls, value: str) -> str:
        domains = [d.strip().lower() for d in value.split(",") if d.strip()]
        if not domains or not all(_DOMAIN_RE.fullmatch(d) for d in domains):
            raise ValueError("must be comma-separated domains such as kommo.com,amocrm.ru")
        return ",".join(domains)

    # Transport limits and deadlines: slow or hostile clients and a silent database must not hold the service.
    http_max_header_bytes: int = Field(
        16_384, gt=0, description="Request line + headers cap in bytes (431 and the connection closed above)"
    )
    http_header_timeout: float = Field(
        10.0, gt=0, description="Seconds for a request's line and headers to arrive (408 and closed after)"
    )
    http_body_timeout: float = Field(
        10.0, gt=0, description="Seconds for a request body to arrive (408 and closed after); see the rate"
    )
    http_body_min_rate: int = Field(
        32_768, gt=0, description="Bytes/s: a body still arriving at this rate gets more than the timeout"
    )
    http_keep_alive_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle keep-alive connection stays"
    )
    docs_enabled: bool | None = Field(
        None, description="Serve /docs, /redoc and /openapi.json; default: yes, except in production"
    )
    db_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds to open a database connection (TCP, TLS, authentication)"
    )
    db_statement_timeout: float = Field(
        10.0,
        ge=0,
        description="PostgreSQL statement_timeout in seconds; the client gives up 1 s later (0 = neither)",
    )
    db_pool_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a free pooled connection")
    webhook_deadline: float = Field(
        1.0, gt=0, description="Seconds of database work per webhook before it is answered 503 (retry)"
    )
    unisender_hook_deadline: float = Field(
        2.5,
        gt=0,
        description="The same for a Unisender hook delivery, which may carry thousands of events and "
        "whose sender waits 3 s (Kommo waits 2 s)",
    )
    console_session_hours: float = Field(
        8.0, gt=0, description="Hours an operator console sign-in lasts (the session is then refused)"
    )

    @model_validator(mode="after")
    def _enforce_production_secrets(self) -> Settings:
        if self.env is Environment.DEVELOPMENT:
            return self
        problems: list[str] = []
        if not self.database_url:
            problems.append("CONTACTSYNC_DATABASE_URL is required")
        if not self.redis_url:
            problems.append("CONTACTSYNC_REDIS_URL is required")
        # Outside development, published examples and guessable values are refused (app/security/strength.py).
        admin_problem = admin_token_problem(self.admin_token.get_secret_value())
        if admin_problem:
            problems.append(admin_problem)
        keys = self.secret_keys.get_secret_value() if self.secret_keys else ""
        if not keys.strip():
            problems.append(
                f"CONTACTSYNC_SECRET_KEYS must hold at least one Fernet key; generate: {GENERATE_KEY}"
            )
        else:
            try:
                problems.extend(secret_key_problems(parse_fernet_keys(keys)))
            except ValueError as exc:
                problems.append(f"CONTACTSYNC_SECRET_KEYS: {exc}")
        if problems:
            raise ConfigError(f"configuration invalid for env={self.env.value}: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _redact_own_secrets_in_logs(self) -> Settings:
        # An exception message or a stdlib log line may quote the admin token or a key verbatim; nothing
        # about the raw value marks it as secret, so the log redactor is told about it up front.
        register_secret(self.admin_token.get_secret_value(), pinned=True)
        if self.secret_keys is not None:
            for key in self.secret_keys.get_secret_value().split(","):
                register_secret(key.strip(), pinned=True)
        return self

    @property
    def effective_log_format(self) -> str:
        if self.log_format:
            return self.log_format
        return "console" if self.env is Environment.DEVELOPMENT else "json"

    @property
    def serve_docs(self) -> bool:
        if self.docs_enabled is not None:
            return self.docs_enabled
        return self.env is not Environment.PRODUCTION

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "CONTACTSYNC_DATABASE_URL is not set (`contactsync serve --embedded` runs its own PostgreSQL)"
            )
        return self.database_url

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError(
                "CONTACTSYNC_REDIS_URL is not set (`contactsync serve --embedded` runs its own Redis)"
            )
        return self.redis_url

    def encryption_keys(self) -> list[bytes]:
        """The Fernet keys; in development without keys, one generated once and kept in ``state_dir``."""
        if self.secret_keys is not None and self.secret_keys.get_secret_value().strip():
            return parse_fernet_keys(self.secret_keys.get_secret_value())
        if self.env is not Environment.DEVELOPMENT:
            raise ConfigError("CONTACTSYNC_SECRET_KEYS must hold at least one Fernet key")
        path = self.state_dir / "dev-secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Fernet.generate_key())
            path.chmod(0o600)
        return [path.read_bytes().strip()]

    @property
    def account_domains(self) -> tuple[str, ...]:
        return tuple(self.kommo_account_domains.split(","))

    def kommo_url_for(self, host: str) -> str:
        """The API base of the account on ``host`` (``acme.amocrm.ru``)."""
        return self.kommo_base_url.format(host=host, subdomain=host.split(".", 1)[0]).rstrip("/")


def parse_fernet_keys(raw: str) -> list[bytes]:
    keys = [k.strip().encode() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ValueError("no key given")
    for i, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"key #{i + 1} is not a valid Fernet key (32 url-safe base64 bytes)") from exc
    return keys


@lru_cache
def get_settings() -> Settings:
    return Settings()
