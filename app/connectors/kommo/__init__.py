"""Kommo (amoCRM) API v4 connector: REST client, OAuth, webhook parser and the error tree."""

from app.connectors.kommo.client import KommoClient
from app.connectors.kommo.exceptions import (
    KommoAuthError,
    KommoBatchProgress,
    KommoBatchRejected,
    KommoError,
    KommoForbidden,
    KommoInvalidGrant,
    KommoNotFound,
    KommoPaymentRequired,
    KommoRateLimited,
    KommoRequestError,
    KommoTransientError,
    KommoValidationError,
    KommoValidationIssue,
    KommoWebhookParseError,
    from_response,
)
from app.connectors.kommo.hosts import (
    KOMMO_DOMAINS,
    AccountHost,
    host_of_link,
    parse_account_host,
    split_host,
)
from app.connectors.kommo.oauth import (
    KommoOAuth,
    authorize_url,
    disable_signature,
    verify_disable_signature,
)
from app.connectors.kommo.schemas import KommoAccount, KommoContact, KommoWebhook
from app.connectors.kommo.webhooks import parse_webhook

__all__ = [
    "KOMMO_DOMAINS",
    "AccountHost",
    "KommoAccount",
    "KommoAuthError",
    "KommoBatchProgress",
    "KommoBatchRejected",
    "KommoClient",
    "KommoContact",
    "KommoError",
    "KommoForbidden",
    "KommoInvalidGrant",
    "KommoNotFound",
    "KommoOAuth",
    "KommoPaymentRequired",
    "KommoRateLimited",
    "KommoRequestError",
    "KommoTransientError",
    "KommoValidationError",
    "KommoValidationIssue",
    "KommoWebhook",
    "KommoWebhookParseError",
    "authorize_url",
    "disable_signature",
    "from_response",
    "host_of_link",
    "parse_account_host",
    "parse_webhook",
    "split_host",
    "verify_disable_signature",
]
