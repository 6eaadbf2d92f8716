"""delivery parts, suspect addresses, resolutions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_parts",
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("proof", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.PrimaryKeyConstraint("delivery_id", "number"),
    )
    with op.batch_alter_table("delivery_parts", schema=None) as batch_op:
        batch_op.create_index("ix_delivery_parts_ref", ["ref"], unique=False)
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("address_suspect", sa.Text(), nullable=False, server_default="")
        )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolution", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("resolution")
    with op.batch_alter_table("recipients", schema=None) as batch_op:
        batch_op.drop_column("address_suspect")
    with op.batch_alter_table("delivery_parts", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_parts_ref")
    op.drop_table("delivery_parts")
