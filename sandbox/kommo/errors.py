"""The control API's one error type (the public API answers Kommo's own error bodies, ``responses.py``)."""

from __future__ import annotations


class SandboxError(Exception):
    """A control-API misuse (unknown account or integration, bad argument): answered 400/404 JSON."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
