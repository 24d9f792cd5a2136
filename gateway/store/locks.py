"""Advisory locks of PostgreSQL for what must happen once however many gateway processes share a database.

A lock is a pair of integers: the purpose's constant and a hash of the schema, so gateways in separate
schemas of one database (DATABASE_SCHEMA) never wait for each other. Transaction-level locks only: they go
with the transaction's commit or rollback, or with its connection when a process dies. Elsewhere (SQLite)
`BEGIN IMMEDIATE` and the writer's turn serialise writers already, and these do nothing.
"""

from __future__ import annotations

from sqlalchemy import Connection

MIGRATION = 0x5B5C_0002  # `gateway db upgrade` (and `serve`, which runs it first): gateway/store/migrate.py
SIGNING_KEYS = 0x5B5C_0003  # the first signing key and rotations: gateway/security/store.py
# 0x5B5C_0001 is the subscription matcher's session lock (gateway/subscriptions/matcher.py)

# current_schema() is NULL when the search path names no existing schema; the path itself then keys it
SCHEMA_HASH = "hashtext(coalesce(current_schema(), current_setting('search_path')))"


def hold_for_transaction(connection: Connection, purpose: int) -> None:
    """Wait for, then hold until the end of the connection's transaction, the schema's `purpose` lock."""
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(purpose)}, {SCHEMA_HASH})")
