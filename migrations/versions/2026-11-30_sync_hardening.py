"""Sync hardening: a lease on each full-sync run (owner + expiry) so an orphaned run is resumed quickly, a count
of a run's consecutive failed slices, and the contacts a run could not apply.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("slice_failures", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "sync_failure",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("kommo_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_run.id"], name=op.f("fk_sync_failure_run_id_sync_run"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "kommo_id", name=op.f("pk_sync_failure")),
    )


def downgrade() -> None:
    op.drop_table("sync_failure")
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("slice_failures")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
