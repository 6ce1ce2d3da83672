"""What the dead-letter service takes and answers (the API, the CLI and the console show these as they are)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from app.db.states import DeadLetterKind, DeadLetterOperation


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters an action is for: listed ``ids`` (``"outbox:123"``, or ``"123"`` with ``kind``), or
    ``all`` of them (of ``kind`` when given)."""

    ids: tuple[str, ...] = ()
    all: bool = False
    kind: DeadLetterKind | str | None = None

    @classmethod
    def of_ids(cls, ids: Sequence[str | int], kind: DeadLetterKind | str | None = None) -> Selection:
        return cls(ids=tuple(str(i) for i in ids), kind=kind)

    @classmethod
    def everything(cls, kind: DeadLetterKind | str | None = None) -> Selection:
        return cls(all=True, kind=kind)


class DeadLetter(BaseModel):
    """A row that failed for good, with why and what the provider answered."""

    id: str = Field(description="<kind>:<row id>, e.g. outbox:123; what replay and discard take")
    kind: DeadLetterKind
    row_id: int
    status: str = Field(description="The row's dead state: failed, unrecognised, rejected or dead")
    reason: str = Field(description="Why it is dead, in words")
    error: str | None = Field(description="The last error: the provider's answer for a row it refused")
    code: str | None = Field(description="The provider's code for a refused row (outbox), else null")
    attempts: int | None = Field(
        description="Tries of its last run (null where its table does not count them)"
    )
    at: datetime = Field(description="When it failed (for an unrecognised event: when it arrived)")
    email: str | None = None
    kommo_id: int | None = None
    detail: str | None = Field(None, description="event: its source; crm_write: the field written")


class DeadLetterPage(BaseModel):
    account_id: int
    kind: DeadLetterKind | None
    page: int
    per_page: int
    total: int = Field(description="Dead letters of the kind asked for (every kind when none)")
    pages: int
    counts: dict[str, int] = Field(description="Dead letters per kind (every kind, whatever was asked)")
    items: list[DeadLetter] = Field(description="Newest first")


class KindCounts(BaseModel):
    affected: int
    skipped: int


class ActionResult(BaseModel):
    """What a replay or discard did; ``action_id`` is its record."""

    action_id: int
    account_id: int
    operation: DeadLetterOperation
    actor: str
    at: datetime
    kind: DeadLetterKind | None
    selected_all: bool
    requested: int = Field(description="Dead letters named (ids) or matched (all)")
    affected: int = Field(description="Replayed, or discarded")
    skipped: int = Field(
        description="Named but no longer dead (replayed before, recovered, discarded): left alone"
    )
    more: bool = Field(description="all: more dead letters than one action takes are left; act again")
    by_kind: dict[str, KindCounts]


class ActionView(BaseModel):
    """The record of one replay or discard."""

    id: int
    operation: DeadLetterOperation
    actor: str
    at: datetime
    kind: DeadLetterKind | None
    selected_all: bool
    requested: int
    affected: int
    skipped: int
    items: dict[str, list[int]] = Field(description="Per kind, the ids of the rows it changed")


class ActionPage(BaseModel):
    account_id: int
    page: int
    per_page: int
    total: int
    actions: list[ActionView] = Field(description="Newest first")
