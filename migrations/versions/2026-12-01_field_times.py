"""Per-field change times of contacts (two-way conflicts judged per field) and the CRM's value a platform
change won over (``crm_write.crm_before``). Both columns are nullable and older code never reads them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 07:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import compat

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contact", sa.Column("field_times", sa.JSON(), nullable=True))
    op.add_column("crm_write", sa.Column("crm_before", sa.Text(), nullable=True))
    compat.additive("0013", previous="0012")


def downgrade() -> None:
    compat.retract("0013")
    op.drop_column("crm_write", "crm_before")
    op.drop_column("contact", "field_times")
