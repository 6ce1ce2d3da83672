"""The accounts domain's errors (``AppError`` subclasses: each renders as ``{"error": code, "detail": …}``)."""

from __future__ import annotations

from typing import Literal

from app.errors import AppError, BadRequest, NotFound

MAX_ACCOUNT_ID = 2**63 - 1  # PostgreSQL's bigint: a larger id cannot name an account
MAX_ERROR_CHARS = 500


def short_error(message: object) -> str:
    """An error as stored in a ``last_error`` column (bounded)."""
    return str(message)[:MAX_ERROR_CHARS]


class UnknownAccount(NotFound):
    """No integration is registered for the account id (404 ``unknown_account``)."""

    code = "unknown_account"

    def __init__(self, account_id: int) -> None:
        super().__init__(f"Account {account_id} is not registered.")
        self.account_id = account_id


NotReadyCode = Literal[
    "kommo_not_connected", "needs_reauth", "integration_disabled", "unisender_not_connected"
]

_NOT_READY: dict[NotReadyCode, str] = {
    "kommo_not_connected": "Kommo is not connected for this account: the owner must open the auth link.",
    "needs_reauth": "Kommo access was lost (refresh token revoked or expired): the owner must re-authorise.",
    "integration_disabled": "The integration was uninstalled in Kommo.",
    "unisender_not_connected": "No Unisender API key is stored for this account.",
}


class AccountNotReady(AppError):
    """The account cannot be worked on now (``code``: kommo_not_connected, needs_reauth,
    integration_disabled, unisender_not_connected)."""

    code = "account_not_ready"
    status_code = 409

    @classmethod
    def because(cls, code: NotReadyCode, account_id: int) -> AccountNotReady:
        return cls(f"Account {account_id}: {_NOT_READY[code]}", code=code, extra={"account_id": account_id})


class OAuthCallbackError(BadRequest):
    """Kommo's redirect cannot complete the connection; the message is shown to the person who clicked."""


class OAuthThrottled(AppError):
    """Too many code exchanges for the account (or in total) within a minute; ``retry_after`` seconds."""

    code = "too_many_attempts"
    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "Too many connection attempts for this Kommo account. Wait a minute, then start again from the "
            "connect link."
        )
        self.retry_after = max(1, int(retry_after + 0.999))


class InvalidConnectLink(NotFound):
    """``/auth`` without a valid link: one answer for unknown accounts, bad and missing signatures alike."""

    code = "invalid_link"

    def __init__(self) -> None:
        super().__init__("This connect link is not valid. Ask the operator for the account's current link.")
