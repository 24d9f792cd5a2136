"""audit chain: the audit writer's batches per process, linked by hash; archives of AuditEvents

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_batch",
        sa.Column("process", sa.String(length=128), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("previous", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("committed_at", sa.DateTime(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("process", "number"),
    )
    with op.batch_alter_table("audit_batch", schema=None) as batch_op:
        batch_op.create_index("ix_audit_batch_committed", ["committed_at"], unique=False)
    op.create_table(
        "audit_archive",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("before", sa.DateTime(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("audit_archive")
    with op.batch_alter_table("audit_batch", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_batch_committed")
    op.drop_table("audit_batch")
