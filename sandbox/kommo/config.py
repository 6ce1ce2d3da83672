"""Configuration of the Kommo sandbox. Every option can also be changed at run time via ``PATCH /_sandbox/config``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

_NULLABLE = ("rate_limit_rps", "block_after_429s", "note_text_max")  # integer options that may be None


@dataclass(slots=True)
class KommoSandboxConfig:
    # --- OAuth -------------------------------------------------------------------------------------------
    access_token_ttl: int = 86_400  # 24 h (Kommo's OAuth docs)
    refresh_token_ttl: int = 90 * 86_400  # revoked after 3 months unused (Kommo's OAuth docs)
    code_ttl: int = 20 * 60  # authorization code lives 20 min (Kommo's OAuth docs)
    # False (default): a refresh token is single-use; reusing a spent one answers 401 "Token has been revoked".
    # True: the documented grace model, R1 stays valid until R2 (its successor) is redeemed.
    refresh_grace: bool = False
    platform: str = (
        "2"  # `platform` on the redirect for Kommo accounts (undocumented; an amocrm.ru capture has "1")
    )
    base_domain: str = "kommo.com"  # where accounts live unless created with another `domain`
    widget_install_timeout: float = 3.0  # Kommo waits this long for the widget-install redirect (its docs)
    widget_token_ttl: int = 1800  # disposable widget JWT lifetime (30 min)
    # --- contacts API ------------------------------------------------------------------------------------
    default_limit: int = 50  # undocumented; a captured self link reads limit=50
    max_limit: int = 250
    over_limit: Literal["reject", "clamp"] = "reject"  # limit > 250: 422 "Limit of 250 per page", or clamp
    max_batch: int = 250  # items per POST/PATCH
    noop_patch_bumps: bool = True  # a PATCH that changes nothing still bumps updated_at and fires a webhook
    # Kommo stamps changes in whole seconds. False: an edit within the second of the contact's last one is
    # stamped a second later, so every version's stamp is distinct. True: it keeps that stamp (UNCONFIRMED
    # which Kommo does; two edits within one second then carry the same updated_at).
    same_second_stamps: bool = False
    note_text_max: int | None = None  # longest note ``params.text`` (undocumented: None = no limit)
    # --- webhooks ----------------------------------------------------------------------------------------
    webhook_timeout: float = 2.0  # Kommo's webhook docs: 2 s to answer
    webhook_retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)  # retries after a failed attempt
    webhook_disable_failures: int = 100  # disabled when > this many failures in 2 h and the last one failed
    webhook_disable_window: int = 7200
    batch_window_ms: int = 0  # 0: one body per change; > 0: changes within the window share one body
    duplicate_rate: float = 0.0  # probability that a body is delivered twice
    reorder: bool = False  # shuffle bodies (or, with batching, entries) collected within a window
    reorder_window_ms: int = 200  # the window used for `reorder` when batch_window_ms == 0
    webhook_seed: int = 0
    delivery_concurrency: int = 1  # bodies in flight per destination (1 keeps delivery order)
    delivery_log_max: int = 10_000
    account_block_first: bool = (
        True  # account[...] keys before contacts[...] (as captured) or after (as documented)
    )
    # --- limits ------------------------------------------------------------------------------------------
    rate_limit_rps: int | None = 7  # per integration, sliding 1-s window; None disables
    retry_after: int = 300  # `retry_after` in the 429 body (Kommo's status-code docs)
    retry_after_header: bool = False  # also send a Retry-After header (the docs do not say Kommo does)
    block_after_429s: int | None = None  # consecutive 429s that escalate to a 403 block; None = never
    block_seconds: int = 3600
    disable_hook_timeout: float = 3.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (from JSON) after checking names and types; raises ValueError."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown config option {name!r}")
            current = getattr(self, name)
            if name == "webhook_retry_delays":
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value
                ):
                    raise ValueError("webhook_retry_delays must be a list of non-negative numbers")
                value = tuple(float(v) for v in value)
            elif name == "over_limit":
                if value not in ("reject", "clamp"):
                    raise ValueError("over_limit must be 'reject' or 'clamp'")
            elif value is None:
                if name not in _NULLABLE:
                    raise ValueError(f"{name} cannot be null")
            elif isinstance(current, bool) or isinstance(value, bool):
                if not (isinstance(current, bool) and isinstance(value, bool)):
                    raise ValueError(f"{name} must be a boolean")
            elif isinstance(current, float) or name in (
                "duplicate_rate",
                "webhook_timeout",
                "widget_install_timeout",
            ):
                if not isinstance(value, int | float):
                    raise ValueError(f"{name} must be a number")
                value = float(value)
            elif isinstance(current, int) or name in _NULLABLE:
                if not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer")
            elif isinstance(current, str) and not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
