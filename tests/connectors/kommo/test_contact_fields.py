"""``KommoClient.write_contact_fields`` against the Kommo sandbox over loopback HTTP: each type's value shape,
attributes, clearing, and a refused contact set aside while the others are written."""

from __future__ import annotations

from typing import Any

from app.connectors.base import CrmFieldWrite
from tests.connectors.kommo.test_batch_writes import SUB, Kommo, kommo

__all__ = ["kommo"]  # the sandbox fixture, shared with the batch-write tests


async def _field(kommo: Kommo, name: str, type_: str, enums: list[str] | None = None) -> int:
    body: dict[str, Any] = {"name": name, "type": type_} | ({"enums": enums} if enums else {})
    made = await kommo.ctl("POST", f"/accounts/{SUB}/custom_fields", body)
    return int(made["id"])


def _values(contact: dict[str, Any]) -> dict[int, list[Any]]:
    return {
        f["field_id"]: [v["value"] for v in f["values"]] for f in contact.get("custom_fields_values") or []
    }


async def test_values_of_each_type_are_written_and_a_refused_contact_is_set_aside(kommo: Kommo) -> None:
    plan = await _field(kommo, "Plan", "text")
    score = await _field(kommo, "Score", "numeric")
    vip = await _field(kommo, "VIP", "checkbox")
    born = await _field(kommo, "Born", "birthday")
    tier = await _field(kommo, "Tier", "select", ["Gold", "Silver"])
    a, b, gone = await kommo.contacts(3)
    await kommo.ctl("POST", f"/accounts/{SUB}/contacts/{gone}/delete")
    writes = [
        CrmFieldWrite(a, "a", (("first_name", "Ann"),), ((plan, "gold"), (score, 12.5), (vip, True))),
        CrmFieldWrite(gone, "gone", (), ((plan, "x"),)),
        CrmFieldWrite(b, "b", (("name", "Bea B"),), ((born, 946684800), (tier, "Silver"))),
    ]
    await kommo.ctl("DELETE", "/stats")

    out = await kommo.client().write_contact_fields(writes)

    assert set(out.written) == {"a", "b"}
    assert all(at > 0 for at in out.written.values())
    assert set(out.refused) == {"gone"}
    contact_a = await kommo.ctl("GET", f"/accounts/{SUB}/contacts/{a}")
    contact_b = await kommo.ctl("GET", f"/accounts/{SUB}/contacts/{b}")
    assert contact_a["first_name"] == "Ann"
    assert _values(contact_a) == {plan: ["gold"], score: ["12.5"], vip: [True]}
    assert contact_b["name"] == "Bea B"
    assert _values(contact_b)[tier] == ["Silver"]
    assert _values(contact_b)[born] in ([946684800], ["946684800"])
    assert sum((await kommo.calls("PATCH /api/v4/contacts")).values()) == 2  # refused once, then the rest

    cleared = await kommo.client().write_contact_fields([CrmFieldWrite(a, "a", (), ((plan, None),))])
    assert set(cleared.written) == {"a"}
    assert plan not in _values(await kommo.ctl("GET", f"/accounts/{SUB}/contacts/{a}"))
