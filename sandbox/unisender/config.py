"""Settings of the Unisender sandbox; every behaviour Unisender's docs leave open that was cheap to make
switchable is here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _default_log_codes() -> dict[str, str]:
    # Unisender's docs do not list the per-row importContacts log codes: these are the simulator's placeholders.
    return {
        "invalid_email": "invalid_email",
        "invalid_phone": "invalid_phone",
        "role_address": "role_address",
        "status_change_denied": "status_change_denied",
        "duplicate": "duplicate",
        "invalid_value": "invalid_value",
        "invalid_list": "invalid_list",
        "too_many_tags": "too_many_tags",
        "owned_by_different": "owned_by_different_subscribers",
        "invalid_field_value": "invalid_field_value",
    }


def _default_method_limits() -> dict[str, int]:
    # Per-method budgets from Unisender's method pages (per api_key, same window as the general limit).
    return {"subscribe": 300, "async/exportContacts": 20, "sendEmail": 60}


@dataclass(kw_only=True)
class UnisenderSandboxConfig:
    """Knobs of the simulator; the defaults follow Unisender's docs, or our choice where the docs are silent."""

    # api_key -> login, created at start-up and after every reset.
    accounts: dict[str, str] = field(default_factory=dict)
    # Rate limits: sliding window of `rate_window_seconds`; None disables a limit.
    calls_per_minute: int | None = 1200
    ip_calls_per_minute: int | None = None
    method_limits: dict[str, int] = field(default_factory=_default_method_limits)
    rate_window_seconds: float = 60.0
    # importContacts
    max_import_rows: int = 500
    max_import_user_fields: int = 50
    max_tags: int = 10
    reject_role_addresses: bool = True
    role_local_parts: frozenset[str] = frozenset({"info", "sales", "no-reply", "all"})
    log_codes: dict[str, str] = field(default_factory=_default_log_codes)
    # Simulator-specific strict mode: Unisender's docs say a field's type only drives its web UI and every
    # value is stored as text, so the real API most likely stores anything. On (the default), a user-field
    # value that does not fit its field's type (number: integer or decimal with "."; date: DD.MM.YYYY,
    # DD-MM-YYYY, YYYY.MM.DD, YYYY-MM-DD; bool: 1/0/yes/no/да/нет; string: one line; text: anything) skips
    # the row with an "invalid_field_value" log entry, so a client that writes values Unisender's UI and
    # segments cannot read is caught in tests. An empty cell always passes: it clears the field.
    validate_field_values: bool = True
    # The docs say integer; a public Go client run against the live API decodes a string ("index":"2").
    log_index_as_string: bool = True
    # Statuses an existing address may be moved away from by importContacts (Unisender's docs: only from
    # active or inactive).
    mutable_statuses: frozenset[str] = frozenset({"active", "inactive"})
    # A refused status change is logged; by default the rest of the row still applies (a warning). True skips
    # the whole row instead (counted in "invalid"), for clients that read every log entry as a rejection.
    status_change_denied_skips_row: bool = False
    # Method names are matched exactly (camelCase); the docs do not say whether case matters.
    method_names_case_sensitive: bool = True
    # createField: Latin letters, digits, '_' (some doc versions also allow '-').
    field_name_allow_hyphen: bool = False
    reject_system_field_names: bool = True
    # subscribe with double_optin=0/4 needs a confirmation letter; sandbox lists have none by default,
    # so the real "These list ids=... has no confirmation letters" error is returned.
    lists_have_confirmation_letters: bool = False
    # Hooks: 3 s answer deadline; real retries are every 10 min for 24 h.
    hook_timeout_seconds: float = 3.0
    hook_retry_interval_seconds: float = 600.0
    hook_max_retries: int = 144
    # Post hook bodies without "auth" (a receiver must refuse them once it knows the key).
    hook_unsigned: bool = False
    # Whether unsubscribes made through the API (unsubscribe, importContacts) are also notified.
    notify_api_unsubscribes: bool = True
    # Async tasks (async/exportContacts, async/getCampaignDeliveryStats): seconds from creation until the
    # task is "completed" (before: "new" until the first poll, then "processing"); whether notify_url is
    # required (unisender.com's EN page says so, Selzy's does not); whether the file is served gzipped
    # (Unisender's export file format is undocumented; one public client checks for gzip).
    task_seconds: float = 0.0
    export_requires_notify_url: bool = False
    export_gzip: bool = False
    # Campaigns: getCampaigns' largest page (unisender.com: 100; Selzy's copy says 10 000).
    max_campaigns_page: int = 100
    # Faults: how long a "hang" lasts (> the real 30 s deadline by default) and whether the call is
    # still applied after the hang (the ambiguous-timeout case a client must survive).
    hang_seconds: float = 35.0
    hang_applies: bool = True
    clock: Callable[[], datetime] = _utcnow
