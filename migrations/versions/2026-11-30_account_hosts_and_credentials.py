"""Account hosts and OAuth state pruning: integration.kommo_host, an index on oauth_state.created_at.

``kommo_host`` is the account's host as Kommo's OAuth redirect named it (acme.kommo.com, acme.amocrm.ru); every
Kommo call for the account goes there. Rows written before it existed were always called on kommo.com.
``oauth_state`` now holds one row per successful code exchange (single use of the state), pruned by age.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("integration", sa.Column("kommo_host", sa.String(length=255), nullable=True))
    op.execute("UPDATE integration SET kommo_host = subdomain || '.kommo.com'")
    op.create_index("ix_oauth_state_created_at", "oauth_state", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_oauth_state_created_at", table_name="oauth_state")
    with op.batch_alter_table("integration") as batch:
        batch.drop_column("kommo_host")
