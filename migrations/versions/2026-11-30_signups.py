"""Newsletter signups: an address that joins a mapped list of the email platform while no CRM contact holds
it, one row per (account, address), so that at most one CRM contact is created for it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signup",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("list_id", sa.BigInteger(), nullable=False),
        sa.Column("list_ids", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("kommo_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_signup_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup")),
        sa.UniqueConstraint("account_id", "email", name=op.f("uq_signup_account_id_email")),
    )
    op.create_index("ix_signup_state_account_id", "signup", ["state", "account_id"])


def downgrade() -> None:
    op.drop_index("ix_signup_state_account_id", table_name="signup")
    op.drop_table("signup")
