"""The mapping endpoints over real HTTP against both sandboxes: the default spec, refusals that name every bad
entry and change nothing, create_missing, what can be mapped (read live), who may call, a preview that reads
Unisender and sends nothing, and live changes that keep flowing while a spec change re-derives the account.

Unisender fields and lists are made directly in the Unisender sandbox through its API (createField,
createList), as an operator would in Unisender's UI: the service must find them, not only what it made."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.conftest import Stack, running_worker
from tests.support.e2e import Account, connect_account, wait_for, wait_quiet


def _kommo(stack: Stack, account: Account) -> Any:
    return stack.kommo_app.state.kommo.accounts[account.subdomain]


def _field_ids(stack: Stack, account: Account) -> dict[str, int]:
    return {f.name: f.id for f in _kommo(stack, account).fields.values()}


async def _unisender_call(stack: Stack, account: Account, method: str, **params: str) -> dict[str, Any]:
    r = await stack.unisender.post(
        f"/en/api/{method}", data={"format": "json", "api_key": account.api_key, **params}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert "error" not in body, body
    return body


async def _get(stack: Stack, path: str, account: Account) -> Any:
    r = await stack.api.get(path, headers=stack.admin_headers, params={"id": account.account_id})
    assert r.status_code == 200, (path, r.text)
    return r.json()


async def _esp_fields(stack: Stack, account: Account) -> dict[str, str]:
    return {f["name"]: f["type"] for f in await _get(stack, "/unisender/fields", account)}


async def _esp_lists(stack: Stack, account: Account) -> dict[str, int]:
    return {lst["title"]: lst["id"] for lst in await _get(stack, "/unisender/lists", account)}


async def _runs(stack: Stack, account: Account) -> list[dict[str, Any]]:
    r = await stack.api.get(
        "/sync/runs", headers=stack.admin_headers, params={"account_id": account.account_id}
    )
    assert r.status_code == 200, r.text
    runs: list[dict[str, Any]] = r.json()["runs"]
    return runs


async def _mapping(stack: Stack, account: Account) -> dict[str, Any]:
    r = await stack.api.get(f"/integration/{account.account_id}/mapping", headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _snapshot(stack: Stack, account: Account) -> dict[str, Any]:
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/snapshot")
    assert r.status_code == 200, r.text
    snap: dict[str, Any] = r.json()
    return snap


async def _unisender_account(stack: Stack, account: Account) -> dict[str, Any]:
    """The Unisender sandbox's own summary: fields, lists (with member counts), rows ever imported."""
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}")
    assert r.status_code == 200, r.text
    summary: dict[str, Any] = r.json()
    return summary


