"""Unisender (classic marketing API) connector: client, result models (imports, campaigns, exports), errors and
hook handling."""

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
from app.connectors.unisender.reports import (
    CampaignCommonStats,
    CampaignInfo,
    CampaignStatus,
    DeliveryStat,
    ExportedContacts,
    VisitedLink,
    split_ids,
)

__all__ = [
    "MAX_IMPORT_ROWS",
    "CampaignCommonStats",
    "CampaignInfo",
    "CampaignStatus",
    "DeliveryStat",
    "ExportedContacts",
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
    "VisitedLink",
    "read_delivery",
    "split_ids",
    "verify_hook_auth",
]
