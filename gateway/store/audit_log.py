"""AuditEvents in the store: written straight into the resource, version and index tables (they are not
written through the write path: storing an audit record is not itself an access), in the transaction of
the write they record or in a batch of the audit writer that is a link of its process's chain; read back
for `gateway audit verify` and `gateway audit archive`."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from sqlalchemy import Connection, Table, delete, insert, select, update

from gateway.model.types import Json, dumps, loads
from gateway.search.dates import to_instant
from gateway.search.extract import Extractor
from gateway.store.bulk import insert_all
from gateway.store.repository import _INDEX_TABLES, R, V
from gateway.store.tables import AuditArchive, AuditBatch

AUDIT_TYPE = "AuditEvent"
BATCH = cast(Table, AuditBatch.__table__)
ARCHIVE = cast(Table, AuditArchive.__table__)
_ADD_BATCH = insert(BATCH)  # built once: building it costs more than running it


def insert_events(
    connection: Connection, extractor: Extractor, events: list[Json], now: datetime
) -> list[str]:
    """Insert AuditEvents (version 1, append-only) with their index rows on `connection`, in its
    transaction; their ids, in order. The events get their id and meta here."""
    if not events:
        return []
    rows: list[dict[str, Any]] = []
    for event in events:
        event["id"] = time_ordered_id()
        event["meta"] = {"versionId": "1", "lastUpdated": to_instant(now)}
        rows.append(
            {
                "res_type": AUDIT_TYPE,
                "res_id": event["id"],
                "version_id": 1,
                "last_updated": now,
                "deleted": False,
                "content": dumps(event),
            }
        )
    insert_all(connection, V, [row | {"method": "POST"} for row in rows])
    rids = connection.execute(insert(R).returning(R.c.rid, sort_by_parameter_order=True), rows)
    index: dict[str, list[dict[str, Any]]] = {name: [] for name in _INDEX_TABLES}
    for rid, event in zip(list(rids.scalars()), events, strict=True):
        extracted = extractor.rows(event)
        for name in _INDEX_TABLES:
            index[name].extend(row | {"rid": rid} for row in getattr(extracted, name))
    for name, table in _INDEX_TABLES.items():
        if index[name]:
            insert_all(connection, table, index[name])
    return [str(event["id"]) for event in events]


def time_ordered_id() -> str:
    """A UUID whose first 48 bits are the time in milliseconds (the layout of UUID version 7, RFC 9562),
    the rest random: AuditEvents are inserted in time order, so their ids go to the end of the id
    indexes instead of a random page of each (a random UUID's insert touches a page the size of the
    store would otherwise keep away from the cache)."""
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | secrets.randbits(76)
    value = (value & ~(0b11 << 62)) | (0b10 << 62)  # the variant bits
    return str(UUID(int=value))


def chain_hash(previous: str, contents: Sequence[str]) -> str:
    """The hash of a batch: its predecessor's hash and its events' stored content, in order."""
    digest = hashlib.sha256(previous.encode())
    for content in contents:
        digest.update(b"\n")
        digest.update(content.encode())
    return digest.hexdigest()


def add_batch(
    connection: Connection,
    process: str,
    number: int,
    previous: str,
    ids: list[str],
    contents: list[str],
    now: datetime,
) -> str:
    """Record a batch of the audit writer, in the transaction that inserts its events; its hash."""
    value = chain_hash(previous, contents)
    row = {
        "process": process,
        "number": number,
        "previous": previous,
        "hash": value,
        "events": dumps(ids),
        "committed_at": now,
        "archived": False,
    }
    connection.execute(_ADD_BATCH, [row])
    return value


@dataclass(frozen=True)
class Batch:
    process: str
    number: int
    previous: str
    hash: str
    events: list[str]
    committed_at: datetime
    archived: bool


def batches(connection: Connection, since: datetime | None = None) -> Iterator[Batch]:
    """The audit writer's batches, per process in order of their numbers."""
    statement = select(BATCH).order_by(BATCH.c.process, BATCH.c.number)
    if since is not None:
        statement = statement.where(BATCH.c.committed_at >= since)
    for row in connection.execute(statement.execution_options(yield_per=1000)):
        yield Batch(
            row.process, row.number, row.previous, row.hash, loads(row.events), row.committed_at, row.archived
        )


def contents_of(connection: Connection, ids: Sequence[str]) -> dict[str, str]:
    """The stored content of these AuditEvents, by id (the missing ones are not there)."""
    found: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        statement = select(R.c.res_id, R.c.content).where(R.c.res_type == AUDIT_TYPE, R.c.res_id.in_(chunk))
        found |= {str(res_id): str(content) for res_id, content in connection.execute(statement)}
    return found


def events(
    connection: Connection, since: datetime | None = None, before: datetime | None = None
) -> Iterator[tuple[str, datetime, str]]:
    """(id, stored at, content) of the stored AuditEvents, oldest first."""
    statement = select(R.c.res_id, R.c.last_updated, R.c.content).where(R.c.res_type == AUDIT_TYPE)
    if since is not None:
        statement = statement.where(R.c.last_updated >= since)
    if before is not None:
        statement = statement.where(R.c.last_updated < before)
    statement = statement.order_by(R.c.last_updated, R.c.rid)
    for row in connection.execute(statement.execution_options(yield_per=1000)):
        yield str(row.res_id), row.last_updated, str(row.content)


def versions(
    connection: Connection, since: datetime | None = None
) -> Iterator[tuple[str, str, int, datetime]]:
    """(type, id, version, written at) of every stored version but AuditEvents'."""
    statement = select(V.c.res_type, V.c.res_id, V.c.version_id, V.c.last_updated).where(
        V.c.res_type != AUDIT_TYPE
    )
    if since is not None:
        statement = statement.where(V.c.last_updated >= since)
    for row in connection.execute(statement.order_by(V.c.seq).execution_options(yield_per=2000)):
        yield str(row.res_type), str(row.res_id), int(row.version_id), row.last_updated


def delete_events(connection: Connection, ids: Sequence[str]) -> None:
    """Remove AuditEvents (their versions and index rows with them): `gateway audit archive` only."""
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        connection.execute(delete(V).where(V.c.res_type == AUDIT_TYPE, V.c.res_id.in_(chunk)))
        connection.execute(delete(R).where(R.c.res_type == AUDIT_TYPE, R.c.res_id.in_(chunk)))


def mark_archived(connection: Connection, before: datetime) -> None:
    connection.execute(update(BATCH).where(BATCH.c.committed_at < before).values(archived=True))


def add_archive(
    connection: Connection, before: datetime, path: str, sha256: str, count: int, now: datetime
) -> None:
    connection.execute(
        insert(ARCHIVE).values(before=before, path=path, sha256=sha256, events=count, archived_at=now)
    )


def archived_before(connection: Connection) -> datetime | None:
    """The latest `before` of the archives written: AuditEvents before it are in archives, not here."""
    found = connection.execute(select(ARCHIVE.c.before).order_by(ARCHIVE.c.before.desc()).limit(1)).scalar()
    return found if isinstance(found, datetime) else None
