"""The mapping engine end to end: a spec of ten fields (a join, a phone, every kind of conversion) and three
lists (everyone, a tag, any of two tags) over 1,000 seeded contacts with values in every custom-field type;
a full sync; 300 random edits (tags added and removed, fields cleared, options changed, unmapped fields
edited); Unisender must hold exactly what Kommo implies, field by field and list by list. Then a spec change
is previewed and saved: the run re-derives every address and pushes exactly the differences the preview
predicted, per field and per list.

The expected state is computed here from the Kommo sandbox's own records, independently of
``app.sync.mapping``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from app.sync.mapping import contact_emails
from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, wait_quiet
from tests.support.mapping import mapped_spec

pytestmark = pytest.mark.slow

Expected = dict[str, dict[str, Any]]  # address → {"fields": {name: value}, "phone": str, "lists": set[int]}


def _kommo(stack: Stack, account: Account) -> Any:
    return stack.kommo_app.state.kommo.accounts[account.subdomain]


def _field_ids(stack: Stack, account: Account) -> dict[str, int]:
    return {f.name: f.id for f in _kommo(stack, account).fields.values()}


def _values(contact: Any, field_id: int) -> list[Any]:
    return [value for fid, vals in contact.fields if fid == field_id for value, _enum in vals]


def _number(value: Any) -> str:
    d = Decimal(str(value))
    return str(int(d)) if d == d.to_integral_value() else format(d.normalize(), "f")


def _day(value: Any) -> str:
    return datetime.fromtimestamp(int(value), UTC).strftime("%Y-%m-%d")


def _conversions(stack: Stack, account: Account) -> dict[str, Callable[[Any], str]]:
    """Unisender field → its value for a Kommo contact (the first spec of the test)."""
    ids = _field_ids(stack, account)
    users = {u.id: u.name for u in _kommo(stack, account).users}

    def first(name: str) -> Callable[[Any], str]:
        return lambda c: str((_values(c, ids[name]) or [""])[0])

    return {
        "Name": lambda c: c.name,
        "FullName": lambda c: " ".join(p for p in (c.first_name, c.last_name) if p),
        "Company": first("Company"),
        "Score": lambda c: _number(_values(c, ids["Score"])[0]) if _values(c, ids["Score"]) else "",
        "Newsletter": lambda c: "1" if (_values(c, ids["Newsletter"]) or [False])[0] in (True, "1") else "0",
        "Plan": first("Plan"),
        "Interests": lambda c: ", ".join(str(v) for v in _values(c, ids["Interests"])),
        "Birthday": lambda c: _day(_values(c, ids["Birthday"])[0]) if _values(c, ids["Birthday"]) else "",
        "Manager": lambda c: users.get(c.responsible_user_id, ""),
    }


def expected_state(
    stack: Stack,
    account: Account,
    conversions: dict[str, Callable[[Any], str]],
    lists: dict[str, int],
    *,
    segment: str = "vip",
) -> Expected:
    """What Unisender should hold: per address, its owner's (the latest updated live holder) mapped fields,
    its first address's phone and the lists its tags select (``segment``'s list, and "warm" for a lead or a
    customer)."""
    acc = _kommo(stack, account)
    email_field = acc.field_by_code("EMAIL").id
    phone_field = acc.field_by_code("PHONE").id
    owners: dict[str, Any] = {}
    for c in acc.contacts.values():
        if c.deleted:
            continue
        for email in contact_emails([str(v) for v in _values(c, email_field)]):
            cur = owners.get(email)
            if cur is None or (c.updated_at, c.id) > (cur.updated_at, cur.id):
                owners[email] = c
    out: Expected = {}
    for email, c in owners.items():
        tags = {acc.tags[t].name.casefold() for t in c.tags if t in acc.tags}
        mine = sorted(contact_emails([str(v) for v in _values(c, email_field)]))
        phones = _values(c, phone_field)
        in_lists = {account.list_id}
        if segment in tags:
            in_lists.add(lists[segment])
        if tags & {"lead", "customer"}:
            in_lists.add(lists["warm"])
        out[email] = {
            "fields": {name: fn(c) for name, fn in conversions.items()},
            "phone": "+" + "".join(ch for ch in str(phones[0]) if ch.isdigit())
            if phones and mine[0] == email
            else "",
            "lists": in_lists,
        }
    return out


async def _snapshot(stack: Stack, account: Account) -> dict[str, dict[str, Any]]:
    r = await stack.unisender.get(f"/_sandbox/accounts/{account.api_key}/snapshot")
    assert r.status_code == 200, r.text
    contacts: dict[str, dict[str, Any]] = r.json()["contacts"]
    return contacts


async def assert_unisender_exact(
    stack: Stack, account: Account, expected: Expected, managed: set[int]
) -> None:
    """Unisender holds exactly ``expected``: the same addresses; each managed field equal ("" = absent); the
    phone; active in exactly the expected lists among ``managed``."""
    actual = await _snapshot(stack, account)
    rejected = await raw_sql(
        stack.settings.database_url or "", "SELECT email, reject_code FROM outbox WHERE status='rejected'"
    )
    refused = {r["email"]: r["reject_code"] for r in rejected}
    assert not {e: c for e, c in refused.items() if c != "role_address"}, refused
    want = {e: v for e, v in expected.items() if e not in refused}
    assert sorted(set(want) - set(actual))[:5] == [], "addresses missing in Unisender"
    assert sorted(set(actual) - set(want))[:5] == [], "addresses in Unisender that Kommo does not hold"
    wrong: list[tuple[str, str, object, object]] = []
    for email, exp in want.items():
        got = actual[email]
        for name, value in exp["fields"].items():
            if got["fields"].get(name, "") != value:
                wrong.append((email, name, got["fields"].get(name, ""), value))
        if exp["phone"] and got["phone"] != exp["phone"]:
            wrong.append((email, "phone", got["phone"], exp["phone"]))
        active = {int(k) for k, m in got["lists"].items() if m["status"] == "active"} & managed
        if active != exp["lists"]:
            wrong.append((email, "lists", sorted(active), sorted(exp["lists"])))
    assert not wrong, f"{len(wrong)} differences, e.g. {wrong[:5]}"


async def random_edits(stack: Stack, account: Account, n: int, rng: random.Random) -> dict[str, int]:
    """Edits that matter to the spec (and some that do not), through the Kommo sandbox, which fires webhooks."""
    acc = _kommo(stack, account)
    ids = _field_ids(stack, account)
    plan = acc.fields[ids["Plan"]]
    interests = acc.fields[ids["Interests"]]
    kinds = dict.fromkeys(
        ("tag_add", "tag_remove", "clear", "option", "multiselect", "rename", "score", "unmapped"), 0
    )
    live = [c.id for c in acc.contacts.values() if not c.deleted]
    for _ in range(n):
        cid = rng.choice(live)
        kind = rng.choice(list(kinds))
        kinds[kind] += 1
        item: dict[str, Any] = {"id": cid}
        if kind == "tag_add":
            item["tags_to_add"] = [{"name": rng.choice(["vip", "lead", "customer", "other"])}]
        elif kind == "tag_remove":
            item["tags_to_delete"] = [{"name": rng.choice(["vip", "lead", "customer"])}]
        elif kind == "clear":
            item["custom_fields_values"] = [
                {"field_id": ids[rng.choice(["Company", "Plan", "Birthday"])], "values": None}
            ]
        elif kind == "option":
            item["custom_fields_values"] = [
                {"field_id": plan.id, "values": [{"enum_id": rng.choice(plan.enums).id}]}
            ]
        elif kind == "multiselect":
            chosen = rng.sample(interests.enums, rng.randint(1, 3))
            item["custom_fields_values"] = [
                {"field_id": interests.id, "values": [{"enum_id": e.id} for e in chosen]}
            ]
        elif kind == "rename":
            item["name"] = f"Renamed {rng.randrange(10**6)}"
        elif kind == "score":
            item["custom_fields_values"] = [
                {"field_id": ids["Score"], "values": [{"value": str(rng.randint(0, 99))}]}
            ]
        else:
            item["custom_fields_values"] = [
                {
                    "field_id": ids["Website"],
                    "values": [{"value": f"https://w{rng.randrange(999)}.example.com"}],
                }
            ]
        r = await stack.kommo.patch(f"/_sandbox/accounts/{account.subdomain}/contacts", json=[item])
        assert r.status_code == 200, r.text
    return kinds


def _changed(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], managed: set[int]
) -> dict[str, Any]:
    """Per field and list, how many addresses changed between two snapshots of Unisender."""
    fields: dict[str, int] = {}
    join: dict[str, int] = {}
    leave: dict[str, int] = {}
    changed = 0
    for email, now in after.items():
        old = before.get(email, {"fields": {}, "lists": {}, "phone": None})
        names = set(now["fields"]) | set(old["fields"])
        diff = {n for n in names if now["fields"].get(n, "") != old["fields"].get(n, "")}
        for n in diff:
            fields[n] = fields.get(n, 0) + 1
        was = {int(k) for k, m in old["lists"].items() if m["status"] == "active"} & managed
        is_ = {int(k) for k, m in now["lists"].items() if m["status"] == "active"} & managed
        for k in is_ - was:
            join[str(k)] = join.get(str(k), 0) + 1
        for k in was - is_:
            leave[str(k)] = leave.get(str(k), 0) + 1
        changed += bool(diff or is_ != was)
    return {"fields": fields, "join": join, "leave": leave, "changed": changed}


async def test_a_mapped_account_mirrors_fields_and_lists_and_a_spec_change_pushes_only_what_it_changes(
    stack: Stack,
) -> None:
    account = await connect_account(stack, contacts=1000, seed=11, custom_fields=True)
    ids = _field_ids(stack, account)
    api, headers = stack.api, stack.admin_headers
    mapping = f"/integration/{account.account_id}/mapping"
    async with running_worker(stack.settings):
        r = await api.put(mapping, headers=headers, json=mapped_spec(account.list_id, ids))
        assert r.status_code == 200, r.text
        saved = r.json()
        assert (saved["version"], len(saved["fields"]), len(saved["lists"])) == (2, 10, 3)
        assert saved["run_id"]
        lists = {rule["tag"] or "all": rule["list_id"] for rule in saved["lists"] if not rule["tags_any"]}
        lists["warm"] = next(rule["list_id"] for rule in saved["lists"] if rule["tags_any"])
        managed = {account.list_id, lists["vip"], lists["warm"]}
        fields = (
            await api.get("/unisender/fields", headers=headers, params={"id": account.account_id})
        ).json()
        types = {f["name"]: f["type"] for f in fields}
        assert (types["Score"], types["Newsletter"], types["Birthday"], types["Plan"]) == (
            "number",
            "bool",
            "date",
            "string",
        )

        r = await api.post("/sync/contacts", headers=headers, json={"id": account.account_id})
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=120)
        conversions = _conversions(stack, account)
        await assert_unisender_exact(
            stack, account, expected_state(stack, account, conversions, lists), managed
        )

        kinds = await random_edits(stack, account, 300, random.Random(23))
        assert min(kinds.values()) > 0, kinds
        await wait_quiet(stack, account, within=120)
        await assert_unisender_exact(
            stack, account, expected_state(stack, account, conversions, lists), managed
        )

        # A spec change: Plan now comes from Channel (a radiobutton), Company is no longer mapped, the VIP
        # segment is "gold" instead of "vip" (a new list).
        changed = mapped_spec(account.list_id, ids, segment=("Gold", "vip"))
        changed["fields"][5] = {"source": f"custom_field:{ids['Channel']}", "target": "Plan"}
        del changed["fields"][2]
        changed["lists"][1] = {"list_title": "Gold", "tag": "gold"}
        for cid in list(_kommo(stack, account).contacts)[:40]:
            await stack.kommo.patch(
                f"/_sandbox/accounts/{account.subdomain}/contacts",
                json=[{"id": cid, "tags_to_add": [{"name": "gold"}]}],
            )
        await wait_quiet(stack, account, within=60)
        preview = await api.post(f"{mapping}/preview", headers=headers, json={"spec": changed, "limit": 20})
        assert preview.status_code == 200, preview.text
        predicted = preview.json()
        assert (len(predicted["addresses"]), predicted["new_lists"]) == (20, {"-1": "Gold"})
        for sampled in predicted["addresses"]:  # live reads agree with what we recorded for the sample
            held_plan = sampled["holds"]["fields"].get("Plan", "")
            wanted_plan = sampled["would_send"]["fields"]["Plan"]
            assert (sampled["differences"]["fields"].get("Plan") is not None) == (held_plan != wanted_plan)
        before = await _snapshot(stack, account)
        started = time.time()
        r = await api.put(mapping, headers=headers, json=changed)
        assert r.status_code == 200, r.text
        run_id = r.json()["run_id"]
        gold = next(rule["list_id"] for rule in r.json()["lists"] if rule["tag"] == "gold")
        await wait_quiet(stack, account, within=120)
        run = (await api.get(f"/sync/runs/{run_id}", headers=headers)).json()
        assert (run["kind"], run["status"]) == ("remap", "done"), run
        after = await _snapshot(stack, account)
        seen = _changed(before, after, managed | {gold})
        totals = predicted["totals"]
        assert totals["would_change"] == run["counters"]["changed"] == seen["changed"] > 0, (
            totals,
            run,
            seen,
        )
        assert totals["fields"] == seen["fields"], (totals["fields"], seen["fields"])
        assert totals["leave"] == seen["leave"], (totals["leave"], seen["leave"])
        joined = {(str(gold) if k == "-1" else k): v for k, v in totals["join"].items()}
        assert joined == seen["join"], (totals["join"], seen["join"])
        rows = await raw_sql(
            stack.settings.database_url or "",
            "SELECT count(*) AS n FROM outbox WHERE pushed_at >= to_timestamp($1)",
            started,
        )
        assert rows[0]["n"] == totals["would_change"]  # nothing else was pushed
        conversions = _conversions(stack, account)
        conversions["Plan"] = lambda c: str((_values(c, ids["Channel"]) or [""])[0])
        del conversions["Company"]
        expected = expected_state(
            stack, account, conversions, {"gold": gold, "warm": lists["warm"]}, segment="gold"
        )
        await assert_unisender_exact(stack, account, expected, {account.list_id, gold, lists["warm"]})
