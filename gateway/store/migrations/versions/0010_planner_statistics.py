"""planner statistics: extended statistics on the index tables' (type, parameter, value) columns

The index tables hold every type's rows, AuditEvents' among them, and AuditEvents outnumber the clinical
resources many times over. PostgreSQL estimates `res_type = 'Patient' AND param = 'gender' AND code =
'female'` as the product of the three columns' frequencies, each diluted by the AuditEvents' rows, and
so expects tens of rows where there are tens of thousands (issue 21, docs/performance.md). A statistics
object on those columns keeps their combinations' frequencies (`mcv`) and how one determines another
(`dependencies`), so the estimate is the combination's own. PostgreSQL only: SQLite has no such thing
(its planner takes the index it has). docs/storage.md, "Planner statistics".

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 13:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (statistics object, table, columns): what a search's lookup in each index table names together
STATISTICS = (
    ("st_token_lookup", "idx_token", ("res_type", "param", "code")),
    ("st_string_lookup", "idx_string", ("res_type", "param")),
    ("st_reference_lookup", "idx_reference", ("res_type", "param", "target_type")),
    ("st_date_lookup", "idx_date", ("res_type", "param")),
    ("st_number_lookup", "idx_number", ("res_type", "param")),
    ("st_uri_lookup", "idx_uri", ("res_type", "param")),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, columns in STATISTICS:
        op.execute(f"CREATE STATISTICS {name} (dependencies, mcv) ON {', '.join(columns)} FROM {table}")
        op.execute(f"ANALYZE {table}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _, _ in STATISTICS:
        op.execute(f"DROP STATISTICS IF EXISTS {name}")
