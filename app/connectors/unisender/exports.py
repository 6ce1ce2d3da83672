"""Async tasks of the Unisender API (async/exportContacts, async/getCampaignDeliveryStats): start one, poll
async/getTaskResult a bounded number of times, download ``file_to_download`` and read it as a table.

Mixed into ``UnisenderClient``: every API call goes through its ``call`` (rate limit, error tree); the file
download is a plain GET on the same ``httpx.AsyncClient`` and is not an API call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from app.connectors.text import clean_text
from app.connectors.unisender.exceptions import UnisenderTransientError, error_from_status
from app.connectors.unisender.imports import Params
from app.connectors.unisender.reports import ExportedContacts, Table, table_from_file

log = structlog.get_logger(__name__)

# Documented task statuses before completion; anything else (never documented) is taken as a failed task.
PENDING_STATUSES = frozenset({"new", "processing", "in_progress", "queued", ""})
# async/exportContacts allows 20 calls per minute and getTaskResult counts against the general budget:
# a poll every 2 s for a minute covers a large export without hammering either.
TASK_POLL_INTERVAL = 2.0
TASK_MAX_POLLS = 30


def _bad(method: str, why: str) -> UnisenderTransientError:
    return UnisenderTransientError(f"unisender {method}: {why}", status_code=200, code="bad_response")


class TaskMethods:
    """Task handling and exportContacts; ``call`` and ``_http`` are ``UnisenderClient``'s."""

    _http: httpx.AsyncClient
    task_poll_interval: float = TASK_POLL_INTERVAL
    task_max_polls: int = TASK_MAX_POLLS

    async def call(self, method: str, params: Params | None = None) -> Any:
        raise NotImplementedError

    async def run_task(
        self,
        method: str,
        params: Params,
        *,
        poll_interval: float | None = None,
        max_polls: int | None = None,
    ) -> Table:
        """Start an async task with ``method`` and return its file as a table."""
        return await self.task_table(
            method, await self.call(method, params), poll_interval=poll_interval, max_polls=max_polls
        )

    async def task_table(
        self,
        method: str,
        started: Any,
        *,
        poll_interval: float | None = None,
        max_polls: int | None = None,
    ) -> Table:
        """Follow a started task (``{"task_uuid", "status"}``) to its file and read it.

        Raises ``UnisenderTransientError`` with code ``task_timeout`` when it is not completed after
        ``max_polls`` polls, ``task_failed`` for a status that is neither pending nor completed, and
        ``bad_response`` for an answer or a file that cannot be read.
        """
        if not isinstance(started, dict) or not isinstance(started.get("task_uuid"), str | int):
            raise _bad(method, "expected a task with task_uuid")
        task_uuid = str(started["task_uuid"])
        interval = self.task_poll_interval if poll_interval is None else poll_interval
        polls = self.task_max_polls if max_polls is None else max_polls
        task: dict[str, Any] = started
        for attempt in range(polls + 1):
            status = str(task.get("status") or "").strip().lower()
            if status == "completed":
                url = task.get("file_to_download")
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    raise _bad("async/getTaskResult", "completed task without file_to_download")
                return await self.download_table(url)
            if status not in PENDING_STATUSES:
                raise UnisenderTransientError(
                    f"unisender {method}: task {task_uuid} ended as {status!r}",
                    status_code=200,
                    code="task_failed",
                )
            if attempt == polls:
                break
            if attempt:
                await asyncio.sleep(interval)
            answer = await self.call("async/getTaskResult", [("task_uuid", task_uuid)])
            if not isinstance(answer, dict):
                raise _bad("async/getTaskResult", "expected an object result")
            task = answer
        log.warning("unisender.task_timeout", method=method, task_uuid=task_uuid, polls=polls)
        raise UnisenderTransientError(
            f"unisender {method}: task {task_uuid} not completed after {polls} polls",
            status_code=200,
            code="task_timeout",
        )

    async def download_table(self, url: str) -> Table:
        """GET a task file (CSV, possibly gzipped) and read it."""
        try:
            response = await self._http.get(url)
        except httpx.TimeoutException as exc:
            raise UnisenderTransientError("unisender file_to_download: timeout", code="timeout") from exc
        except httpx.TransportError as exc:
            raise UnisenderTransientError(
                f"unisender file_to_download: transport error {type(exc).__name__}", code="transport"
            ) from exc
        if response.status_code != 200:
            raise error_from_status(response.status_code, method="file_to_download")
        try:
            table = table_from_file(response.content)
        except ValueError as exc:
            raise _bad("file_to_download", "the file is not CSV text") from exc
        log.info("unisender.task_file", columns=len(table.columns), rows=len(table.rows))
        return table

    async def export_contacts(
        self,
        *,
        list_id: int | None = None,
        field_names: Sequence[str] | None = None,
        email: str | None = None,
        tag: str | None = None,
        email_status: str | None = None,
        notify_url: str | None = None,
        poll_interval: float | None = None,
        max_polls: int | None = None,
    ) -> ExportedContacts:
        """async/exportContacts: the selected contacts (all fields when ``field_names`` is None), one record per
        contact keyed by column name. ``notify_url`` is sent only when given (Selzy documents it as optional;
        unisender.com's EN page as required); the result is polled for either way."""
        params: Params = []
        if notify_url is not None:
            params.append(("notify_url", notify_url))
        if list_id is not None:
            params.append(("list_id", str(list_id)))
        params.extend((f"field_names[{i}]", name) for i, name in enumerate(field_names or ()))
        for name, value in (("email", email), ("tag", tag), ("email_status", email_status)):
            if value is not None:
                params.append((name, value))
        table = await self.run_task(
            "async/exportContacts", params, poll_interval=poll_interval, max_polls=max_polls
        )
        return ExportedContacts(columns=table.columns, contacts=table.records())

    async def export_field_values(self, list_id: int, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """Every address of ``list_id`` (lower-cased) with the user fields ``names`` as Unisender holds them."""
        wanted = list(dict.fromkeys(names))
        exported = await self.export_contacts(list_id=list_id, field_names=["email", *wanted])
        out: dict[str, dict[str, str]] = {}
        for record in exported.contacts:
            # Cleaned as the hook's data is (``app.connectors.text``): one NUL in a value would fail the whole
            # reconcile's transaction, every time it runs.
            email = clean_text(record.get("email", "")).strip().lower()
            if email:
                out[email] = {name: clean_text(record.get(name, "")) for name in wanted}
        return out
