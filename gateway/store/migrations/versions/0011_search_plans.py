"""search plans: index shapes the page queries can stop early on (issue 21)

The lookup indexes of the token, string and reference index tables end in `rid`, so the rows of one
value come in `rid` order (a page ordered by `rid` stops after `_count` + 1 matches) and the driving
clause is read from the index alone; the string index matches `LIKE 'x%'` under any collation
(`text_pattern_ops`: a database created with a Swedish or English collation cannot use a plain btree
index for a prefix). See docs/storage.md, "Search indexes".

On PostgreSQL each index is created only if it is not there yet, so an operator of a large store can build
them beforehand without blocking writes (`CREATE INDEX CONCURRENTLY`, docs/storage.md) and the migration
then only drops the indexes they replace. The planner's estimates of a common code come from migration
0010's statistics objects.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 13:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# (name, table, PostgreSQL columns, SQLite columns, the index it replaces)
INDEXES = [
    (
        "ix_token_code_rid",
        "idx_token",
        "res_type, param, code, rid) INCLUDE (system",
        "res_type, param, code, rid",
        "ix_token_lookup",
    ),
    (
        "ix_string_prefix",
        "idx_string",
        "res_type, param, value_folded text_pattern_ops, rid",
        "res_type, param, value_folded, rid",
        "ix_string_lookup",
    ),
    (
        "ix_reference_lookup_rid",
        "idx_reference",
        "res_type, param, target_id, target_type, rid",
        "res_type, param, target_id, target_type, rid",
        "ix_reference_lookup",
    ),
]
REPLACED = {
    "ix_token_lookup": ("idx_token", "res_type, param, code, system"),
    "ix_string_lookup": ("idx_string", "res_type, param, value_folded"),
    "ix_reference_lookup": ("idx_reference", "res_type, param, target_id, target_type"),
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, pg_columns, sqlite_columns, replaced in INDEXES:
        columns = pg_columns if postgres else sqlite_columns
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
        op.execute(f"DROP INDEX IF EXISTS {replaced}")


def downgrade() -> None:
    for name, _, _, _, replaced in INDEXES:
        table, columns = REPLACED[replaced]
        op.execute(f"CREATE INDEX IF NOT EXISTS {replaced} ON {table} ({columns})")
        op.execute(f"DROP INDEX IF EXISTS {name}")
