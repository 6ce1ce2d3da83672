"""Reading Kommo's answers: a JSON body, its validation into a model, and the page a HAL link points at.

A body that cannot be read raises the connector's errors: not JSON at all is transient (a proxy page or a
cut-off body: worth another try later), a shape the models refuse is a plain ``KommoError``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pydantic

from app.connectors.kommo.exceptions import KommoError, KommoTransientError


def json_of(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise KommoTransientError(
            f"Kommo {what}: response is not JSON", status_code=response.status_code, code="bad_response"
        ) from exc


def shape_error(exc: pydantic.ValidationError, response: httpx.Response, what: str) -> KommoError:
    return KommoError(
        f"Kommo {what}: unexpected response shape ({exc.error_count()} errors)",
        status_code=response.status_code,
        code="bad_response",
    )


def parse(model: type[Any], data: Any, response: httpx.Response, what: str) -> Any:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise shape_error(exc, response, what) from exc


def read(model: type[Any], response: httpx.Response, what: str) -> Any:
    """The JSON body validated as ``model``."""
    return parse(model, json_of(response, what), response, what)


def page_of(href: str) -> int | None:
    """The ``page`` query parameter of a HAL link, if it is a positive integer."""
    values = parse_qs(urlsplit(href).query).get("page")
    if not values or not values[0].isdigit():
        return None
    page = int(values[0])
    return page if page > 0 else None
