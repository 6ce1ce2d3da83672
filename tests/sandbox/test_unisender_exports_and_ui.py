"""The Unisender sandbox's async export task (states, notify_url, gzip) and the changes made in Unisender's UI
(field edits, signups), over loopback HTTP."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import json
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from app.context import tls_context
from app.servers import serve_in_background
from sandbox.unisender import UnisenderSandboxConfig, create_unisender_sandbox
from tests.sandbox.unisender_activity import Receiver, Sb, members, receiver_app, signed, wait_for

# --- async export ----------------------------------------------------------------------------------------


async def test_export_task_runs_through_its_states_notifies_and_serves_gzip() -> None:
    notified: list[Any] = []
    hook = FastAPI()

    @hook.post("/done")
    async def done(request: Request) -> Response:
        notified.append(await request.json())
        return Response("ok")

    cfg = UnisenderSandboxConfig(accounts={"ex": "ex"}, task_seconds=0.3, export_gzip=True)
    app = create_unisender_sandbox(cfg)
    async with (
        serve_in_background(app) as url,
        serve_in_background(hook) as hook_base,
        httpx.AsyncClient(verify=tls_context(), base_url=url) as http,
    ):
        s = Sb(url, app, http)
        list_id, emails = await members(s, "ex", count=3)
        task = await s.result(
            "async/exportContacts", "ex", {"notify_url": f"{hook_base}/done", "list_id": str(list_id)}
        )
        uuid_ = task["task_uuid"]
        first = await s.result("async/getTaskResult", "ex", {"task_uuid": uuid_})
        second = await s.result("async/getTaskResult", "ex", {"task_uuid": uuid_})
        assert (first["status"], second["status"]) == ("new", "processing")
        assert "file_to_download" not in second
        early = f"{url}/_sandbox/exports/{uuid_}.csv.gz"
        assert (await http.get(early)).status_code == 404
        await asyncio.sleep(0.3)
        done_ = await s.result("async/getTaskResult", "ex", {"task_uuid": uuid_})
        assert done_["status"] == "completed"
        assert done_["file_to_download"] == early
        raw = (await http.get(done_["file_to_download"])).content
        assert raw[:2] == b"\x1f\x8b"
        header, *rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode())))
        # field_names omitted: every system field, then the user fields.
        assert header[:3] == ["id", "email", "email_status"]
        assert header[-1] == "Name"
        # Any member of the list, whatever its status there.
        assert sorted(r[1] for r in rows) == sorted([*emails, "gone@example.com"])
        await wait_for(lambda: notified)
        assert notified == [{"result": {**done_, "status": "completed"}}]
        (listed,) = (await http.get("/_sandbox/tasks")).json()["tasks"]
        assert (listed["notified"], listed["polls"]) == (200, 3)


# --- changes made in Unisender's UI ----------------------------------------------------------------------


async def test_ui_field_edits_and_signups_reach_the_hooks(sb: Sb, key: str) -> None:
    receiver = Receiver()
    async with serve_in_background(receiver_app(receiver)) as hook_base:
        args = {"hook_url": f"{hook_base}/hook", "events[contact_data_change]": "*", "events[subscribe]": "*"}
        assert await sb.result("setHook", key, args) == {}
        await sb.result("createField", key, {"name": "city", "type": "string"})
        list_id, _ = await members(sb, key, count=1)
        path = f"/accounts/{key}/contacts/m00@example.com/fields"
        edit = await sb.control("POST", path, {"fields": {"Name": "Ann", "city": "Oslo"}})
        assert edit["changed"] == {"Name": "Ann", "city": "Oslo"}
        again = await sb.control("POST", path, {"fields": {"Name": "Ann", "city": ""}})
        assert again["changed"] == {"city": ""}  # Name unchanged: not in the event
        assert (await sb.control("POST", path, {"fields": {"Name": "Ann"}}))["changed"] == {}  # no event
        await sb.control("POST", path, {"fields": {"nope": "x"}}, status=400)
        stored = await sb.result("getContact", key, {"email": "m00@example.com", "include_fields": "1"})
        assert stored["fields"] == {"Name": "Ann"}

        signups = f"/accounts/{key}/lists/{list_id}/signups"
        new = await sb.control("POST", signups, {"email": "New@Example.com", "fields": {"Name": "Neo"}})
        assert (new["created"], new["changed"], new["contact"]["status"]) == (True, True, "active")
        assert new["contact"]["lists"][str(list_id)]["status"] == "active"
        repeat = await sb.control("POST", signups, {"email": "new@example.com"})
        assert (repeat["created"], repeat["changed"]) == (False, False)  # already active: no event
        back = await sb.control("POST", signups, {"email": "gone@example.com"})  # unsubscribed earlier
        assert (back["created"], back["changed"]) == (False, True)
        await wait_for(lambda: len(receiver.events()) == 4)
        await asyncio.sleep(0.05)

    events = [(e["event_name"], e["event_data"]) for e in receiver.events()]
    assert sorted(events, key=json.dumps) == sorted(
        [
            ("contact_data_change", {"email": "m00@example.com", "fields": {"Name": "Ann", "city": "Oslo"}}),
            ("contact_data_change", {"email": "m00@example.com", "fields": {"city": ""}}),
            ("subscribe", {"email": "new@example.com", "list_id": list_id}),
            ("subscribe", {"email": "gone@example.com", "list_id": list_id}),
        ],
        key=json.dumps,
    )
    assert all(signed(body, key) for body in receiver.bodies)
    assert (await sb.result("getContact", key, {"email": "new@example.com", "include_fields": "1"}))[
        "fields"
    ] == {"Name": "Neo"}
