"""Control API, operations: injected faults, the clock, call stats, webhook deliveries, and reset."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from ..api import kommo
from ..errors import SandboxError
from ..limits import Stats
from .common import err, json_body

router = APIRouter()


@router.get("/_sandbox/faults")
async def get_faults(request: Request) -> JSONResponse:
    return JSONResponse(kommo(request).faults.as_dict())


@router.post("/_sandbox/faults")
async def set_faults(request: Request) -> JSONResponse:
    state = kommo(request)
    try:
        state.faults.configure(await json_body(request))
    except ValueError as exc:
        return err(str(exc))
    return JSONResponse(state.faults.as_dict())


@router.delete("/_sandbox/faults")
async def clear_faults(request: Request) -> JSONResponse:
    state = kommo(request)
    state.faults.configure(
        {
            "latency_ms": 0,
            "latency_jitter_ms": 0,
            "error_rate": 0,
            "burst_429": 0,
            "lost_answers": 0,
            "error_status": 500,
            "seed": 0,
            "only": None,
        }
    )
    state.limiter.reset()
    return JSONResponse(state.faults.as_dict())


@router.get("/_sandbox/clock")
async def get_clock(request: Request) -> JSONResponse:
    clock = kommo(request).clock
    return JSONResponse({"now": clock.now(), "offset": clock.offset})


@router.post("/_sandbox/clock/advance")
async def advance_clock(request: Request) -> JSONResponse:
    body = await json_body(request)
    seconds = body.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise SandboxError("seconds must be a number")
    clock = kommo(request).clock
    clock.advance(seconds)
    return JSONResponse({"now": clock.now(), "offset": clock.offset})


@router.get("/_sandbox/stats")
async def get_stats(request: Request) -> JSONResponse:
    return JSONResponse(kommo(request).stats.as_dict())


@router.delete("/_sandbox/stats")
async def reset_stats(request: Request) -> JSONResponse:
    state = kommo(request)
    state.stats = Stats()
    return JSONResponse(state.stats.as_dict())


@router.get("/_sandbox/deliveries")
async def deliveries(request: Request) -> JSONResponse:
    log = list(kommo(request).dispatcher.log)
    wid = request.query_params.get("webhook_id")
    if wid is not None and wid.isdigit():
        log = [e for e in log if e["webhook_id"] == int(wid)]
    limit = request.query_params.get("limit")
    if limit is not None and limit.isdigit():
        log = log[-int(limit) :]
    return JSONResponse(log)


@router.delete("/_sandbox/deliveries")
async def clear_deliveries(request: Request) -> JSONResponse:
    kommo(request).dispatcher.log.clear()
    return JSONResponse({"cleared": True})


@router.post("/_sandbox/deliveries/drain")
async def drain(request: Request) -> JSONResponse:
    body = await json_body(request)
    timeout = body.get("timeout", 10)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise SandboxError("timeout must be a number")
    dispatcher = kommo(request).dispatcher
    ok = await dispatcher.drain(float(timeout))
    return JSONResponse({"drained": ok, "outstanding": dispatcher.outstanding})


@router.post("/_sandbox/reset")
async def reset(request: Request) -> JSONResponse:
    await kommo(request).reset()
    return JSONResponse({"reset": True})
