"""Waiting out a clean-up while whoever stops us keeps cancelling.

A stop is repeated (``group.cancel_and_wait`` cancels again every half second, since one cancel can be lost),
and each repeat lands in whatever the stopped task awaits at that moment: its own clean-up. Clean-ups that
must finish for the stop to be clean (the workers of a set ending before their shared pool closes, claims
handed back to Redis) run as a future of their own, and the stopped task waits for it through the repeats,
up to a deadline so that a clean-up that hangs cannot hang the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any


async def outlast_cancels(clean_up: asyncio.Future[Any], seconds: float) -> bool:
    """Wait up to ``seconds`` for ``clean_up`` to finish, cancellations of the caller meanwhile notwithstanding;
    True when it finished (its outcome retrieved: the caller decides what to raise), else False with it
    cancelled."""
    deadline = time.monotonic() + seconds
    while not clean_up.done() and (left := deadline - time.monotonic()) > 0:
        with contextlib.suppress(asyncio.CancelledError):  # a repeated stop: the clean-up goes on
            await asyncio.wait({clean_up}, timeout=left)
    if not clean_up.done():
        clean_up.cancel()
        return False
    if not clean_up.cancelled():
        clean_up.exception()
    return True
