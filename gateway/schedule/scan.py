"""The jobs' reads, made for passes over 50,000 plans: the rows a search matches found in one query
(their row ids only), then read in batches, each in a short transaction of its own (never all held at
once); and what a batch needs besides (its Tasks, patients, plans) read in one query a batch. Read as
the gateway (no visibility: the jobs act for the region)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import cast
from urllib.parse import parse_qsl

from sqlalchemy import Table, select

from gateway.model.types import Json
from gateway.services import Services
from gateway.store.repository import R, Repository, Stored
from gateway.store.tables import DateIndex

DATES = cast(Table, DateIndex.__table__)

BATCH = 500


def batches(services: Services, res_type: str, query: str, batch: int = BATCH) -> Iterator[list[Stored]]:
    """The current, not deleted resources of `res_type` that `query` matches, in row order, `batch` at a
    time; the matching row ids are taken once, so rows a job writes meanwhile do not move the scan."""
    yield from read(services, matching(services, res_type, query), batch)


def matching(services: Services, res_type: str, query: str) -> set[int]:
    """The row ids `query` matches: each parameter's matches found alone and intersected. Each alone is
    one index range (~50 ms at 50,000 plans); SQLite plans the whole condition as nested lookups that took
    a minute there (bench/schedule.py)."""
    searcher = services.write_path.searcher
    found: set[int] | None = None
    with services.engine.connect() as connection:
        for pair in parse_qsl(query, keep_blank_values=True):
            request = searcher.parse(res_type, [pair], "", conditional=True)
            if request.unknown:
                raise ValueError(f"Unknown search parameter(s): {', '.join(request.unknown)}")
            statement = select(R.c.rid).where(searcher.planner.where(request))
            rids = {row[0] for row in connection.execute(statement)}
            found = rids if found is None else found & rids
            if not found:
                return set()
    return found or set()


def scan(services: Services, res_type: str, query: str, batch: int = BATCH) -> Iterator[Stored]:
    """`batches`, one resource at a time."""
    for found in batches(services, res_type, query, batch):
        yield from found


def current(services: Services, references: Iterable[str]) -> dict[str, Json]:
    """The current, not deleted resources of these `Type/id` references, in one query, by reference."""
    keys: set[tuple[str, str]] = set()
    for reference in references:
        res_type, _, res_id = reference.partition("/")
        if res_type and res_id and "/" not in res_id:
            keys.add((res_type, res_id))
    if not keys:
        return {}
    with services.engine.connect() as connection:
        found = Repository(connection).current_of(keys)
    return {f"{t}/{i}": s.json() for (t, i), s in found.items() if not s.deleted}


def dated_between(services: Services, res_type: str, param: str, low: datetime, high: datetime) -> set[int]:
    """The row ids of `res_type` whose `param` (a dateTime) falls in [low, high) (naive UTC): one range
    of the date index."""
    statement = select(DATES.c.rid).where(
        DATES.c.res_type == res_type, DATES.c.param == param, DATES.c.low >= low, DATES.c.low < high
    )
    with services.engine.connect() as connection:
        return {int(row[0]) for row in connection.execute(statement)}


def changed_since(services: Services, res_type: str, moment: datetime) -> dict[str, int]:
    """`res_id` → row id of the resources of `res_type` written (or deleted) at `moment` or later (the
    real clock): one range of the index on the type and `last_updated`."""
    statement = select(R.c.res_id, R.c.rid).where(R.c.res_type == res_type, R.c.last_updated >= moment)
    with services.engine.connect() as connection:
        return {str(row[0]): int(row[1]) for row in connection.execute(statement)}


def read(services: Services, rids: Iterable[int], batch: int = BATCH) -> Iterator[list[Stored]]:
    """The current, not deleted resources of these row ids, in row order, `batch` at a time."""
    ordered = sorted(set(rids))
    for start in range(0, len(ordered), batch):
        with services.engine.connect() as connection:
            found = Repository(connection).current_many(ordered[start : start + batch])
        yield [stored for stored in found if not stored.deleted]
