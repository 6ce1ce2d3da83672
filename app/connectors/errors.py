"""The shared shape of connector failures.

Each connector defines its own tree (``KommoError``, ``UnisenderError``…) whose classes also derive from one
of the categories here, so the worker can decide what to do without knowing which API failed::

    ConnectorError
     ├── TransientError          retry later (5xx, timeouts, transport errors)
     │    └── RateLimitedError   retry after ``retry_after`` seconds; pause the whole credential
     └── PermanentError          retrying the same call cannot help
          ├── AuthError          credentials invalid/expired/revoked: the account needs re-authorisation
          ├── ForbiddenError     blocked or no rights
          ├── NotFoundError
          └── RequestError       the request itself is invalid (validation)
               └── WebhookParseError   a webhook body the connector refuses to read
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error raised by a connector client."""

    retryable: bool = False

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code


class TransientError(ConnectorError):
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code)
        self.retry_after = retry_after


class RateLimitedError(TransientError):
    pass


class PermanentError(ConnectorError):
    retryable = False


class AuthError(PermanentError):
    pass


class ForbiddenError(PermanentError):
    pass


class NotFoundError(PermanentError):
    pass


class RequestError(PermanentError):
    pass


class WebhookParseError(RequestError):
    """A webhook body that is malformed or exceeds the connector's limits (answered 400, never 500)."""
