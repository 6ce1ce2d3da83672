"""The operators' own records: what they did to dead letters, and their console sign-ins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import JSON

from app.db.base import Base, state_column, utcnow
from app.db.states import DeadLetterKind, DeadLetterOperation


class DeadLetterAction(Base):
    """An operator's replay or discard of an account's dead letters (``app.deadletters``): who, when, what they
    asked for and which rows it changed. The dead letters themselves are rows of their own tables in a dead
    state; this is the only record of what was done to them."""

    __tablename__ = "dead_letter_action"
    __table_args__ = (Index("ix_dead_letter_action_account_id_created_at", "account_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE")
    )
    operation: Mapped[DeadLetterOperation] = mapped_column(state_column(DeadLetterOperation, 16))
    actor: Mapped[str] = mapped_column(String(64))  # "operator" (API), "cli", "console", …
    kind: Mapped[DeadLetterKind | None] = mapped_column(state_column(DeadLetterKind, 16))  # None: any kind
    selected_all: Mapped[bool] = mapped_column(Boolean)  # every dead letter (of ``kind``), not listed ids
    requested: Mapped[int] = mapped_column(Integer)  # dead letters named or matched
    affected: Mapped[int] = mapped_column(Integer)  # replayed or discarded
    skipped: Mapped[int] = mapped_column(Integer)  # no longer dead (replayed before, or recovered)
    items: Mapped[dict[str, list[int]]] = mapped_column(JSON)  # kind → ids of the rows changed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSession(Base):
    """An operator's sign-in to the console. Only a hash of the cookie's value is kept: a reader of this table
    (a backup, a replica) cannot act as the operator."""

    __tablename__ = "console_session"
    __table_args__ = (Index("ix_console_session_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie value, hex
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
