"""The jobs' reads: every current resource a search matches, in batches by row id (a pass over 50,000
plans never holds them all), read as the gateway (no visibility: the jobs act for the region)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl

from sqlalchemy import select

from gateway.services import Services
from gateway.store.repository import R, Repository, Stored

BATCH = 500


def scan(services: Services, res_type: str, query: str, batch: int = BATCH) -> Iterator[Stored]:
    """The current, not deleted resources of `res_type` that `query` matches, in row order; each batch
    read in a short transaction of its own (the writes in between see their own commits)."""
    searcher = services.write_path.searcher
    request = searcher.parse(res_type, parse_qsl(query, keep_blank_values=True), "", conditional=True)
    if request.unknown:
        raise ValueError(f"Unknown search parameter(s): {', '.join(request.unknown)}")
    last = 0
    while True:
        with services.engine.connect() as connection:
            statement = (
                select(R.c.rid)
                .where(searcher.planner.where(request), R.c.rid > last)
                .order_by(R.c.rid)
                .limit(batch)
            )
            rids = [row[0] for row in connection.execute(statement)]
            found = Repository(connection).current_many(rids) if rids else []
        if not rids:
            return
        yield from (stored for stored in found if not stored.deleted)
        last = rids[-1]
