"""Advisory locks of PostgreSQL for what must happen once however many gateway processes share a database.

A lock is a pair of integers: the purpose's constant and a hash of the schema, so gateways in separate
schemas of one database (DATABASE_SCHEMA) never wait for each other. Transaction-level locks only: they go
with the transaction's commit or rollback, or with its connection when a process dies. Elsewhere (SQLite)
`BEGIN IMMEDIATE` and the writer's turn serialise writers already, and these do nothing.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

MIGRATION = 0x5B5C_0002  # `gateway db upgrade` (and `serve`, which runs it first): gateway/store/migrate.py
SIGNING_KEYS = 0x5B5C_0003  # the first signing key and rotations: gateway/security/store.py
RISK = 0x5B5C_0004  # a patient's high-risk evaluation, with the name: gateway/risk/assess.py
FAULTS = 0x5B5C_0005  # a patient's count of fault reports, with the name: gateway/workflow/faults.py
# 0x5B5C_0001 is the subscription matcher's session lock (gateway/subscriptions/matcher.py)

# current_schema() is NULL when the search path names no existing schema; the path itself then keys it
SCHEMA_KEY = "coalesce(current_schema(), current_setting('search_path'))"
SCHEMA_HASH = f"hashtext({SCHEMA_KEY})"


def hold_for_transaction(connection: Connection, purpose: int) -> None:
    """Wait for, then hold until the end of the connection's transaction, the schema's `purpose` lock."""
    if connection.dialect.name != "postgresql":
        return
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(purpose)}, {SCHEMA_HASH})")


def hold_named_for_transaction(connection: Connection, purpose: int, name: str) -> None:
    """Wait for, then hold until the end of the transaction, the schema's lock of `purpose` and `name` (a
    patient's id, say): gateways in other schemas of the database never wait for it."""
    if connection.dialect.name != "postgresql":
        return
    connection.execute(
        text(f"SELECT pg_advisory_xact_lock(:purpose, hashtext({SCHEMA_KEY} || '/' || :name))"),
        {"purpose": purpose, "name": name},
    )
