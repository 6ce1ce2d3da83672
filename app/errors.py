"""One error tree: ``AppError`` and its subclasses, raised by services in every process. The API renders them
as ``{"error": code, "detail": message}`` (``app.api.errors``); this module imports no web framework, so the
worker and the command line load without one."""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Base of every expected failure; subclasses set ``code`` and ``status_code``."""

    code: ClassVar[str] = "internal_error"
    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.override_code = code

    @property
    def error_code(self) -> str:
        return self.override_code or self.code

    def body(self) -> dict[str, Any]:
        return {"error": self.error_code, "detail": self.message, **self.extra}


class BadRequest(AppError):
    code = "bad_request"
    status_code = 400


class Unauthorized(AppError):
    code = "unauthorized"
    status_code = 401


class Forbidden(AppError):
    code = "forbidden"
    status_code = 403


class NotFound(AppError):
    code = "not_found"
    status_code = 404


class Conflict(AppError):
    code = "conflict"
    status_code = 409


class Unprocessable(AppError):
    code = "validation_error"
    status_code = 422


class UpstreamError(AppError):
    """A third-party API failed while we served a synchronous request."""

    code = "upstream_error"
    status_code = 502


class ServiceUnavailable(AppError):
    code = "service_unavailable"
    status_code = 503
