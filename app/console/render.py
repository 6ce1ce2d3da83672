"""Pages: Jinja2 templates (autoescaped), the console's own content security policy, and the route class that
turns a refusal into a page (or, for the JSON endpoints, into the API's error body)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from app.console.errors import SignInRequired
from app.errors import AppError

HERE = Path(__file__).parent
# The console loads its own script and stylesheet and nothing else; forms post to itself only.
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["seconds"] = _seconds


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(template).render(**context)
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={"Cache-Control": "no-store", "Content-Security-Policy": CONSOLE_CSP},
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def sign_in_url(next_path: str) -> str:
    return f"/console/sign-in?next={quote(next_path, safe='/')}"


def error_page(exc: AppError, request: Request, csrf: str | None = None) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse(exc.body(), status_code=exc.status_code, headers={"Cache-Control": "no-store"})
    if isinstance(exc, SignInRequired) and request.method == "GET":
        return see_other(sign_in_url(request.url.path))
    return page(
        "error.html",
        status_code=exc.status_code,
        code=exc.error_code,
        message=exc.message,
        errors=exc.extra.get("errors", []),
        signed_in=not isinstance(exc, SignInRequired),
        csrf=csrf,
    )


class ConsoleRoute(APIRoute):
    """Every console route: an ``AppError`` (raised by a dependency or a service, after the request's
    transaction rolled back) becomes a page saying what was refused, with its code."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return error_page(exc, request)

        return route_handler
