"""``crm_writes.written_apart`` (one function, a stand-in CRM client): a write refused without naming the item
at fault is sent again in halves until the refused contact is told apart; the others are written."""

from __future__ import annotations

from collections.abc import Sequence

from app.connectors.base import CrmFieldWrite, FieldsWritten
from app.connectors.kommo.exceptions import KommoRequestError
from app.sync.crm_writes import written_apart


class _Crm:
    """Refuses any request carrying contact ``bad`` with a 400 that names no item."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.calls: list[int] = []

    async def write_contact_fields(self, writes: Sequence[CrmFieldWrite]) -> FieldsWritten:
        self.calls.append(len(writes))
        if any(w.contact_id == self.bad for w in writes):
            raise KommoRequestError("Bad Request", status_code=400)
        return FieldsWritten({w.key: 100 for w in writes}, {})


def _writes(n: int) -> list[CrmFieldWrite]:
    return [CrmFieldWrite(contact_id=i, key=f"c{i}", attributes=(("name", f"N{i}"),)) for i in range(n)]


async def test_the_refused_contact_is_told_apart_and_the_others_are_written() -> None:
    crm = _Crm(bad=13)
    answer = await written_apart(crm, _writes(40))  # type: ignore[arg-type]
    assert set(answer.refused) == {"c13"}
    assert "KommoRequestError" in answer.refused["c13"]
    assert set(answer.written) == {f"c{i}" for i in range(40)} - {"c13"}
    assert len(crm.calls) <= 2 * 6 + 1  # halving: a few calls per level, not one per contact


async def test_a_set_without_the_refused_contact_goes_in_one_call() -> None:
    crm = _Crm(bad=-1)
    answer = await written_apart(crm, _writes(40))  # type: ignore[arg-type]
    assert (len(answer.written), answer.refused, crm.calls) == (40, {}, [40])
