"""What a dead-letter request can get wrong: each refusal changes nothing and says which rule it broke."""

from __future__ import annotations

from collections.abc import Sequence

from app.errors import NotFound, Unprocessable


class UnknownKind(Unprocessable):
    code = "unknown_kind"

    def __init__(self, kind: str, known: Sequence[str]) -> None:
        super().__init__(
            f"Unknown dead-letter kind {kind!r}; known: {', '.join(known)}.", extra={"kinds": list(known)}
        )


class NothingSelected(Unprocessable):
    code = "nothing_selected"

    def __init__(self) -> None:
        super().__init__('Name the dead letters: {"ids": [...]} or {"all": true} (with an optional "kind").')


class AmbiguousSelection(Unprocessable):
    code = "ambiguous_selection"

    def __init__(self) -> None:
        super().__init__('Send either "ids" or "all": true, not both.')


class InvalidId(Unprocessable):
    code = "invalid_id"

    def __init__(self, value: str, why: str) -> None:
        super().__init__(f"Invalid dead-letter id {value!r}: {why}.", extra={"id": value[:100]})


class TooManyIds(Unprocessable):
    code = "too_many_ids"

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"{count} ids in one request; at most {limit} (or select them with all and kind).",
            extra={"limit": limit},
        )


class InvalidActor(Unprocessable):
    code = "invalid_actor"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The actor must be 1-{limit} printable characters.")


class UnknownDeadLetter(NotFound):
    """Ids this account has no row for (they may belong to another account: that is not said)."""

    code = "unknown_dead_letter"

    def __init__(self, account_id: int, ids: Sequence[str]) -> None:
        shown = list(ids[:20])
        more = f" (and {len(ids) - len(shown)} more)" if len(ids) > len(shown) else ""
        super().__init__(
            f"Account {account_id} has no {', '.join(shown)}{more}; nothing was changed.",
            extra={"ids": list(ids)},
        )
