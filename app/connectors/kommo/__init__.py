"""Kommo (amoCRM) API v4 connector: REST client, OAuth, webhook parser and the error tree."""

from app.connectors.kommo.client import KommoClient
from app.connectors.kommo.exceptions import (
    KommoAuthError,
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
from app.connectors.kommo.oauth import (
    KommoOAuth,
    disable_signature,
    subdomain_from_referer,
    verify_disable_signature,
)
from app.connectors.kommo.schemas import KommoAccount, KommoContact, KommoWebhook
from app.connectors.kommo.webhooks import parse_webhook

__all__ = [
    "KommoAccount",
    "KommoAuthError",
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
    "disable_signature",
    "from_response",
    "parse_webhook",
    "subdomain_from_referer",
    "verify_disable_signature",
]
