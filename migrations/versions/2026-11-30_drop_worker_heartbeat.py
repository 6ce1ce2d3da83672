"""Drop what nothing uses: the ``worker_heartbeat`` table (no process ever wrote it; a worker's liveness is
arq's health-check key in Redis) and ``sync_run.rejected`` (never counted: a run's rejections are counted from
the outbox when the run is shown).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("worker_heartbeat")
    with op.batch_alter_table("sync_run") as batch:
        batch.drop_column("rejected")


def downgrade() -> None:
    with op.batch_alter_table("sync_run") as batch:
        batch.add_column(sa.Column("rejected", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "worker_heartbeat",
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_heartbeat")),
    )
