"""One INSERT of many rows, in the form each database takes fastest."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, Table, insert

from gateway.model.types import dumps


def insert_all(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """One INSERT of all the rows (each with the same keys). On PostgreSQL the rows go as one JSON
    parameter (`INSERT … SELECT … FROM json_to_recordset(…)`), a statement whose text is the same whatever
    the number of rows: psycopg converts it to PostgreSQL's placeholders once and sends one string, where
    a multi-row VALUES statement is new text at every size, converted and dumped placeholder by
    placeholder each time (~15% of a new order's CPU; docs/performance.md)."""
    if connection.dialect.name != "postgresql":
        connection.execute(_insert(table), rows)
        return
    connection.exec_driver_sql(_from_json(connection.dialect, table, tuple(rows[0])), {"rows": dumps(rows)})


@cache
def _insert(table: Table) -> Insert:
    """The INSERT of a table, built once (building and cache-keying it at every call costs)."""
    return insert(table)


@cache
def _from_json(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> str:
    """PostgreSQL's INSERT of these columns from a JSON array of rows, the parameter `%(rows)s`."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(key) for key in keys)
    typed = ", ".join(f"{quote(key)} {table.c[key].type.compile(dialect=dialect)}" for key in keys)
    return (
        f"INSERT INTO {quote(table.name)} ({names}) "
        f"SELECT {names} FROM json_to_recordset(%(rows)s::json) AS rows({typed})"
    )
