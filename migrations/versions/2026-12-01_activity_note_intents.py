"""Activity note intents: a note about to be added to the CRM, kept until its call's outcome is recorded, so
a note whose answer was lost is found and adopted instead of added twice.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity_note_intent",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("kommo_id", sa.BigInteger(), nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_activity_note_intent_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "kommo_id", "campaign_id", "kind", name=op.f("pk_activity_note_intent")
        ),
    )


def downgrade() -> None:
    op.drop_table("activity_note_intent")
