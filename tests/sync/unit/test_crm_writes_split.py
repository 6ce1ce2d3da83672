"""``crm_writes.written_apart`` (one function, a stand-in CRM client): a write refused without naming the item
at fault is sent again in halves until the refused contact is told apart; the others are written."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from app.connectors.base import CrmFieldWrite, FieldsWritten
from app.connectors.kommo.exceptions import KommoRequestError
from app.sync.crm_writes import SPLIT_CALLS, written_apart


class _Crm:
    """Refuses any request carrying one of the ``bad`` contacts with ``status``, naming no item."""

    def __init__(self, *bad: int, status: int = 400) -> None:
        self.bad, self.status = set(bad), status
        self.calls: list[int] = []

    async def write_contact_fields(self, writes: Sequence[CrmFieldWrite]) -> FieldsWritten:
        self.calls.append(len(writes))
        if any(w.contact_id in self.bad for w in writes):
            raise KommoRequestError("Bad Request", status_code=self.status)
        return FieldsWritten({w.key: 100 for w in writes}, {})


def _writes(n: int) -> list[CrmFieldWrite]:
    return [CrmFieldWrite(contact_id=i, key=f"c{i}", attributes=(("name", f"N{i}"),)) for i in range(n)]


async def test_the_refused_contact_is_told_apart_and_the_others_are_written() -> None:
    crm = _Crm(13)
    answer = await written_apart(crm, _writes(40))  # type: ignore[arg-type]
    assert set(answer.refused) == {"c13"}
    assert "KommoRequestError" in answer.refused["c13"]
    assert set(answer.written) == {f"c{i}" for i in range(40)} - {"c13"}
    assert len(crm.calls) <= 2 * 6 + 1  # halving: a few calls per level, not one per contact


async def test_a_set_without_the_refused_contact_goes_in_one_call() -> None:
    crm = _Crm()
    answer = await written_apart(crm, _writes(40))  # type: ignore[arg-type]
    assert (len(answer.written), answer.refused, crm.calls) == (40, {}, [40])


@pytest.mark.parametrize(
    ("crm", "why"),
    [
        (_Crm(*range(40)), "every contact refused: the request's fault"),
        (_Crm(13, status=409), "not a refusal of the data"),
        (_Crm(*range(0, 40, 3)), "too many apart to narrow within the budget"),
    ],
)
async def test_refusals_that_are_no_single_items_are_raised_for_the_job(crm: _Crm, why: str) -> None:
    with pytest.raises(KommoRequestError):
        await written_apart(crm, _writes(40))  # type: ignore[arg-type]
    assert len(crm.calls) <= 1 + SPLIT_CALLS, why
