"""Unisender (classic marketing API) client: form-encoded POSTs, PHP bracket arrays, HTTP-200 error bodies."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
import pydantic
import structlog

from app.connectors.base import EspContact, EspField, EspList, ImportRow, RowOutcome, RowResult
from app.connectors.ratelimit import RateLimiter, send_counted
from app.connectors.unisender.campaigns import CampaignMethods
from app.connectors.unisender.exceptions import (
    DEFAULT_RATE_LIMIT_RETRY_AFTER,
    UnisenderError,
    UnisenderNotFound,
    UnisenderRateLimited,
    UnisenderTransientError,
    error_from_envelope,
    error_from_status,
)
from app.connectors.unisender.form import form_encode
from app.connectors.unisender.hooks import REGISTERED_EVENT_NAMES
from app.connectors.unisender.imports import (
    INVALID_FIELD_NAME,
    MAX_IMPORT_FIELDS,
    SYSTEM_COLUMNS,
    Params,
    build_import_params,
    column_calls,
    ids_param,
    import_columns,
    import_groups,
    row_problem,
    row_results,
)
from app.connectors.unisender.schemas import (
    ContactResult,
    CreatedId,
    FieldInfo,
    ImportResult,
    ListInfo,
)
from app.retry import parse_retry_after

log = structlog.get_logger(__name__)

MAX_IMPORT_ROWS = 500  # documented hard limit per importContacts call
# Concurrent hook deliveries we let Unisender make: well within the API workers' capacity, while a burst of
# unsubscribes after a campaign still arrives in parallel.
HOOK_MAX_PARALLEL = 5

_FORM = "application/x-www-form-urlencoded"
_ModelT = TypeVar("_ModelT", bound=pydantic.BaseModel)


class UnisenderClient(CampaignMethods):
    """Calls the Unisender API with one api_key; implements ``EmailPlatformClient``. Campaign reads and
    exports (async tasks) come from ``CampaignMethods``/``TaskMethods`` (``campaigns.py``, ``exports.py``).

    Stateless apart from the injected ``httpx.AsyncClient`` and ``RateLimiter`` (1 unit per call). No retries
    here: errors are raised in the ``app.connectors.errors`` categories and the worker decides. The
    ``httpx.AsyncClient`` timeout should exceed 30 s, Unisender's own time budget for importContacts.
    """

    max_import_rows: int = MAX_IMPORT_ROWS
    reserved_field_names: frozenset[str] = SYSTEM_COLUMNS
    max_import_fields: int = MAX_IMPORT_FIELDS

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        limiter: RateLimiter,
        lang: str = "en",
        platform: str = "contactsync",
        rate_limit_retry_after: float = DEFAULT_RATE_LIMIT_RETRY_AFTER,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._limiter = limiter
        self._lang = lang
        self._platform = platform
        self._rate_limit_retry_after = rate_limit_retry_after

    def __repr__(self) -> str:  # never show the key
        return f"UnisenderClient(base_url={self._base_url!r}, lang={self._lang!r})"

    # --- transport ---------------------------------------------------------------------------------------

    async def call(self, method: str, params: Params | None = None) -> Any:
        """POST one API method and return its ``result``; raise a ``UnisenderError`` on any failure."""
        url = f"{self._base_url}/{self._lang}/api/{method}"
        pairs: Params = [("api_key", self._api_key)]
        if self._platform:
            pairs.append(("platform", self._platform))
        pairs.extend(params or [])
        body = form_encode(pairs)

        await self._limiter.acquire(1.0)
        started = time.monotonic()
        try:
            request = self._http.build_request(
                "POST", url, params={"format": "json"}, content=body, headers={"Content-Type": _FORM}
            )
            response = await send_counted(self._http, request, self._limiter)
        except httpx.TimeoutException as exc:
            log.warning("unisender.timeout", method=method)
            raise UnisenderTransientError(f"unisender {method}: timeout", code="timeout") from exc
        except httpx.TransportError as exc:
            log.warning("unisender.transport_error", method=method, error=type(exc).__name__)
            raise UnisenderTransientError(
                f"unisender {method}: transport error {type(exc).__name__}", code="transport"
            ) from exc
        elapsed_ms = round((time.monotonic() - started) * 1000)
        log.debug("unisender.call", method=method, status=response.status_code, elapsed_ms=elapsed_ms)

        try:
            return self._result(method, response)
        except UnisenderRateLimited as exc:
            # Tell every caller sharing this limiter to hold off, not just this one.
            self._limiter.pause(exc.retry_after or self._rate_limit_retry_after)
            log.warning("unisender.rate_limited", method=method, code=exc.code, retry_after=exc.retry_after)
            raise
        except UnisenderError as exc:
            log.info("unisender.error", method=method, code=exc.code, status=exc.status_code)
            raise

    def _result(self, method: str, response: httpx.Response) -> Any:
        status = response.status_code
        try:
            payload: Any = response.json()
        except (ValueError, UnicodeDecodeError):
            payload = None
        envelope = payload if isinstance(payload, dict) else None
        is_error = envelope is not None and (envelope.get("error") is not None or bool(envelope.get("code")))

        if status != 200:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status >= 500 or status == 429 or not is_error:
                raise error_from_status(
                    status,
                    method=method,
                    retry_after=retry_after,
                    rate_limit_retry_after=self._rate_limit_retry_after,
                )
        if envelope is not None and is_error:
            exc = error_from_envelope(
                envelope.get("error"),
                envelope.get("code"),
                method=method,
                rate_limit_retry_after=self._rate_limit_retry_after,
            )
            exc.status_code = status
            raise exc
        if envelope is None or "result" not in envelope:
            raise UnisenderTransientError(
                f"unisender {method}: response is not a JSON envelope",
                status_code=status,
                code="bad_response",
            )
        for warning in envelope.get("warnings") or []:
            log.info("unisender.warning", method=method, warning=warning)
        return envelope["result"]

    def _parse(self, method: str, model: type[_ModelT], result: Any) -> _ModelT:
        try:
            return model.model_validate(result)
        except pydantic.ValidationError as exc:
            raise _bad_result(method, exc) from exc

    def _parse_list(self, method: str, model: type[_ModelT], result: Any) -> list[_ModelT]:
        if not isinstance(result, list):
            raise UnisenderTransientError(
                f"unisender {method}: expected a list result", status_code=200, code="bad_response"
            )
        return [self._parse(method, model, item) for item in result]

    # --- contacts ----------------------------------------------------------------------------------------

    async def import_contacts(self, rows: Sequence[ImportRow]) -> list[RowResult]:
        """Upsert/delete rows in calls of at most 500; return one ``RowResult`` per input row, in order.

        Each row only carries the columns it sets (see ``import_groups``), so its outcome never depends on
        which other rows share its call. Rows with more than ``max_import_fields`` user fields are split
        across calls (``column_calls``): the first carries the address, phone, lists and status with the
        first 50 fields, the next ones ``email`` and 50 more each, and only rows every earlier call applied go
        on, so a rejected address is never created by the rest of its fields. A rejection in a later call
        leaves the earlier fields applied; the row is REJECTED all the same.

        A failing call raises and loses the results of earlier calls; importing is an idempotent upsert, so
        the caller retries the whole input. An address must not repeat within one input (Unisender rejects a
        repeated address within a call as a duplicate). A row whose field names cannot be columns (a system
        column such as ``email``, or a name given twice) is REJECTED here with ``invalid_field_name``.
        """
        results: dict[int, RowResult] = {}
        for i, row in enumerate(rows):
            problem = row_problem(row)
            if problem is not None:
                results[i] = RowResult(i, RowOutcome.REJECTED, code=INVALID_FIELD_NAME, message=problem)
        for group in import_groups(rows):
            for start in range(0, len(group), self.max_import_rows):
                batch = group[start : start + self.max_import_rows]
                calls = column_calls(import_columns([rows[i] for i in batch]), self.max_import_fields)
                for n, columns in enumerate(calls):
                    indices = batch
                    if n:
                        indices = [
                            i for i in batch if not rows[i].delete and results[i].outcome is RowOutcome.OK
                        ]
                    if not indices:
                        break
                    result = await self.import_batch([rows[i] for i in indices], columns)
                    results.update(row_results(result, indices))
        return [results[i] for i in range(len(rows))]

    async def import_batch(
        self, rows: Sequence[ImportRow], columns: Sequence[str] | None = None
    ) -> ImportResult:
        """One importContacts call (at most ``max_import_rows`` rows); returns the typed result.

        ``columns`` defaults to what the rows set (``import_columns``: they must all set the same).
        """
        if not rows:
            raise ValueError("import_batch needs at least one row")
        if len(rows) > self.max_import_rows:
            raise ValueError(f"at most {self.max_import_rows} rows per importContacts call")
        result = self._parse(
            "importContacts",
            ImportResult,
            await self.call("importContacts", build_import_params(rows, columns)),
        )
        if result.total and result.total != len(rows):
            log.warning("unisender.import_total_mismatch", sent=len(rows), total=result.total)
        log.info(
            "unisender.imported",
            rows=len(rows),
            inserted=result.inserted,
            updated=result.updated,
            deleted=result.deleted,
            invalid=result.invalid,
            log_entries=len(result.log),
        )
        return result

    async def get_contact(self, email: str) -> EspContact | None:
        """The contact with its lists and fields, or None when Unisender does not know the address."""
        try:
            raw = await self.call(
                "getContact", [("email", email), ("include_lists", "1"), ("include_fields", "1")]
            )
        except UnisenderNotFound:
            return None
        try:
            contact = ContactResult.from_result(raw)
        except pydantic.ValidationError as exc:
            raise _bad_result("getContact", exc) from exc
        return EspContact(
            email=contact.email.email,
            status=contact.email.status,
            list_ids=tuple(m.id for m in contact.lists),
            fields=dict(contact.fields),
        )

    async def exclude(
        self, email: str, list_ids: Sequence[int] | None = None, *, missing_ok: bool = True
    ) -> None:
        """Remove the address from ``list_ids`` (all lists when None) without unsubscribing it.

        By default an address that is not there counts as done, so a retried exclude is idempotent.
        """
        if list_ids is not None and not list_ids:
            return  # an empty selection must not widen to "all lists"
        try:
            await self.call("exclude", _contact_params(email, list_ids))
        except UnisenderNotFound:
            if not missing_ok:
                raise

    async def unsubscribe(self, email: str, list_ids: Sequence[int] | None = None) -> None:
        """Mark the address unsubscribed in ``list_ids`` (all lists when None); raises UnisenderNotFound."""
        if list_ids is not None and not list_ids:
            return  # an empty selection must not widen to "all lists"
        await self.call("unsubscribe", _contact_params(email, list_ids))

    # --- account -----------------------------------------------------------------------------------------

    async def check_credentials(self) -> None:
        """One cheap call (getLists); raises UnisenderAuthError when the key is invalid."""
        await self.call("getLists")

    async def get_lists(self) -> list[EspList]:
        """All mailing lists of the account."""
        items = self._parse_list("getLists", ListInfo, await self.call("getLists"))
        return [EspList(id=item.id, title=item.title) for item in items]

    async def create_list(self, title: str) -> int:
        """Create a list and return its id."""
        return self._parse("createList", CreatedId, await self.call("createList", [("title", title)])).id

    async def get_fields(self) -> list[EspField]:
        """All user fields of the account (a fresh account has ``Name``)."""
        items = self._parse_list("getFields", FieldInfo, await self.call("getFields"))
        return [EspField(id=item.id, name=item.name, type=item.type) for item in items]

    async def create_field(self, name: str, type_: str = "string", *, public_name: str | None = None) -> int:
        """Create a user field (``string|text|number|date|bool``) and return its id."""
        params: Params = [("name", name), ("type", type_)]
        if public_name is not None:
            params.append(("public_name", public_name))
        return self._parse("createField", CreatedId, await self.call("createField", params)).id

    async def set_unsubscribe_hook(
        self, url: str, *, extra_events: Sequence[str] = (), max_parallel: int = HOOK_MAX_PARALLEL
    ) -> None:
        """Register (or replace, or re-activate) the account's event hook at ``url``: every status of
        ``email_status``, ``subscribe``, ``unsubscribe`` and ``campaign_status`` (and ``extra_events``),
        batched JSON POSTs.

        Unsubscribes are what the sync acts on; the other events are registered so they are kept for later
        use. ``status=active`` also revives a hook Unisender stopped after a day of failed deliveries.
        """
        await self.call(
            "setHook",
            [
                ("hook_url", url),
                ("event_format", "json_post"),
                *(
                    (f"events[{name}]", "*")
                    for name in dict.fromkeys((*REGISTERED_EVENT_NAMES, *extra_events))
                ),
                ("single_event", "0"),
                ("max_parallel", str(max_parallel)),
                ("status", "active"),
            ],
        )

    async def remove_hook(self, url: str) -> None:
        """Delete the hook registered at ``url`` (e.g. before registering a new URL)."""
        await self.call("removeHook", [("hook_url", url)])


def _contact_params(email: str, list_ids: Sequence[int] | None) -> Params:
    params: Params = [("contact_type", "email"), ("contact", email)]
    if list_ids:
        params.append(("list_ids", ids_param(list_ids)))
    return params


def _bad_result(method: str, exc: pydantic.ValidationError) -> UnisenderTransientError:
    # A result we cannot read is most likely a glitch; the worker's retry cap bounds a persistent one.
    detail = json.dumps([e.get("loc") for e in exc.errors()][:3], default=str)
    return UnisenderTransientError(
        f"unisender {method}: unexpected result shape at {detail}", status_code=200, code="bad_response"
    )
