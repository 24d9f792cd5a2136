"""subscriptions: the notify outbox, subscription state and event log, clients' notify endpoints

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notify_outbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("stored_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "subscription_state",
        sa.Column("sub_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("organization", sa.String(length=255), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("topic", sa.String(length=255), nullable=True),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.Column("acked", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.Column("failing_since", sa.DateTime(), nullable=True),
        sa.Column("last_sent", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_seconds", sa.Integer(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sub_id"),
    )
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.create_index("ix_subscription_state_status", ["status", "retry_at"], unique=False)
    op.create_table(
        "subscription_event",
        sa.Column("sub_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=True),
        sa.Column("res_id", sa.String(length=64), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sub_id", "number"),
    )
    with op.batch_alter_table("subscription_event", schema=None) as batch_op:
        batch_op.create_index("ix_subscription_event_time", ["occurred_at"], unique=False)
    op.create_table(
        "client_notify",
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["oauth_client.client_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("client_id", "kind", "value"),
    )


def downgrade() -> None:
    op.drop_table("client_notify")
    with op.batch_alter_table("subscription_event", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_event_time")
    op.drop_table("subscription_event")
    with op.batch_alter_table("subscription_state", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_state_status")
    op.drop_table("subscription_state")
    op.drop_table("notify_outbox")
