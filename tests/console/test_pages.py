"""Every console page renders for a connected account (sandboxes behind it), and its actions go through the
services the API uses: a full sync started from the console is the API's run, the mapping preview is the
API's dry run, a saved mapping is the API's spec."""

from __future__ import annotations

import re

from tests.conftest import Stack, raw_sql
from tests.console.support import page_csrf, sign_in
from tests.support.e2e import connect_account


async def test_every_page_renders_for_a_connected_account(stack: Stack) -> None:
    account = await connect_account(stack, subdomain="acme", contacts=5, custom_fields=True)
    api = stack.api
    assert (await sign_in(api, stack.settings.admin_token.get_secret_value())).status_code == 303
    aid = account.account_id

    overview = await api.get("/console/accounts")
    assert overview.status_code == 200
    assert f'href="/console/accounts/{aid}">acme</a>' in overview.text
    assert re.search(r'class="badge (ok|warn|bad)"', overview.text)
    assert "connected" in overview.text

    detail = await api.get(f"/console/accounts/{aid}")
    assert detail.status_code == 200
    for section in ("connection", "runs", "rejected", "events", "activity", "campaigns"):
        assert f'id="{section}"' in detail.text, section
    assert f"/auth?id={aid}&amp;sig=" in detail.text  # the re-auth link, escaped in the attribute
    assert "Re-connect Unisender" in detail.text

    mapping = await api.get(f"/console/accounts/{aid}/mapping")
    assert mapping.status_code == 200
    # The choices come live from both sandboxes: a Kommo field and the Unisender field the spec writes.
    assert "custom_field:PHONE" in mapping.text
    assert '<option value="Name" selected>' in mapping.text

    unknown = await api.get("/console/accounts/999999")
    assert unknown.status_code == 404
    assert "unknown_account" in unknown.text

    css = await api.get("/console/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (await api.get("/console/static/..%2Fauth.py")).status_code == 404


async def test_console_actions_use_the_api_services(stack: Stack) -> None:
    account = await connect_account(stack, subdomain="acme", contacts=3)
    api, aid = stack.api, account.account_id
    await sign_in(api, stack.settings.admin_token.get_secret_value())
    csrf = await page_csrf(api, f"/console/accounts/{aid}")

    started = await api.post(f"/console/accounts/{aid}/sync", data={"csrf_token": csrf})
    assert started.status_code == 303
    assert started.headers["location"] == f"/console/accounts/{aid}?notice=sync_started#runs"
    runs = (await api.get("/sync/runs", params={"account_id": aid}, headers=stack.admin_headers)).json()[
        "runs"
    ]
    assert [r["kind"] for r in runs] == ["full"]
    run_id = runs[0]["run_id"]
    progress = await api.get(f"/console/runs/{run_id}.json")
    assert progress.status_code == 200
    assert progress.json()["status"] in ("pending", "running", "done")
    assert set(progress.json()["counters"]) == {"fetched", "changed", "pushed", "rejected", "failed"}
    page = await api.get(f"/console/accounts/{aid}?notice=sync_started")
    assert f'data-poll="/console/runs/{run_id}.json"' in page.text
    assert "Full sync started." in page.text
    again = await api.post(f"/console/accounts/{aid}/sync", data={"csrf_token": csrf})
    assert again.headers["location"].endswith("notice=sync_running#runs")

    form = {
        "csrf_token": csrf,
        "field-0-source": "name",
        "field-0-target": "Name",
        "field-0-direction": "to_unisender",
        "field-1-source": "custom_field:PHONE",
        "field-1-target": "phone",
        "list-0-list_id": str(account.list_id),
        "list-0-segment": "all",
        "list-1-new_title": "VIP",
        "list-1-segment": "tag",
        "list-1-tags": "vip",
        "activity-opened": "1",
    }
    preview = await api.post(f"/console/accounts/{aid}/mapping/preview", data=form)
    assert preview.status_code == 200, preview.text
    assert 'id="preview-summary"' in preview.text
    assert "New Unisender lists: VIP" in preview.text
    assert 'id="save-button"' in preview.text
    version_before = (await api.get(f"/integration/{aid}/mapping", headers=stack.admin_headers)).json()[
        "version"
    ]

    bad = await api.post(
        f"/console/accounts/{aid}/mapping/preview", data=form | {"field-0-source": "custom_field:999999"}
    )
    assert bad.status_code == 422
    assert "unknown_kommo_field" in bad.text
    assert 'id="save-button"' not in bad.text  # no save without a preview of these very rows

    saved = await api.post(f"/console/accounts/{aid}/mapping", data=form)
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"/console/accounts/{aid}?notice=mapping_saved#runs"
    spec = (await api.get(f"/integration/{aid}/mapping", headers=stack.admin_headers)).json()
    assert spec["version"] == version_before + 1
    assert [f["target"] for f in spec["fields"]] == ["Name", "phone"]
    assert [(lst["title"], lst["tag"]) for lst in spec["lists"]][1] == ("VIP", "vip")
    assert spec["activity"] == ["opened"]
    assert stack.settings.database_url
    kinds = await raw_sql(stack.settings.database_url, "SELECT kind FROM sync_run WHERE account_id = $1", aid)
    assert sorted(r["kind"] for r in kinds) == ["full", "remap"]

    refused = await api.post(
        f"/console/accounts/{aid}/mapping", data={k: v for k, v in form.items() if k != "csrf_token"}
    )
    assert refused.status_code == 403
    after = (await api.get(f"/integration/{aid}/mapping", headers=stack.admin_headers)).json()
    assert after["version"] == spec["version"]


async def _failed_event(url: str, account_id: int, key: str) -> int:
    rows = await raw_sql(
        url,
        "INSERT INTO webhook_event (account_id, source, dedupe_key, body, status, attempts, last_error, received_at)"
        " VALUES ($1, 'kommo', $2, 'contacts[update][0][id]=1', 'failed', 5, 'boom: could not apply', now())"
        " RETURNING id",
        account_id,
        key,
    )
    return int(rows[0]["id"])


async def test_dead_letters_are_listed_replayed_and_discarded(stack: Stack) -> None:
    account = await connect_account(stack, subdomain="acme")
    api, aid = stack.api, account.account_id
    url = stack.settings.database_url
    assert url
    first = await _failed_event(url, aid, "dl-1")
    second = await _failed_event(url, aid, "dl-2")
    await sign_in(api, stack.settings.admin_token.get_secret_value())

    overview = await api.get("/console/accounts")
    assert '<td data-label="Dead letters">2</td>' in overview.text
    assert '<span class="badge bad"' in overview.text
    page = await api.get(f"/console/accounts/{aid}")
    assert f'data-dead-letter="event:{first}"' in page.text
    assert "boom: could not apply" in page.text
    csrf = await page_csrf(api, f"/console/accounts/{aid}")

    refused = await api.post(f"/console/accounts/{aid}/dead-letters/discard", data={"ids": f"event:{first}"})
    assert refused.status_code == 403
    done = await api.post(
        f"/console/accounts/{aid}/dead-letters/discard", data={"csrf_token": csrf, "ids": f"event:{first}"}
    )
    assert done.headers["location"] == f"/console/accounts/{aid}?notice=discarded#dead-letters"
    done = await api.post(
        f"/console/accounts/{aid}/dead-letters/replay", data={"csrf_token": csrf, "ids": f"event:{second}"}
    )
    assert done.status_code == 303
    states = await raw_sql(url, "SELECT id, status FROM webhook_event ORDER BY id")
    assert [(r["id"], r["status"]) for r in states] == [(first, "discarded"), (second, "pending")]
    actors = await raw_sql(url, "SELECT operation, actor FROM dead_letter_action ORDER BY id")
    assert [(r["operation"], r["actor"]) for r in actors] == [("discard", "console"), ("replay", "console")]
    page = await api.get(f"/console/accounts/{aid}?notice=replayed")
    assert "data-dead-letter=" not in page.text
    assert "Dead letter sent again." in page.text
