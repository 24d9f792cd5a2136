"""schedule done: what a job's last complete pass covered, so the next pass reads only what changed

`done_at` is the real time (UTC) at which the job's last complete pass started, `done_mark` what that
pass depended on besides time (the high-risk job: its rule set's fingerprint). A job without them does a
whole pass (gateway/schedule/high_risk.py, docs/scheduling.md).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("schedule_lease", sa.Column("done_at", sa.DateTime(), nullable=True))
    op.add_column("schedule_lease", sa.Column("done_mark", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedule_lease") as batch:
        batch.drop_column("done_mark")
        batch.drop_column("done_at")
