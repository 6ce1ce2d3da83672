"""Async API tasks (async/exportContacts, async/getCampaignDeliveryStats): the CSV file each produces, its
status over time, async/getTaskResult (the notify_url call is made by ``sandbox.unisender.background``).

A task is a snapshot taken when it is created; it is ``completed`` ``task_seconds`` later (before that:
``new`` until the first poll, then ``processing``). Its file is CSV, UTF-8, a header row of column names,
lists comma-joined in one cell (gzipped with ``export_gzip``). Unisender documents neither the file nor the
notification: with a ``notify_url`` the sandbox POSTs ``{"result": {"task_uuid", "task_type", "status":
"completed", "file_to_download"}}`` (JSON, once, no retries) when the task completes.
"""

from __future__ import annotations

import csv
import gzip
import io
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sandbox.unisender.methods.call import Call, invalid_arg, p_str


def new_task(
    call: Call,
    task_type: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    notify_url: str | None,
) -> dict[str, Any]:
    """Store a task with its file; the answer of the method that created it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    cfg = call.state.config
    task_uuid = str(uuid.uuid4())
    suffix = ".csv.gz" if cfg.export_gzip else ".csv"
    call.state.exports[task_uuid] = {
        "task_uuid": task_uuid,
        "api_key": call.account.api_key,
        "task_type": task_type,
        "polls": 0,
        "ready_at": time.monotonic() + cfg.task_seconds,
        "csv": buffer.getvalue(),
        "gzip": cfg.export_gzip,
        "notify_url": notify_url,
        "notified": None,
        "file_to_download": f"{call.base_url}/_sandbox/exports/{task_uuid}{suffix}",
    }
    if notify_url:
        call.tasks.append(task_uuid)
    return {"task_uuid": task_uuid, "status": "new"}


def task_status(task: dict[str, Any]) -> str:
    """``completed`` once its time has come, else ``new`` (never polled) or ``processing``."""
    if time.monotonic() >= task["ready_at"]:
        return "completed"
    return "new" if task["polls"] == 0 else "processing"


def task_file(task: dict[str, Any]) -> bytes:
    """The file as served (gzipped when the task was created with ``export_gzip``)."""
    data = str(task["csv"]).encode("utf-8")
    return gzip.compress(data, mtime=0) if task["gzip"] else data


def task_json(task: dict[str, Any]) -> dict[str, Any]:
    """The getTaskResult view (``file_to_download`` only once completed)."""
    status = task_status(task)
    out: dict[str, Any] = {"task_uuid": task["task_uuid"], "status": status, "task_type": task["task_type"]}
    if status == "completed":
        out["file_to_download"] = task["file_to_download"]
    return out


def get_task_result(call: Call) -> dict[str, Any]:
    """async/getTaskResult: the status of an export or delivery-stats task of this account."""
    task_uuid = p_str(call, "task_uuid", required=True) or ""
    task = call.state.exports.get(task_uuid)
    if task is None or task["api_key"] != call.account.api_key:
        raise invalid_arg(f'Task "{task_uuid}" not found')
    answer = task_json(task)
    task["polls"] += 1
    return answer


def notify_url_param(call: Call) -> str | None:
    """The optional (``export_requires_notify_url``: required) ``notify_url``, checked to be an http(s) URL."""
    required = call.state.config.export_requires_notify_url
    url = p_str(call, "notify_url", required=required)
    if url is None or (url == "" and not required):
        return None
    if not url.startswith(("http://", "https://")) or len(url) < 10 or any(c.isspace() for c in url):
        raise invalid_arg(f'Invalid notify_url "{url}"')
    return url
