"""Email activity back to the CRM: what the email platform reports about letters (kept once per event until
written to the CRM contact's timeline), and the CRM note per contact, campaign and kind that later events
of that kind update, and the campaigns the platform sent (names and totals, as last read). Consent gains ``bounced`` and ``complained`` (VARCHAR(16) already holds them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_activity",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=True),
        sa.Column("list_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_key", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_email_activity_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_activity")),
        sa.UniqueConstraint("account_id", "event_key", name=op.f("uq_email_activity_account_id_event_key")),
    )
    op.create_index("ix_email_activity_account_id_state", "email_activity", ["account_id", "state"])
    op.create_table(
        "activity_note",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("kommo_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("note_id", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_activity_note_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "kommo_id", "campaign_id", "kind", name=op.f("pk_activity_note")
        ),
    )

    op.create_table(
        "campaign",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("list_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_campaign_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "campaign_id", name=op.f("pk_campaign")),
    )


def downgrade() -> None:
    op.drop_table("campaign")
    op.drop_table("activity_note")
    op.drop_index("ix_email_activity_account_id_state", table_name="email_activity")
    op.drop_table("email_activity")
