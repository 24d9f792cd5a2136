"""access: who wrote each resource, care relations, clients' sources, quarantine owners, disabled clients

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.add_column(sa.Column("writer", sa.String(length=255), nullable=True))
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reference_param_target", ["param", "target_type", "target_id"], unique=False
        )
    op.create_table(
        "care_relation",
        sa.Column("pk", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("rid", BIG_ID, nullable=False),
        sa.Column("actor_type", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.String(length=255), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("care_relation", schema=None) as batch_op:
        batch_op.create_index("ix_relation_actor", ["actor_type", "actor_id", "patient_id"], unique=False)
        batch_op.create_index("ix_relation_patient", ["patient_id"], unique=False)
        batch_op.create_index("ix_relation_rid", ["rid"], unique=False)
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_quarantine_client", ["client_id", "adapter", "status", "id"], unique=False)
    op.create_table(
        "client_source",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["oauth_client.client_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("client_id", "kind", "source"),
    )
    with op.batch_alter_table("client_source", schema=None) as batch_op:
        batch_op.create_index("ix_client_source_kind", ["kind", "source"], unique=False)
    op.create_table(
        "disabled_client",
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("disabled_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client_id"),
    )


def downgrade() -> None:
    op.drop_table("disabled_client")
    with op.batch_alter_table("client_source", schema=None) as batch_op:
        batch_op.drop_index("ix_client_source_kind")
    op.drop_table("client_source")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index("ix_quarantine_client")
        batch_op.drop_column("client_id")
    with op.batch_alter_table("care_relation", schema=None) as batch_op:
        batch_op.drop_index("ix_relation_rid")
        batch_op.drop_index("ix_relation_patient")
        batch_op.drop_index("ix_relation_actor")
    op.drop_table("care_relation")
    with op.batch_alter_table("idx_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_reference_param_target")
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_column("writer")
