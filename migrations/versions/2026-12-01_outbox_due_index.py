"""An index of each account's pending outbox rows in id order: what a flush claims.

Without it, PostgreSQL claimed an account's oldest due rows by walking the whole outbox in id order and
skipping every row already pushed: 29 ms per claim at 100,000 pushed rows, growing with every address any
account ever pushed. With it a claim reads only that account's pending rows (0.5 ms). Built concurrently, so a
large outbox keeps taking writes while it is built; only adds, so older code runs on it unchanged.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import compat

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_outbox_pending_account_id_bulk_id"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A build interrupted before (the Job's pod stopped) leaves an invalid index behind: it is built anew.
        # A valid one (a build that finished although the run did not) is kept.
        valid = op.get_bind().scalar(
            sa.text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :name"
            ).bindparams(name=INDEX)
        )
        if valid is False:
            op.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"))
        if not valid:
            op.create_index(
                INDEX,
                "outbox",
                ["account_id", "bulk", "id"],
                postgresql_where=sa.text("status = 'pending'"),
                postgresql_concurrently=True,
            )
    compat.additive("0015", previous="0014")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(INDEX, table_name="outbox", postgresql_concurrently=True, if_exists=True)
    # Stamped with the version change: a drop that failed leaves the schema, and what it accepts, at 0015.
    compat.retract("0015")
