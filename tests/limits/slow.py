"""A store on which one search is slow on both databases, made in SQL (a write path would take minutes):
`rows` Patients with `rows` name index rows each (200 characters of padding, then `name<n>x`), and a
search whose every clause but the first is checked against all of a candidate's rows (rows² × clauses
comparisons of 200 characters: several seconds at 500 rows on either database)."""

from __future__ import annotations

from sqlalchemy import Engine, text

SLOW_ROWS = 500
PADDING = "0" * 200


def seed(engine: Engine, rows: int = SLOW_ROWS) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            numbers = f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}) "
            connection.execute(
                text(
                    "INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, content) "
                    + numbers
                    + "SELECT 'Patient', 'slow-' || n, 1, '2026-01-01 00:00:00', 0, "
                    '\'{"resourceType": "Patient", "id": "slow-\' || n || \'"}\' FROM g'
                )
            )
            connection.execute(
                text(
                    "INSERT INTO idx_string (rid, res_type, param, value_folded, value_exact) "
                    + numbers
                    + f"SELECT r.rid, 'Patient', 'name', '{PADDING}name' || n || 'x', 'n' FROM resource r, g"
                )
            )
        else:
            connection.execute(
                text(
                    "INSERT INTO resource (res_type, res_id, version_id, last_updated, deleted, content) "
                    "SELECT 'Patient', 'slow-' || n, 1, now(), false, "
                    '\'{"resourceType": "Patient", "id": "slow-\' || n || \'"}\' '
                    f"FROM generate_series(1, {rows}) n"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO idx_string (rid, res_type, param, value_folded, value_exact) "
                    f"SELECT r.rid, 'Patient', 'name', '{PADDING}name' || n || 'x', 'n' "
                    f"FROM resource r, generate_series(1, {rows}) n"
                )
            )
            connection.execute(text("ANALYZE resource"))
            connection.execute(text("ANALYZE idx_string"))


def slow_search(rows: int = SLOW_ROWS) -> str:
    """Every Patient is a candidate (`name=000`); each of 48 more clauses matches only its last row; the
    sort makes every candidate be checked (no page ends the work early)."""
    return "Patient?_sort=name&name=000&" + "&".join([f"name:contains=name{rows}x"] * 48)
