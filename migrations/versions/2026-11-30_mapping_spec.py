"""The mapping engine: a versioned sync spec per account (every existing account gets the default spec, the
mirror's behaviour until now: ``name → Name``, every contact in the account's list), the contact data a spec
may map, what Unisender last accepted per address (and whether a row was queued by bulk work), per-list
unsubscribes, and the CRM's user names.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 16:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out, not imported: a migration must keep meaning what it meant when it was written.
DEFAULT_SPEC = {
    "fields": [
        {
            "source": ["name"],
            "target": "Name",
            "direction": "to_unisender",
            "separator": " ",
            "sources": [{"kind": "name", "field_id": None, "type": "text", "name": "Name"}],
            "target_type": "string",
        }
    ],
    "lists": [{"base": True, "list_id": None, "title": None, "all": True, "tag": None, "tags_any": []}],
}


def upgrade() -> None:
    op.add_column("contact", sa.Column("data", sa.JSON(), nullable=True))
    op.add_column("outbox", sa.Column("pushed_payload", sa.JSON(), nullable=True))
    op.add_column("outbox", sa.Column("bulk", sa.Boolean(), server_default="false", nullable=False))
    op.create_table(
        "sync_spec",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["integration.account_id"],
            name=op.f("fk_sync_spec_account_id_integration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "version", name=op.f("pk_sync_spec")),
    )
    op.create_table(
        "list_unsubscribe",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("list_id", sa.BigInteger(), nullable=False),
        sa.Column("unsubscribed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kommo_tagged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "email", "list_id", name=op.f("pk_list_unsubscribe")),
    )
    op.create_table(
        "crm_user",
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "user_id", name=op.f("pk_crm_user")),
    )
    op.execute(
        sa.text(
            "INSERT INTO sync_spec (account_id, version, spec, created_at)"
            " SELECT account_id, 1, CAST(:spec AS JSON), now() FROM integration"
        ).bindparams(spec=json.dumps(DEFAULT_SPEC))
    )


def downgrade() -> None:
    op.drop_table("crm_user")
    op.drop_table("list_unsubscribe")
    op.drop_table("sync_spec")
    op.drop_column("outbox", "bulk")
    op.drop_column("outbox", "pushed_payload")
    op.drop_column("contact", "data")
