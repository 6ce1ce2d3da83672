"""How the API answers errors: ``AppError`` subclasses, validation failures, HTTP errors and dependency
outages all render as ``{"error": code, "detail": message}``."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db.session import is_timeout
from app.errors import AppError

log = structlog.get_logger(__name__)


class BodyRefused(StarletteHTTPException):
    """The request body broke a transport limit (413 too large, 408 too slow), raised from inside ``receive``.

    An ``HTTPException`` because FastAPI turns any other exception raised while it reads a body into a 400;
    this one it lets through to the handler below, which renders the envelope.
    """

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(status_code, detail)
        self.code = code


class ErrorBody(BaseModel):
    """The one error shape, as documented in the OpenAPI document (``fields``, ``account_id``… may follow)."""

    model_config = ConfigDict(extra="allow")
    error: str = Field(description="Machine-readable code, e.g. validation_error, unknown_account")
    detail: str = Field(description="Human-readable message")


# Documented on every route (the API router applies them): without them the document promises FastAPI's own
# 422 body, which the validation handler above never sends, and no other 4xx at all.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorBody,
        "description": "Refused (bad input, credentials, unknown id); nothing changed",
    },
    503: {
        "model": ErrorBody,
        "description": "A dependency (database) is unavailable; retry after Retry-After",
    },
}


def error_response(status_code: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status_code)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

RETRY_AFTER_SECONDS = "5"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return render_app_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            fields.append({"field": loc, "message": err.get("msg", "invalid")})
        summary = "; ".join(f"{f['field'] or 'body'}: {f['message']}" for f in fields[:5])
        return error_response(422, "validation_error", f"Invalid request: {summary}", fields=fields)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return render_http_exception(exc)

    async def _any(request: Request, exc: Exception) -> JSONResponse:
        return render_exception(exc)

    for exc_type in (*_UNAVAILABLE, sa_exc.DBAPIError, Exception):
        app.add_exception_handler(exc_type, _any)


# The database (or another dependency) is unreachable.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    ConnectionError,
    OSError,
)


def render_app_error(exc: AppError) -> JSONResponse:
    if exc.status_code >= 500:
        log.warning("request.failed", error=exc.error_code, detail=exc.message)
    response = JSONResponse(exc.body(), status_code=exc.status_code)
    if exc.status_code == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def render_http_exception(exc: StarletteHTTPException) -> JSONResponse:
    code = exc.code if isinstance(exc, BodyRefused) else _HTTP_CODES.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def _unavailable(detail: str) -> JSONResponse:
    # A 503 tells Kommo to retry the delivery later, and nothing was acknowledged, so nothing is lost.
    response = error_response(503, "service_unavailable", detail)
    response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def render_exception(exc: Exception) -> JSONResponse:
    """The envelope for any exception, as the app's handlers send it (also used by paths served before the
    router, such as the Kommo webhook fast path)."""
    if isinstance(exc, AppError):
        return render_app_error(exc)
    if isinstance(exc, StarletteHTTPException):
        return render_http_exception(exc)
    if is_timeout(exc):
        log.warning("request.dependency_timeout", error=type(exc).__name__)
        return _unavailable("The database did not answer in time; retry shortly.")
    if isinstance(exc, _UNAVAILABLE):
        log.warning("request.dependency_unavailable", error=type(exc).__name__)
        return _unavailable("A dependency (database) is unavailable; retry shortly.")
    if isinstance(exc, sa_exc.DBAPIError):
        # PostgreSQL's class 22 ("data exception") and asyncpg's own argument checks mean the request carried a
        # value the database cannot hold (an id beyond int64, a NUL byte): the client's fault, nothing stored.
        orig = getattr(exc, "orig", None)
        sqlstate = str(
            getattr(orig, "sqlstate", "") or getattr(getattr(orig, "__cause__", None), "sqlstate", "") or ""
        )
        if (
            isinstance(exc, sa_exc.DataError)
            or sqlstate.startswith("22")
            or "invalid input for query argument" in str(exc)
        ):
            return error_response(
                400, "invalid_value", "A value in the request is out of range or not storable."
            )
        log.error("request.database_error", exc_info=exc)
        return error_response(500, "internal_error", "An unexpected error occurred; it has been logged.")
    log.error("request.unhandled_error", exc_info=exc)
    return error_response(500, "internal_error", "An unexpected error occurred; it has been logged.")
