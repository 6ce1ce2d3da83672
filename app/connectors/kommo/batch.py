"""Batch writes split into calls of at most N items, each item named by the ``request_id`` it is sent with.

Kommo answers a 400 with ``validation-errors`` keyed by ``request_id`` (spec §5, §10); this turns that into
:class:`KommoBatchRejected` and records on any error how far the batch got (:class:`KommoBatchProgress`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from app.connectors.kommo.exceptions import (
    KommoBatchProgress,
    KommoBatchRejected,
    KommoError,
    KommoValidationError,
)

T = TypeVar("T")
Item = tuple[str, dict[str, Any]]  # (request_id, JSON body of the item)
Send = Callable[[list[Item]], Awaitable[list[T]]]


def with_request_ids(given: Iterable[str | None], bodies: Iterable[dict[str, Any]]) -> list[Item]:
    """Each body with its ``request_id``: the one given, else its index as a string (Kommo's own default).
    Raises ValueError when two items would share one (their errors and results could not be told apart)."""
    items: list[Item] = []
    seen: set[str] = set()
    for index, (request_id, body) in enumerate(zip(given, bodies, strict=True)):
        rid = request_id if request_id is not None else str(index)
        if rid in seen:
            raise ValueError(f"request_id {rid!r} is used twice")
        seen.add(rid)
        items.append((rid, {**body, "request_id": rid}))
    return items


async def write_in_batches(items: Sequence[Item], size: int, send: Send[T]) -> list[T]:
    """``send`` the items in calls of at most ``size``, in order; the results of every call, concatenated.

    Stops at the first failing call and raises its error with ``progress`` set; a 400 whose
    ``validation-errors`` name items of that call becomes :class:`KommoBatchRejected`.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    done: list[T] = []
    for start in range(0, len(items), size):
        chunk = list(items[start : start + size])
        try:
            results = await send(chunk)
        except KommoError as exc:
            error = _rejection(exc, [rid for rid, _ in chunk])
            rejected = set(error.rejected_request_ids) if isinstance(error, KommoBatchRejected) else set()
            # A refused call (4xx, 429) saved nothing; any other failure may have saved its items.
            refused = exc.status_code is not None and 400 <= exc.status_code < 500
            failed = [rid for rid, _ in chunk if rid not in rejected]
            later = [rid for rid, _ in items[start + size :]]
            error.progress = KommoBatchProgress(
                completed=tuple(done),
                unsaved_request_ids=tuple((failed if refused else []) + later),
                uncertain_request_ids=() if refused else tuple(failed),
            )
            if error is exc:
                raise
            raise error from exc
        done += results
    return done


def _rejection(exc: KommoError, sent: list[str]) -> KommoError:
    """``exc`` as :class:`KommoBatchRejected` when it is a 400 naming items of this call, else ``exc``."""
    if not isinstance(exc, KommoValidationError) or exc.status_code != 400:
        return exc
    known = set(sent)
    named = list(dict.fromkeys(i.request_id for i in exc.errors if i.request_id in known))
    if not named:
        return exc
    return KommoBatchRejected(
        exc.message,
        rejected_request_ids=tuple(rid for rid in named if rid is not None),
        errors=exc.errors,
        status_code=exc.status_code,
        code=exc.code,
        title=exc.title,
        hint=exc.hint,
        request_id=exc.request_id,
    )


def in_sent_order(
    results: Sequence[T], request_ids: Sequence[str | None], sent: Sequence[str]
) -> list[T] | None:
    """``results`` ordered as ``sent``, matched by their echoed ``request_id`` (position when none is echoed);
    None when they do not answer every item sent exactly once."""
    if len(results) != len(sent):
        return None
    if all(rid is None for rid in request_ids):
        return list(results)
    by_rid = dict(zip(request_ids, results, strict=True))
    if len(by_rid) != len(sent) or set(by_rid) != set(sent):
        return None
    return [by_rid[rid] for rid in sent]
