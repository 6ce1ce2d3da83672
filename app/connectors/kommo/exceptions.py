"""Kommo failures, each mapped onto a shared category of ``app.connectors.errors``.

::

    KommoError
     ├── KommoTransientError       5xx, timeouts, transport errors, unreadable success bodies
     │    └── KommoRateLimited     429 (``retry_after`` seconds)
     ├── KommoAuthError            401: the account needs re-authorisation
     │    └── KommoInvalidGrant    spent/revoked refresh token or bad code (token endpoint)
     ├── KommoForbidden            403: blocked (repeated 429s) or no rights
     │    └── KommoPaymentRequired 402: the account is unpaid
     ├── KommoNotFound             404
     ├── KommoRequestError         other 4xx (405, …)
     │    └── KommoValidationError 400 / 422, with the ``validation-errors`` list
     │         └── KommoBatchRejected   400 naming items of a batch write (``rejected_request_ids``)
     └── KommoWebhookParseError    a webhook body we refuse to read (raised by ``webhooks.py``)

An error raised by a batch write that the client split into several calls (``add_notes``,
``update_contacts``) carries ``progress`` (:class:`KommoBatchProgress`): what was saved, what was not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from app.connectors.errors import (
    AuthError,
    ConnectorError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    RequestError,
    TransientError,
    WebhookParseError,
)
from app.retry import parse_retry_after

# Used when a 429 carries neither a ``retry_after`` body field nor a ``Retry-After`` header. Kommo's budget is
# per second (7 rps), so a short pause clears it; the worker's own backoff covers anything longer.
DEFAULT_RETRY_AFTER = 1.0
_MAX_MESSAGE = 300
_REVOKED_HINT = "token has been revoked"


class KommoError(ConnectorError):
    """Base of every Kommo connector error."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        title: str | None = None,
        hint: str | None = None,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, **kwargs)
        self.title = title
        self.hint = hint
        self.request_id = request_id  # Kommo's X-Request-Id, not an item's request_id
        self.progress: KommoBatchProgress | None = None  # set by batch writes split into several calls


@dataclass(frozen=True, slots=True)
class KommoBatchProgress:
    """Where a batch write split into several calls stopped. Items are named by the ``request_id`` sent.

    ``completed``: the results of the calls that succeeded (saved). ``unsaved_request_ids``: items certainly not
    saved (the failed call was refused: 4xx or 429, less its rejected items; and every later call): safe to
    resend. ``uncertain_request_ids``: the items of a failed call whose outcome is unknown (timeout, transport
    error, 5xx, unreadable 2xx): resending may write them twice (harmless for a contact PATCH, a duplicate note).
    """

    completed: tuple[Any, ...] = ()
    unsaved_request_ids: tuple[str, ...] = ()
    uncertain_request_ids: tuple[str, ...] = ()


class KommoTransientError(KommoError, TransientError):
    """Retry later: 5xx, timeouts, transport failures."""


class KommoRateLimited(KommoTransientError, RateLimitedError):
    """429: back off ``retry_after`` seconds and pause the credential's limiter."""

    retry_after: float

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kwargs)


class KommoAuthError(KommoError, AuthError):
    """401: the access token is invalid, expired or revoked."""


class KommoInvalidGrant(KommoAuthError):
    """The refresh token is spent/revoked or the authorization code is bad: the user must re-authorise."""


class KommoForbidden(KommoError, ForbiddenError):
    """403: the integration or IP is blocked, or the user lacks rights."""


class KommoPaymentRequired(KommoForbidden):
    """402: the Kommo account is unpaid; nothing works until it is."""


class KommoNotFound(KommoError, NotFoundError):
    """404."""


class KommoRequestError(KommoError, RequestError):
    """The request itself is wrong (a 4xx without a more specific class)."""


@dataclass(frozen=True, slots=True)
class KommoValidationIssue:
    """One entry of a ``validation-errors`` list, flattened with its ``request_id``."""

    request_id: str | None
    code: str | None
    path: str | None
    detail: str | None


