"""The Unisender error tree, each class also filed under a shared category from ``app.connectors.errors``.

Unisender reports API errors with HTTP 200 and an envelope ``{"error": "<message>", "code": "<code>"}``;
``error_from_envelope`` turns that into an exception, ``error_from_status`` handles real HTTP failures.
"""

from __future__ import annotations

import html
import re

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

DEFAULT_RATE_LIMIT_RETRY_AFTER = 60.0

# Unisender's rate-limit window is undocumented; a minute is the documented budget unit (calls per minute).
RATE_LIMIT_CODES = frozenset({"api_call_limit_exceeded_for_api_key", "api_call_limit_exceeded_for_ip"})

# "Contact "x" not found" (exclude/unsubscribe/getContact), possibly behind an id prefix like "AB123 [...]".
_NOT_FOUND_RE = re.compile(r"\bcontact\b.*\bnot found\b", re.IGNORECASE | re.DOTALL)


class UnisenderError(ConnectorError):
    """Base of every Unisender failure. ``reason`` is Unisender's own words from its error envelope (none for
    a bare HTTP status), for people to read."""

    reason: str | None = None


class UnisenderTransientError(UnisenderError, TransientError):
    """``retry_later``, 5xx, timeouts, transport failures, unreadable responses: retry later."""


class UnisenderRateLimited(UnisenderTransientError, RateLimitedError):
    """``api_call_limit_exceeded_for_api_key`` / ``_for_ip``: back off ``retry_after`` seconds."""


class UnisenderAuthError(UnisenderError, AuthError):
    """``invalid_api_key``: the stored key is wrong or revoked."""


class UnisenderAccessDenied(UnisenderError, ForbiddenError):
    """``access_denied`` (API disabled, no rights) and ``not_enough_money`` (balance exhausted)."""


class UnisenderRequestError(UnisenderError, RequestError):
    """The call itself is invalid: ``invalid_arg``, ``unknown_method``, ``unspecified`` and unknown codes."""


class UnisenderNotFound(UnisenderError, NotFoundError):
    """The ``unspecified`` "Contact … not found" error of getContact, exclude and unsubscribe."""


class UnisenderHookParseError(UnisenderError, WebhookParseError):
    """A hook delivery body that is not JSON at all (or exceeds the size cap)."""


# Anything long enough to be a key or token: masked wherever Unisender's words are shown to people (an error
# text that quoted the key would otherwise echo a secret).
_SECRET_LIKE = re.compile(r"[A-Za-z0-9_\-]{24,}")


def masked(text: str, limit: int = 300) -> str:
    """``text`` for people: whitespace folded, key-like runs masked, shortened to ``limit``."""
    return _SECRET_LIKE.sub("***", " ".join(text.split()))[:limit]


def _clean_message(raw: object) -> str:
    # The message is HTML-encoded ("Contact &quot;x&quot; not found") and may be absent or not a string.
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    return html.unescape(text).strip()


def error_from_envelope(
    error: object,
    code: object,
    *,
    method: str,
    rate_limit_retry_after: float = DEFAULT_RATE_LIMIT_RETRY_AFTER,
) -> UnisenderError:
    """Map an error envelope (``error`` message, ``code``) to the matching exception (not raised)."""
    message = _clean_message(error)
    code_str = code.strip() if isinstance(code, str) and code.strip() else "unspecified"
    text = f"unisender {method}: {code_str}: {message}" if message else f"unisender {method}: {code_str}"
    exc = _from_code(code_str, message, text, rate_limit_retry_after)
    exc.reason = message or None
    return exc


def _from_code(code_str: str, message: str, text: str, rate_limit_retry_after: float) -> UnisenderError:
    if code_str == "retry_later":
        return UnisenderTransientError(text, status_code=200, code=code_str)
    if code_str in RATE_LIMIT_CODES:
        return UnisenderRateLimited(text, status_code=200, code=code_str, retry_after=rate_limit_retry_after)
    if code_str == "invalid_api_key":
        return UnisenderAuthError(text, status_code=200, code=code_str)
    if code_str in ("access_denied", "not_enough_money"):
        return UnisenderAccessDenied(text, status_code=200, code=code_str)
    if code_str == "unspecified" and _NOT_FOUND_RE.search(message):
        return UnisenderNotFound(text, status_code=200, code=code_str)
    # invalid_arg, unknown_method, unspecified, too_many_double_optins and codes we have never seen: retrying
    # the same call cannot help, and a permanent error surfaces the surprise instead of looping on it.
    return UnisenderRequestError(text, status_code=200, code=code_str)


def error_from_status(
    status_code: int,
    *,
    method: str,
    retry_after: float | None = None,
    rate_limit_retry_after: float = DEFAULT_RATE_LIMIT_RETRY_AFTER,
) -> UnisenderError:
    """Map a non-200 HTTP status without a readable error envelope to an exception (not raised)."""
    text = f"unisender {method}: HTTP {status_code}"
    if status_code == 429:
        return UnisenderRateLimited(
            text,
            status_code=status_code,
            code="http_429",
            retry_after=retry_after if retry_after is not None else rate_limit_retry_after,
        )
    if status_code >= 500 or status_code in (408, 425):
        return UnisenderTransientError(
            text, status_code=status_code, code=f"http_{status_code}", retry_after=retry_after
        )
    if status_code == 401:
        return UnisenderAuthError(text, status_code=status_code, code=f"http_{status_code}")
    if status_code == 403:
        return UnisenderAccessDenied(text, status_code=status_code, code=f"http_{status_code}")
    return UnisenderRequestError(text, status_code=status_code, code=f"http_{status_code}")
