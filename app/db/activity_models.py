"""The records of the notes the service writes on CRM contacts' timelines about email activity."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow


class ActivityNote(Base):
    """The CRM note that tells one contact about one kind of activity in one campaign: later events of that
    kind and campaign update its count instead of adding notes."""

    __tablename__ = "activity_note"

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE"), primary_key=True
    )
    kommo_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # 0: no campaign named
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    note_id: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ActivityNoteIntent(Base):
    """A note about to be added to the CRM, committed before the call that adds it: if the call's answer is
    lost (a timeout, a gateway error, the worker killed mid-call) the next round looks for a note with exactly
    this text on that contact and adopts it, instead of adding a second one. Removed once the call's outcome is
    recorded."""

    __tablename__ = "activity_note_intent"

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE"), primary_key=True
    )
    kommo_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
