"""The public-API surface of the sandbox: ``/{lang}/api/{method}`` and ``/{lang}/api/async/{method}``."""

from __future__ import annotations

import asyncio
import bz2
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from sandbox.unisender.background import Background
from sandbox.unisender.hooks import HookDispatcher
from sandbox.unisender.methods import METHODS, ApiError, Call
from sandbox.unisender.phpform import build_params, decode_urlencoded
from sandbox.unisender.state import SandboxState

log = structlog.get_logger(__name__)

LANGS = frozenset({"ru", "en", "it", "ua"})
_METHODS_LOWER = {name.lower(): name for name in METHODS}

router = APIRouter()


def _error(state: SandboxState, err: ApiError) -> JSONResponse:
    state.stats.errors[err.code] += 1
    return JSONResponse(err.body())


async def _read_pairs(request: Request) -> list[tuple[str, str]]:
    """Query pairs then body pairs (PHP's $_REQUEST order: POST overrides GET); non-form bodies are ignored."""
    pairs = decode_urlencoded(request.url.query)
    if request.method != "POST":
        return pairs
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    compressed = any(k == "request_compression" and v == "bzip2" for k, v in pairs)
    if ctype == "multipart/form-data":
        form = await request.form()
        pairs.extend((k, v) for k, v in form.multi_items() if isinstance(v, str))
        return pairs
    body = await request.body()
    if compressed and body:
        body = bz2.decompress(body)
    if ctype == "application/x-www-form-urlencoded" or (
        compressed and ctype in ("", "application/octet-stream")
    ):
        pairs.extend(decode_urlencoded(body.decode("utf-8")))
    # JSON (or any other) bodies are invisible to the PHP backend: their arguments simply are not there.
    return pairs


async def _handle(request: Request, lang: str, method: str) -> Response:
    state: SandboxState = request.app.state.unisender
    dispatcher: HookDispatcher = request.app.state.unisender_hooks
    cfg = state.config
    if lang not in LANGS:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    state.stats.calls[method] += 1
    try:
        pairs = await _read_pairs(request)
    except (UnicodeDecodeError, OSError, ValueError):
        return _error(state, ApiError("invalid_arg", "Request parameters are not valid UTF-8 form data"))
    params = build_params(pairs)

    client_ip = request.client.host if request.client else "unknown"
    if cfg.ip_calls_per_minute is not None and not state.ip_window.allow(client_ip, cfg.ip_calls_per_minute):
        return _error(state, ApiError("api_call_limit_exceeded_for_ip", "API call limit exceeded for IP"))

    api_key = params.get("api_key")
    account = state.accounts.get(api_key) if isinstance(api_key, str) else None
    if account is None:
        # Same answer for a missing and a wrong key, message as seen in a client fixture.
        return _error(state, ApiError("invalid_api_key", "AK100310-02"))
    state.stats.by_account[account.api_key][method] += 1
    if account.access_denied or method in account.denied_methods:
        return _error(state, ApiError("access_denied", "Access denied"))

    name = method if cfg.method_names_case_sensitive else _METHODS_LOWER.get(method.lower(), method)
    handler = METHODS.get(name)
    if handler is None:
        return _error(state, ApiError("unknown_method", f'Unknown method "{method}"'))

    if cfg.calls_per_minute is not None and not state.key_window.allow(account.api_key, cfg.calls_per_minute):
        return _error(
            state, ApiError("api_call_limit_exceeded_for_api_key", "API call limit exceeded for api_key")
        )
    method_limit = cfg.method_limits.get(name)
    if method_limit is not None and not state.method_window.allow(f"{account.api_key}\0{name}", method_limit):
        return _error(
            state,
            ApiError("api_call_limit_exceeded_for_api_key", f"API call limit exceeded for method {name}"),
        )

    plan = state.faults
    fault = plan.pick(name, account.api_key) if plan is not None else None
    if fault is not None:
        state.stats.faults[fault] += 1
        log.info("unisender_sandbox.fault", method=name, kind=fault)
        if fault == "retry_later":
            return _error(state, ApiError("retry_later", "Temporary error, please retry later"))
        if fault == "rate_limit":
            return _error(state, ApiError("api_call_limit_exceeded_for_api_key", "API call limit exceeded"))
        if fault == "rate_limit_ip":
            return _error(state, ApiError("api_call_limit_exceeded_for_ip", "API call limit exceeded for IP"))
        if fault.startswith("http_"):
            code = int(fault[5:])
            return Response(
                f"<html><body><h1>{code}</h1></body></html>", status_code=code, media_type="text/html"
            )
        if fault == "hang":
            assert plan is not None
            await asyncio.sleep(plan.hang_seconds)
            if not plan.hang_applies:
                return Response("Gateway Timeout", status_code=504, media_type="text/plain")

    base_url = str(request.base_url).rstrip("/")
    call = Call(state=state, account=account, method=name, params=params, base_url=base_url)
    try:
        result: Any = handler(call)
    except ApiError as err:
        return _error(state, err)
    dispatcher.emit(account, call.events)
    if call.tasks:
        background: Background = request.app.state.unisender_background
        background.notify_tasks(call.tasks)
    return JSONResponse({"result": result})


@router.api_route("/{lang}/api/async/{method}", methods=["GET", "POST"], include_in_schema=False)
async def api_async(request: Request, lang: str, method: str) -> Response:
    """Async methods (``async/exportContacts``, ``async/getCampaignDeliveryStats``, ``async/getTaskResult``)."""
    return await _handle(request, lang, f"async/{method}")


@router.api_route("/{lang}/api/{method}", methods=["GET", "POST"], include_in_schema=False)
async def api_call(request: Request, lang: str, method: str) -> Response:
    """Every synchronous API method."""
    return await _handle(request, lang, method)
