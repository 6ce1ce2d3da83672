"""Schema compatibility: per migration, the oldest code revision that still runs on the schema it leaves
(``app/db/compat.py``), so that processes of the previous release stay ready during a rolling upgrade.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 01:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import compat

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schema_compat",
        sa.Column("revision", sa.String(length=32), nullable=False),
        sa.Column("oldest_code", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("revision", name=op.f("pk_schema_compat")),
    )
    # Code at 0011 does not read this table; but it checks for its own revision exactly, so it is the code
    # from this revision on that benefits.
    compat.declare("0012", oldest_code="0011")


def downgrade() -> None:
    op.drop_table("schema_compat")
