"""Version rows, index rows and identifier claims held back until the transaction next reads, or commits.

A transaction that writes eight resources would otherwise send one INSERT per index table per resource and
one per version row (~33 statements, each a round trip on PostgreSQL); held back, it sends one INSERT of
many rows per table (gateway/store/bulk.py).
Nothing can see the difference: before any statement other than the write path's own (reading a row by
id, writing resource and version rows, checking and removing a resource's claims and index rows) the
held rows are written, and at the latest when the transaction commits; a rollback drops them. The rows
live in the connection's `info` for the length of one transaction, and only on engines where `install`
put these hooks (elsewhere the repository writes them at once). `UnitOfWork.attempt` runs work in a
savepoint (sent past SQLAlchemy, so it does not write them) and, rolling back to it, restores what was
held when it began (`snapshot`, `restore`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, event

from gateway.store.bulk import insert_all
from gateway.store.tables import IdentifierClaim, ResourceVersion

KEY = "gateway_pending_rows"
CLAIMS = cast(Table, IdentifierClaim.__table__)
VERSIONS = cast(Table, ResourceVersion.__table__)
_QUIET: WeakKeyDictionary[Engine, frozenset[int]] = WeakKeyDictionary()


@dataclass
class PendingRows:
    versions: list[dict[str, Any]] = field(default_factory=list)
    index: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    claims: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (type, system, value)
    # The resources with rows held: replacing the rows of any other resource has nothing to drop here.
    rids: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.versions or self.index or self.claims)

    def add_version(self, row: dict[str, Any]) -> None:
        self.versions.append(row)

    def add_index(self, table: Table, rows: list[dict[str, Any]]) -> None:
        self.index.setdefault(table, []).extend(rows)
        self.rids.update(row["rid"] for row in rows)

    def add_claims(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.claims[(row["res_type"], row["system"], row["value"])] = row
            self.rids.add(row["rid"])

    def claimed_by(self, res_type: str, system: str, value: str) -> int | None:
        row = self.claims.get((res_type, system, value))
        return int(row["rid"]) if row is not None else None

    def drop_index(self, rid: int) -> None:
        """Forget the index rows held for a resource whose index rows are being replaced."""
        if rid not in self.rids:
            return
        for table, rows in self.index.items():
            self.index[table] = [row for row in rows if row["rid"] != rid]

    def drop_claims(self, rid: int) -> None:
        """Forget the claims held for a resource whose claims are being replaced."""
        if rid not in self.rids:
            return
        self.claims = {key: row for key, row in self.claims.items() if row["rid"] != rid}

    def copy(self) -> PendingRows:
        return PendingRows(
            list(self.versions),
            {table: list(rows) for table, rows in self.index.items()},
            dict(self.claims),
            set(self.rids),
        )


def snapshot(connection: Connection) -> PendingRows | None:
    """What is held now, to `restore` after rolling back to a savepoint begun now."""
    rows: PendingRows | None = connection.info.get(KEY)
    return rows.copy() if rows else None


def restore(connection: Connection, rows: PendingRows | None) -> None:
    """Hold again what `snapshot` saw (after a rollback to the savepoint begun then: rows held since are
    forgotten, and rows written since, which that rollback took back, are held again)."""
    if connection.invalidated:
        return
    if rows:
        connection.info[KEY] = rows
    else:
        connection.info.pop(KEY, None)


def held(connection: Connection) -> PendingRows | None:
    """The rows held back in this connection's transaction; None where they are written at once: on an
    engine without the hooks, or outside a transaction (no commit would write them)."""
    if connection.engine not in _QUIET or not connection.in_transaction():
        return None
    rows: PendingRows | None = connection.info.get(KEY)
    if rows is None:
        rows = connection.info[KEY] = PendingRows()
    return rows


def write(connection: Connection) -> None:
    """Write what is held, one INSERT per table (claims first: a taken identifier fails first;
    then the versions, in the order written: their sequence numbers order history)."""
    rows: PendingRows | None = connection.info.pop(KEY, None)
    if not rows:
        return
    if rows.claims:  # in key order, as every transaction takes them: no two wait on each other crosswise
        insert_all(connection, CLAIMS, [rows.claims[key] for key in sorted(rows.claims)])
    if rows.versions:
        insert_all(connection, VERSIONS, rows.versions)
    for table, batch in rows.index.items():
        if batch:
            insert_all(connection, table, batch)


def install(engine: Engine, quiet: Iterable[object]) -> None:
    """Hold version rows, index rows and claims back on this engine: written before any statement not in
    `quiet` (statements that read no version rows, index rows or claims), and before commit; dropped on
    rollback."""
    if engine in _QUIET:
        return
    _QUIET[engine] = frozenset(id(statement) for statement in quiet)
    event.listen(engine, "before_execute", _before_execute)
    event.listen(engine, "commit", write)
    event.listen(engine, "rollback", _drop)


def _before_execute(connection: Connection, statement: object, *_: Any) -> None:
    if connection.info.get(KEY) and id(statement) not in _QUIET.get(connection.engine, frozenset()):
        write(connection)


def _drop(connection: Connection) -> None:
    if connection.invalidated:  # lost with its database connection (reading `info` would raise)
        return
    connection.info.pop(KEY, None)