class KommoValidationError(KommoRequestError):
    """400/422 with the list of validation errors Kommo returned (possibly empty)."""

    def __init__(
        self, message: str, *, errors: list[KommoValidationIssue] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.errors: list[KommoValidationIssue] = list(errors or [])


class KommoBatchRejected(KommoValidationError):
    """400 ``validation-errors`` naming items of a batch write. Kommo's docs do not say whether the valid items
    of the call were saved (the sandbox saves none): drop or repair ``rejected_request_ids``, then resend
    ``progress.unsaved_request_ids``."""

    def __init__(self, message: str, *, rejected_request_ids: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.rejected_request_ids = rejected_request_ids


class KommoWebhookParseError(KommoError, WebhookParseError):
    """A webhook body that is malformed or exceeds our limits (answer 400, never 500)."""


# --- response mapping ---------------------------------------------------------------------------------------


def _as_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _validation_issues(body: dict[str, Any]) -> list[KommoValidationIssue]:
    issues: list[KommoValidationIssue] = []
    groups = body.get("validation-errors")
    if not isinstance(groups, list):
        return issues
    for group in groups:
        if not isinstance(group, dict):
            continue
        request_id = _as_str(group.get("request_id"))
        errors = group.get("errors")
        if not isinstance(errors, list):
            continue
        for item in errors:
            if isinstance(item, dict):
                issues.append(
                    KommoValidationIssue(
                        request_id=request_id,
                        code=_as_str(item.get("code")),
                        path=_as_str(item.get("path")),
                        detail=_as_str(item.get("detail")),
                    )
                )
    return issues


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def from_response(response: httpx.Response, *, token_endpoint: bool = False) -> KommoError:
    """Map a non-2xx Kommo response (problem+json or any other body) onto the error tree.

    ``token_endpoint`` marks ``/oauth2/access_token`` answers, where a 400 means a bad or spent grant.
    """
    status = response.status_code
    body = _json_body(response)
    title = hint = detail = None
    if body is not None:
        title = _as_str(body.get("title"))
        hint = _as_str(body.get("hint"))
        detail = _as_str(body.get("detail"))
    if detail or title:
        message = " — ".join(part for part in (title, detail, hint) if part)
    else:
        text = response.text.strip() if body is None else ""
        message = text or response.reason_phrase or f"HTTP {status}"
    message = f"Kommo HTTP {status}: {message[:_MAX_MESSAGE]}"
    common: dict[str, Any] = {
        "status_code": status,
        "title": title,
        "hint": hint,
        "request_id": response.headers.get("x-request-id"),
    }

    if status == 429:
        retry_after = parse_retry_after(body.get("retry_after")) if body is not None else None
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            retry_after = DEFAULT_RETRY_AFTER
        return KommoRateLimited(message, retry_after=retry_after, code="rate_limited", **common)
    if hint is not None and hint.strip().lower() == _REVOKED_HINT:
        return KommoInvalidGrant(message, code="invalid_grant", **common)
    if token_endpoint and status == 400:
        return KommoInvalidGrant(message, code="invalid_grant", **common)
    if status == 401:
        return KommoAuthError(message, code="unauthorized", **common)
    if status == 402:
        return KommoPaymentRequired(message, code="payment_required", **common)
    if status == 403:
        return KommoForbidden(message, code="forbidden", **common)
    if status == 404:
        return KommoNotFound(message, code="not_found", **common)
    if status in (400, 422):
        issues = _validation_issues(body) if body is not None else []
        return KommoValidationError(message, errors=issues, code="validation", **common)
    if status == 408 or status >= 500:
        return KommoTransientError(message, code="server_error", **common)
    if 400 <= status < 500:
        return KommoRequestError(message, code="bad_request", **common)
    # 1xx/3xx where a 2xx was expected (e.g. a redirect to www.kommo.com): a misconfigured base URL.
    return KommoError(message, code="unexpected_status", **common)
