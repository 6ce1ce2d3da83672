"""Dead letters: the record of each operator's replay or discard of dead letters (who, when, what). The dead
letters themselves are the rows already kept in their dead states (webhook_event, outbox, crm_write, signup);
the new ``discarded`` state of those tables is text in their VARCHAR(16) state columns, so needs no DDL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_letter_action",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("selected_all", sa.Boolean(), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("affected", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_dead_letter_action_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter_action")),
    )
    op.create_index(
        "ix_dead_letter_action_account_id_created_at", "dead_letter_action", ["account_id", "created_at"]
    )


def downgrade() -> None:
    # Rows left discarded keep that state (their tables take any text); an older release lists them nowhere.
    op.drop_index("ix_dead_letter_action_account_id_created_at", table_name="dead_letter_action")
    op.drop_table("dead_letter_action")
