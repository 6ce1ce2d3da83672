"""The route class of every API router: how a request's JSON body is parsed, and when it is refused.

- JSON bodies are parsed with a loader that refuses duplicate keys (422 ``duplicate_key``): Python's ``json``
  keeps the last value, so ``{"id": 1, "id": 2}`` would act on 2 while a proxy or log reading the first saw 1.
- FastAPI parses the body before it runs the route's dependencies, so a body that is not JSON at all was
  answered 422 even to a caller without credentials. Here such a body is refused only after the
  dependencies ran: without credentials the answer is 401, as for any other body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.utils import solve_dependencies
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from app.errors import Unprocessable


class DuplicateKeyError(json.JSONDecodeError):
    """A JSON object repeats a key. A ``JSONDecodeError``, so FastAPI reports it like any unparsable body."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}", "", 0)
        self.key = key


def _refuse_duplicates(items: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in items:
        if key in obj:
            raise DuplicateKeyError(key)
        obj[key] = value
    return obj


def loads_strict(body: bytes | str) -> Any:
    """``json.loads`` that refuses an object repeating a key, at any depth."""
    try:
        return json.loads(body, object_pairs_hook=_refuse_duplicates)
    except UnicodeDecodeError as exc:
        # Not text in any of JSON's encodings: as unparsable as bad syntax (FastAPI would answer a bare 400).
        raise json.JSONDecodeError(f"not valid UTF-8, UTF-16 or UTF-32: {exc.reason}", "", exc.start) from exc


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


def _unparsable(exc: RequestValidationError) -> bool:
    return any(err.get("type") == "json_invalid" for err in exc.errors())


class AppRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            try:
                return await handler(request)
            except RequestValidationError as exc:
                if not _unparsable(exc):
                    raise
                await self._run_dependencies(request)  # raises 401 for a caller without credentials
                cause = exc.__cause__
                if isinstance(cause, DuplicateKeyError):
                    raise Unprocessable(
                        f"The JSON body repeats the key {cause.key!r}.", code="duplicate_key"
                    ) from None
                raise

        return route_handler

    async def _run_dependencies(self, request: Request) -> None:
        # The route's dependencies without its body (whose absence is an error we ignore): one that refuses
        # the caller raises here. Only reached for an unparsable body, so the normal path pays nothing.
        await solve_dependencies(
            request=request,
            dependant=self.dependant,
            body=None,
            dependency_overrides_provider=self.dependency_overrides_provider,
            async_exit_stack=request.scope["fastapi_inner_astack"],
            embed_body_fields=self._embed_body_fields,
        )
