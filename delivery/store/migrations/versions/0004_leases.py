"""leases: workers' claims on bundles and deliveries, renewed by heartbeats; longer subjects

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("bundles", "deliveries"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("lease_owner", sa.String(length=200), nullable=False, server_default="")
            )
            batch_op.add_column(
                sa.Column("lease_expires", sa.Float(), nullable=False, server_default="0")
            )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.alter_column(
            "subject",
            existing_type=sa.String(length=100),
            type_=sa.String(length=200),
            existing_nullable=False,
        )
    with op.batch_alter_table("bundles", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unfinished_renders", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.alter_column(
            "subject",
            existing_type=sa.String(length=200),
            type_=sa.String(length=100),
            existing_nullable=False,
        )
    with op.batch_alter_table("bundles", schema=None) as batch_op:
        batch_op.drop_column("unfinished_renders")
    for table in ("deliveries", "bundles"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("lease_expires")
            batch_op.drop_column("lease_owner")