async def _wait_run_done(stack: Stack, run_id: str, *, within: float = 30.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def done() -> bool:
        r = await stack.api.get(f"/sync/runs/{run_id}", headers=stack.admin_headers)
        assert r.status_code == 200, r.text
        seen.update(r.json())
        return bool(seen["status"] in ("done", "failed"))

    await wait_for(done, within=within, what=f"run {run_id} ends")
    return seen


async def test_a_new_account_has_the_default_spec_version_1(stack: Stack) -> None:
    account = await connect_account(stack)
    body = await _mapping(stack, account)
    assert body["version"] == 1
    assert [(f["source"], f["target"], f["target_type"]) for f in body["fields"]] == [
        (["name"], "Name", "string")
    ]
    # The base list is shown with the list this account's Unisender connection made, whatever its id.
    (base,) = body["lists"]
    assert (base["base"], base["list_id"], base["all"], base["tag"], base["tags_any"]) == (
        True,
        account.list_id,
        True,
        None,
        [],
    )


async def test_bad_specs_are_refused_naming_each_entry_and_nothing_changes(stack: Stack) -> None:
    account = await connect_account(stack, contacts=3, seed=2, custom_fields=True)
    ids = _field_ids(stack, account)
    await _unisender_call(stack, account, "createField", name="Points", type="number")
    gold = (await _unisender_call(stack, account, "createList", title="Gold"))["result"]["id"]
    silver = (await _unisender_call(stack, account, "createList", title="Silver"))["result"]["id"]
    fields_before = await _esp_fields(stack, account)
    lists_before = await _esp_lists(stack, account)
    assert fields_before["Points"] == "number"  # the premise of the type mismatch below
    version_before = (await _mapping(stack, account))["version"]
    runs_before = await _runs(stack, account)
    bad = {
        "fields": [
            {"source": "name", "target": "Name"},
            {"source": "custom_field:987654", "target": "Ghost"},  # no such Kommo field
            {"source": f"custom_field:{ids['Company']}", "target": "Points"},  # text → number
            # Good entries that would create a field and a list, were anything done before the check.
            {"source": f"custom_field:{ids['Score']}", "target": "FreshScore"},
        ],
        "lists": [
            {"list_id": account.list_id, "all": True},
            {"list_id": account.list_id, "tag": "again"},  # the same list a second time
            {"list_id": gold, "tag": "vip"},
            {"list_id": silver, "tag": "VIP"},  # the tag "vip" already selects Gold (case does not matter)
            {"list_title": "Brand new", "tag": "fresh"},
        ],
        "create_missing": True,
    }
    r = await stack.api.put(
        f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=bad
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_mapping"
    assert [(e["loc"], e["code"]) for e in body["errors"]] == [
        ("fields[1]", "unknown_kommo_field"),
        ("fields[2]", "type_mismatch"),
        ("lists[1]", "duplicate_list"),
        ("lists[3]", "duplicate_tag"),
    ]
    assert all(isinstance(e["message"], str) and e["message"] for e in body["errors"])

    # A preview of the same candidate is refused the same way (it resolves with the same rules).
    r = await stack.api.post(
        f"/integration/{account.account_id}/mapping/preview", headers=stack.admin_headers, json={"spec": bad}
    )
    assert (r.status_code, r.json()["error"]) == (422, "invalid_mapping"), r.text

    # A key the schema does not know, at the top or inside an entry: pydantic's 422 before anything is read.
    for unknown in (
        {"fields": [], "lists": [], "colour": "red"},
        {"fields": [{"source": "name", "target": "Name", "weight": 2}]},
    ):
        r = await stack.api.put(
            f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=unknown
        )
        assert (r.status_code, r.json()["error"]) == (422, "validation_error"), r.text

    assert (await _mapping(stack, account))["version"] == version_before
    assert await _esp_fields(stack, account) == fields_before
    assert await _esp_lists(stack, account) == lists_before
    assert await _runs(stack, account) == runs_before


async def test_create_missing_creates_typed_fields_and_the_list_and_starts_a_remap(stack: Stack) -> None:
    account = await connect_account(stack, contacts=20, seed=3, custom_fields=True)
    # Sources as /kommo/fields names them: what the widget would put in a spec.
    sources = {f["name"]: f["source"] for f in await _get(stack, "/kommo/fields", account)}
    spec = {
        "fields": [
            {"source": "name", "target": "Name"},
            {"source": sources["Score"], "target": "Score"},  # numeric
            {"source": sources["Newsletter"], "target": "Newsletter"},  # checkbox
            {"source": sources["First order"], "target": "FirstOrder"},  # date
            {"source": sources["Company"], "target": "Company"},  # text
        ],
        "lists": [{"list_id": account.list_id, "all": True}, {"list_title": "VIP", "tag": "vip"}],
        "create_missing": True,
    }
    assert not {"Score", "Newsletter", "FirstOrder", "Company"} & set(await _esp_fields(stack, account))
    assert "VIP" not in await _esp_lists(stack, account)
    async with running_worker(stack.settings):
        r = await stack.api.put(
            f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=spec
        )
        assert r.status_code == 200, r.text
        saved = r.json()
        run = await _wait_run_done(stack, saved["run_id"])
    assert saved["version"] == 2
    types = await _esp_fields(stack, account)
    assert (types["Score"], types["Newsletter"], types["FirstOrder"], types["Company"]) == (
        "number",
        "bool",
        "date",
        "string",
    )
    lists = await _esp_lists(stack, account)
    assert [(rule["title"], rule["tag"], rule["list_id"]) for rule in saved["lists"]][1] == (
        "VIP",
        "vip",
        lists["VIP"],
    )
    assert (run["kind"], run["status"], run["account_id"]) == ("remap", "done", account.account_id)
    assert [r["run_id"] for r in await _runs(stack, account) if r["kind"] == "remap"] == [saved["run_id"]]
    assert (await _mapping(stack, account))["version"] == 2


async def test_what_can_be_mapped_is_read_live_from_both_providers(stack: Stack) -> None:
    account = await connect_account(stack, contacts=2, seed=4, custom_fields=True)
    listed = await _get(stack, "/kommo/fields", account)
    held = _kommo(stack, account).fields.values()
    assert {(f["id"], f["name"], f["type"]) for f in listed} == {(f.id, f.name, f.type) for f in held}
    for f in listed:  # a predefined field by its code, a user field by its id: what resolve() accepts
        assert f["source"] == f"custom_field:{f['code'] or f['id']}", f
    by_name = {f["name"]: f for f in listed}
    assert by_name["Plan"]["options"] == ["Free", "Basic", "Pro", "Enterprise"]
    assert by_name["Email"]["source"] == "custom_field:EMAIL"

    # Added at either provider just now: the next read shows it (nothing cached).
    r = await stack.kommo.post(
        f"/_sandbox/accounts/{account.subdomain}/custom_fields", json={"name": "Loyalty", "type": "numeric"}
    )
    assert r.status_code == 201, r.text
    loyalty = r.json()["id"]
    await _unisender_call(stack, account, "createField", name="Loyalty", type="number")
    made = (await _unisender_call(stack, account, "createList", title="Partners"))["result"]["id"]
    after = {f["name"]: f for f in await _get(stack, "/kommo/fields", account)}
    assert after["Loyalty"]["source"] == f"custom_field:{loyalty}"
    assert (await _esp_fields(stack, account))["Loyalty"] == "number"
    assert (await _esp_lists(stack, account))["Partners"] == made
    held_lists = {lst["title"]: lst["id"] for lst in (await _unisender_account(stack, account))["lists"]}
    assert await _esp_lists(stack, account) == held_lists


async def test_who_may_read_and_change_the_mapping(stack: Stack) -> None:
    account = await connect_account(stack, subdomain="acme")
    other = await connect_account(stack, subdomain="beta")
    path = f"/integration/{account.account_id}/mapping"

    async def widget_token(of: Account) -> str:
        r = await stack.kommo.post(
            "/_sandbox/widget_token", json={"client_id": of.client_id, "subdomain": of.subdomain}
        )
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token

    for method, url, kwargs in (
        ("GET", path, {}),
        ("PUT", path, {"json": {"fields": []}}),
        ("POST", f"{path}/preview", {"json": {}}),
        ("GET", "/kommo/fields", {"params": {"id": account.account_id}}),
        ("GET", "/unisender/fields", {"params": {"id": account.account_id}}),
        ("GET", "/unisender/lists", {"params": {"id": account.account_id}}),
    ):
        r = await stack.api.request(method, url, **kwargs)
        assert r.status_code == 401, (method, url, r.text)

    own = {"X-Auth-Token": await widget_token(account)}
    r = await stack.api.get(path, headers=own)
    assert (r.status_code, r.json()["version"]) == (200, 1), r.text
    r = await stack.api.get("/unisender/lists", headers=own, params={"id": account.account_id})
    assert r.status_code == 200, r.text

    # The other account's widget: a good token, but not for this account, on every endpoint.
    foreign = {"X-Auth-Token": await widget_token(other)}
    r = await stack.api.get(path, headers=foreign)
    assert (r.status_code, r.json()["error"]) == (403, "wrong_account"), r.text
    r = await stack.api.put(path, headers=foreign, json={"fields": [], "lists": []})
    assert (r.status_code, r.json()["error"]) == (403, "wrong_account"), r.text
    r = await stack.api.get("/kommo/fields", headers=foreign, params={"id": account.account_id})
    assert (r.status_code, r.json()["error"]) == (403, "wrong_account"), r.text
    assert (await _mapping(stack, account))["version"] == 1  # the refused PUT stored nothing

    r = await stack.api.get("/integration/424242/mapping", headers=stack.admin_headers)
    assert (r.status_code, r.json()["error"]) == (404, "unknown_account"), r.text
    r = await stack.api.get("/unisender/fields", headers=stack.admin_headers, params={"id": 424242})
    assert (r.status_code, r.json()["error"]) == (404, "unknown_account"), r.text


async def test_a_preview_reads_unisender_per_address_and_sends_nothing(stack: Stack) -> None:
    account = await connect_account(stack, contacts=30, seed=6, custom_fields=True)
    ids = _field_ids(stack, account)
    path = f"/integration/{account.account_id}/mapping"
    async with running_worker(stack.settings):
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account)
        acc = _kommo(stack, account)
        email_field = acc.field_by_code("EMAIL").id
        snap = (await _snapshot(stack, account))["contacts"]
        # Addresses held by one contact only, with a Company: the new field has a value to send.
        holders: dict[str, list[Any]] = {}
        for c in acc.contacts.values():
            for fid, vals in c.fields:
                if fid == email_field:
                    for value, _ in vals:
                        holders.setdefault(str(value).strip().lower(), []).append(c)
        company: dict[str, str] = {}
        for email, cs in sorted(holders.items()):
            values = [v for fid, vals in cs[0].fields if fid == ids["Company"] for v, _ in vals]
            if len(cs) == 1 and values and email in snap:
                company[email] = str(values[0])
        sample = sorted(company)[:3]
        assert len(sample) == 3, company
        candidate = {
            "fields": [
                {"source": "name", "target": "Name"},
                {"source": f"custom_field:{ids['Company']}", "target": "Company"},
            ],
            "lists": [{"list_id": account.list_id, "all": True}],
            "create_missing": True,
        }
        before = (await _snapshot(stack, account), await _unisender_account(stack, account))
        r = await stack.api.post(
            f"{path}/preview",
            headers=stack.admin_headers,
            json={"spec": candidate, "emails": [e.upper() for e in sample]},  # addresses are normalised
        )
        assert r.status_code == 200, r.text
        preview = r.json()
        assert (preview["version"], preview["candidate"], preview["new_fields"]) == (1, True, ["Company"])
        assert [a["email"] for a in preview["addresses"]] == sample
        for sampled in preview["addresses"]:
            email = sampled["email"]
            held = snap[email]
            assert sampled["unsubscribed"] is False
            assert sampled["holds"]["status"] == held["status"]
            assert sampled["holds"]["fields"] == held["fields"]  # read live, not from our records
            assert sampled["holds"]["lists"] == [account.list_id]
            assert sampled["would_send"]["fields"] == {
                "Name": held["fields"]["Name"],
                "Company": company[email],
            }
            assert sampled["differences"]["fields"] == {"Company": {"from": "", "to": company[email]}}
            assert (sampled["differences"]["join"], sampled["differences"]["delete"]) == ([], False)

        r = await stack.api.post(
            f"{path}/preview", headers=stack.admin_headers, json={"emails": [sample[0], "not an address"]}
        )
        assert (r.status_code, r.json()["error"]) == (422, "invalid_email"), r.text
        await wait_quiet(stack, account, within=10)
        after = (await _snapshot(stack, account), await _unisender_account(stack, account))
    # Nothing was sent or made: the same contacts and values, no Company field, no import row more.
    assert after == before
    assert "Company" not in {f["name"] for f in after[1]["fields"]}
    assert (await _mapping(stack, account))["version"] == 1


async def test_live_changes_flow_while_a_spec_change_re_derives_the_account(stack: Stack) -> None:
    # The edit must land while the walk runs, and the walk be longer than a live edit takes to reach Unisender.
    # About 3,700 addresses: a walk of about 2 s here, the edit through 1.5 s before it ended (15,000 addresses
    # before: the same check for half a minute of the suite's CPU).
    account = await connect_account(stack, contacts=3000, seed=8, custom_fields=True)
    ids = _field_ids(stack, account)
    acc = _kommo(stack, account)
    email_field = acc.field_by_code("EMAIL").id
    async with running_worker(stack.settings):
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)
        # A contact of one address that only it holds (its Name is then its own); the last one, which the walk
        # (by address id) reaches late.
        holders: dict[str, list[Any]] = {}
        for c in acc.contacts.values():
            mine = [str(v).strip().lower() for fid, vals in c.fields if fid == email_field for v, _ in vals]
            for email in mine:
                holders.setdefault(email, []).append((c, len(mine)))
        email, ((contact, _),) = next(
            (e, h) for e, h in reversed(holders.items()) if len(h) == 1 and h[0][1] == 1
        )
        scores = [v for fid, vals in contact.fields if fid == ids["Score"] for v, _ in vals]
        spec = {
            "fields": [
                {"source": "name", "target": "Name"},
                {"source": f"custom_field:{ids['Score']}", "target": "Score"},
            ],
            "lists": [{"list_id": account.list_id, "all": True}],
            "create_missing": True,
        }
        r = await stack.api.put(
            f"/integration/{account.account_id}/mapping", headers=stack.admin_headers, json=spec
        )
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        await _edit_name(stack, account, contact.id, "Edited Live")
        at_edit = (await stack.api.get(f"/sync/runs/{run_id}", headers=stack.admin_headers)).json()
        assert at_edit["status"] in ("pending", "running"), at_edit  # else this tests no overlap at all

        async def arrived() -> bool:
            r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/contacts/{email}")
            return bool(r.json()["fields"].get("Name") == "Edited Live")

        await wait_for(arrived, within=30, interval=0.05, what="the live edit reaches Unisender")
        seen_at = datetime.now(UTC)
        run = await _wait_run_done(stack, run_id)
        await wait_quiet(stack, account, within=60)
    walk = float(run["duration_s"])
    finished = datetime.fromisoformat(run["finished_at"].replace("Z", "+00:00"))
    late = (seen_at - finished).total_seconds()
    # The edit did not wait for the walk to end: it was seen in Unisender (polled every 50 ms) before the walk
    # ended (measured 1.5 s before; an edit that waited for the walk arrives after it).
    assert late < 0, f"the edit reached Unisender {late:.2f} s after the {walk:.2f} s walk ended"
    assert (run["status"], run["counters"]["changed"] > 0) == ("done", True), run
    # And the walk did not undo it: the address holds the edit and the new field.
    held = (await _snapshot(stack, account))["contacts"][email]["fields"]
    assert (held["Name"], held.get("Score", "")) == ("Edited Live", _number(scores[0]) if scores else "")


def _number(value: Any) -> str:
    """A Kommo numeric value as Unisender's number field holds it (computed here, not by app.sync.mapping)."""
    d = Decimal(str(value))
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


async def _edit_name(stack: Stack, account: Account, contact_id: int, name: str) -> None:
    r = await stack.kommo.patch(
        f"/_sandbox/accounts/{account.subdomain}/contacts", json=[{"id": contact_id, "name": name}]
    )
    assert r.status_code == 200, r.text
