"""Contacts the service creates, against the Kommo sandbox over real HTTP on loopback: the look-up by address
(Kommo's ``query`` is a substring search, so only exact addresses count) and the create call (address, names,
tags, text fields; a refused item set aside, the others created)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.connectors.base import CrmFieldValue, CrmNewContact
from app.connectors.kommo.client import KommoClient
from app.context import kommo_budget, tls_context
from app.servers import serve_in_background
from sandbox.kommo import KommoSandboxConfig, create_kommo_sandbox

SUB = "acme"


class Kommo:
    def __init__(self, url: str, http: httpx.AsyncClient, app: Any) -> None:
        self.url, self.http, self.app, self.token = url, http, app, ""

    async def ctl(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.http.request(method, f"{self.url}/_sandbox{path}", json=body)
        assert resp.is_success, (path, resp.status_code, resp.text)
        return resp.json()

    def client(self) -> KommoClient:
        return KommoClient(
            self.http, base_url=f"{self.url}/{SUB}", access_token=self.token, limiter=kommo_budget(7)
        )

    async def contact(self, name: str, *emails: str) -> int:
        item = {
            "name": name,
            "custom_fields_values": [{"field_code": "EMAIL", "values": [{"value": e} for e in emails]}],
        }
        made = await self.ctl("POST", f"/accounts/{SUB}/contacts", [item])
        cid: int = made["_embedded"]["contacts"][0]["id"]
        return cid

    def stored(self, cid: int) -> dict[str, Any]:
        acc = self.app.state.kommo.accounts[SUB]
        c = acc.contacts[cid]
        fields = {fid: [v for v, _ in vals] for fid, vals in c.fields}
        email_id = acc.field_by_code("EMAIL").id
        return {
            "name": c.name,
            "first_name": c.first_name,
            "emails": fields.pop(email_id, []),
            "fields": fields,
            "tags": sorted(acc.tags[t].name for t in c.tags),
        }


@pytest.fixture
async def kommo() -> AsyncIterator[Kommo]:
    app = create_kommo_sandbox(KommoSandboxConfig(retry_after=1))
    async with (
        serve_in_background(app) as url,
        httpx.AsyncClient(verify=tls_context(), timeout=httpx.Timeout(10.0, connect=5.0)) as http,
    ):
        sandbox = Kommo(url, http, app)
        await sandbox.ctl("POST", "/accounts", {"subdomain": SUB})
        integ = await sandbox.ctl("POST", "/integrations", {"redirect_uri": "https://x.example/cb"})
        tokens = await sandbox.ctl("POST", "/tokens", {"client_id": integ["client_id"], "subdomain": SUB})
        sandbox.token = tokens["access_token"]
        yield sandbox


async def test_the_look_up_finds_exact_addresses_only(kommo: Kommo) -> None:
    ann = await kommo.contact("Ann", "other@x.io", "Ann@X.io")
    await kommo.contact("Joann", "joann@x.io")  # contains ann@x.io: Kommo's search finds it too
    await kommo.contact("ann@x.io fan")  # the address in the name only
    gone = await kommo.contact("Gone", "ann@x.io")
    await kommo.ctl("POST", f"/accounts/{SUB}/contacts/{gone}/delete")
    client = kommo.client()
    assert await client.find_contact_ids_by_email("ann@x.io") == [ann]
    assert await client.find_contact_ids_by_email(" ANN@x.io") == [ann]
    assert await client.find_contact_ids_by_email("nobody@x.io") == []  # Kommo answers 204


async def test_new_contacts_carry_address_names_tags_and_text_fields(kommo: Kommo) -> None:
    city = await kommo.ctl("POST", f"/accounts/{SUB}/custom_fields", {"name": "City", "type": "text"})
    client = kommo.client()
    new = [
        CrmNewContact("ann@x.io", name="Ann Lee", tags=("newsletter", "promo", "newsletter")),
        CrmNewContact("bob@x.io", first_name="Bob", fields=(CrmFieldValue(city["id"], ("Oslo",)),)),
        CrmNewContact("cid@x.io"),
    ]
    result = await client.create_contacts(new)
    assert sorted(result.created) == ["ann@x.io", "bob@x.io", "cid@x.io"]
    assert not result.refused
    ann, bob, cid = (kommo.stored(result.created[e]) for e in ("ann@x.io", "bob@x.io", "cid@x.io"))
    assert (ann["name"], ann["emails"], ann["tags"]) == ("Ann Lee", ["ann@x.io"], ["newsletter", "promo"])
    assert (bob["name"], bob["first_name"], bob["fields"]) == ("Bob", "Bob", {city["id"]: ["Oslo"]})
    assert (cid["name"], cid["emails"], cid["tags"]) == ("", ["cid@x.io"], [])
    # Kommo itself does not stop a second contact for an address: the look-up is the caller's guard.
    again = await client.create_contacts([CrmNewContact("cid@x.io")])
    assert again.created["cid@x.io"] != result.created["cid@x.io"]
    assert len(await client.find_contact_ids_by_email("cid@x.io")) == 2


async def test_a_refused_contact_is_reported_and_the_others_created(kommo: Kommo) -> None:
    client = kommo.client()
    result = await client.create_contacts(
        [
            CrmNewContact("ok@x.io"),
            CrmNewContact("bad@x.io", fields=(CrmFieldValue(987654, ("x",)),)),  # no such field
            CrmNewContact("ok2@x.io"),
        ]
    )
    assert sorted(result.created) == ["ok2@x.io", "ok@x.io"]
    assert list(result.refused) == ["bad@x.io"]
    assert await client.find_contact_ids_by_email("bad@x.io") == []
    with pytest.raises(ValueError, match="one new contact per address"):
        await client.create_contacts([CrmNewContact("a@x.io"), CrmNewContact("a@x.io")])
