"""The size of stored resources without loading them: what the response budget (gateway.limits.budget)
checks before a search page, its includes or a history page are read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Integer, Table, false, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from gateway.store.tables import Resource

R = cast(Table, Resource.__table__)


class content_size(FunctionElement[int]):
    """The length of a content column: PostgreSQL's `octet_length`, which reads a large value's size from
    its header instead of decompressing it; SQLite's `length`."""

    type = Integer()
    inherit_cache = True


@compiles(content_size)
def _length(element: content_size, compiler: Any, **kw: Any) -> str:
    return f"length({compiler.process(element.clauses, **kw)})"


@compiles(content_size, "postgresql")
def _octet_length(element: content_size, compiler: Any, **kw: Any) -> str:
    return f"octet_length({compiler.process(element.clauses, **kw)})"


def current_sizes(connection: Connection, rids: Sequence[int]) -> list[tuple[str, str, int]]:
    """(type, id, stored size) of the current resources of these rids that are not deleted."""
    if not rids:
        return []
    statement = select(R.c.res_type, R.c.res_id, content_size(R.c.content)).where(
        R.c.rid.in_(list(rids)), R.c.deleted == false()
    )
    return [(row[0], row[1], int(row[2] or 0)) for row in connection.execute(statement)]
