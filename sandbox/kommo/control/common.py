"""What every control-API route shares: JSON bodies and typed arguments (misuse raises ``SandboxError``)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse

from ..errors import SandboxError


def err(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise SandboxError("body must be a JSON object")
    return data


def str_arg(body: dict[str, Any], key: str, *, required: bool = True) -> Any:
    v = body.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise SandboxError(f"{key} must be a non-empty string")
    return v


def int_arg(body: dict[str, Any], key: str, default: int | None = None) -> Any:
    v = body.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise SandboxError(f"{key} must be an integer")
    return v
