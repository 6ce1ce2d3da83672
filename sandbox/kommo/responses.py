"""Response helpers: HAL success bodies and Kommo's problem+json error bodies, verbatim as captured."""

from __future__ import annotations

import json
import secrets
from typing import Any

import orjson
from starlette.responses import Response

HAL = "application/hal+json"
PROBLEM = "application/problem+json"
OAUTH_PROBLEM_TYPE = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
}


def dumps(body: Any) -> bytes:
    """Compact JSON, non-ASCII as is. orjson writes the same bytes as the standard library for what the sandbox
    renders, which holds no NaN or infinity (orjson would write null); pages of 250 contacts are a large share
    of a full sync's CPU in tests and benchmarks. What orjson refuses (an integer beyond 64 bits, say) falls
    back to the standard library."""
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def hal(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type=HAL)


def no_content() -> Response:
    """204 with an empty body and no content type (what Kommo sends for an empty result)."""
    return Response(status_code=204)


def problem(status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    """``{"title","type","status","detail"}`` as Kommo's REST errors."""
    body: dict[str, Any] = {
        "title": _TITLES.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return Response(dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def unauthorized() -> Response:
    return problem(401, "Invalid user name or password")


def too_many_requests(retry_after: int, header: bool) -> Response:
    return problem(
        429,
        "You have sent too many requests in a given amount of time. Try again later.",
        retry_after=retry_after,
        headers={"Retry-After": str(retry_after)} if header else None,
    )


def internal_error(status: int = 500) -> Response:
    body = {
        "title": "ErrInternalServer",
        "status": status,
        "detail": "Internal server error",
        "trace_id": secrets.token_hex(16),
    }
    return Response(dumps(body), status_code=status, media_type=PROBLEM)


def blank_request() -> Response:
    return problem(400, "Request data can't be blank")


def validation_failed(errors: list[dict[str, Any]]) -> Response:
    """400 with ``validation-errors``: ``errors`` = [{"request_id", "errors": [{code, path, detail}]}]."""
    body = {
        "validation-errors": errors,
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Request validation failed",
    }
    return Response(dumps(body), status_code=400, media_type=PROBLEM)


def oauth_problem(
    status: int,
    hint: str | None,
    *,
    title: str = "Некорректный запрос",
    detail: str = "В запросе отсутствует ряд параметров или параметры невалидны",
) -> Response:
    """OAuthProblemJson as captured (amocrm-api-php#123); ``hint`` left out when None."""
    body: dict[str, Any] = {}
    if hint is not None:
        body["hint"] = hint
    body.update({"title": title, "type": OAUTH_PROBLEM_TYPE, "status": status, "detail": detail})
    return Response(dumps(body), status_code=status, media_type=PROBLEM)


def invalid_client() -> Response:
    return oauth_problem(401, None, title="Некорректный клиент", detail="Авторизация клиента не прошла")
