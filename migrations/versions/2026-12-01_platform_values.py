"""What the email platform holds of the fields it owns (``to_kommo`` rules), per address: kept apart from the
push record, which a push replaces and which never carries those fields. Nullable; older code never reads it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 09:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import compat

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("platform_values", sa.JSON(), nullable=True))
    compat.additive("0014", previous="0013")


def downgrade() -> None:
    compat.retract("0014")
    op.drop_column("outbox", "platform_values")
