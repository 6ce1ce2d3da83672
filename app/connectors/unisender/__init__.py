"""Unisender (classic marketing API) connector: client, result models, errors and hook handling."""

from app.connectors.unisender.client import MAX_IMPORT_ROWS, UnisenderClient
from app.connectors.unisender.exceptions import (
    UnisenderAccessDenied,
    UnisenderAuthError,
    UnisenderError,
    UnisenderHookParseError,
    UnisenderNotFound,
    UnisenderRateLimited,
    UnisenderRequestError,
    UnisenderTransientError,
)
from app.connectors.unisender.hooks import HookDelivery, HookEvent, read_delivery, verify_hook_auth

__all__ = [
    "MAX_IMPORT_ROWS",
    "HookDelivery",
    "HookEvent",
    "UnisenderAccessDenied",
    "UnisenderAuthError",
    "UnisenderClient",
    "UnisenderError",
    "UnisenderHookParseError",
    "UnisenderNotFound",
    "UnisenderRateLimited",
    "UnisenderRequestError",
    "UnisenderTransientError",
    "read_delivery",
    "verify_hook_auth",
]
