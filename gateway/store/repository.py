"""Storage operations on one database connection inside one transaction: the current and versioned
resource rows, their index rows and identifier claims. Callers own the transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    true,
    update,
)

from gateway.model.types import Json, dumps, loads
from gateway.search.extract import IndexRows
from gateway.store import pending, relations
from gateway.store.sizes import content_size
from gateway.store.tables import (
    DateIndex,
    IdentifierClaim,
    NumberIndex,
    ReferenceIndex,
    Resource,
    ResourceVersion,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from gateway.store.visibility import Visibility

R = cast(Table, Resource.__table__)
V = cast(Table, ResourceVersion.__table__)
CLAIM = cast(Table, IdentifierClaim.__table__)
_INDEX_TABLES = {
    "token": cast(Table, TokenIndex.__table__),
    "string": cast(Table, StringIndex.__table__),
    "reference": cast(Table, ReferenceIndex.__table__),
    "date": cast(Table, DateIndex.__table__),
    "number": cast(Table, NumberIndex.__table__),
    "uri": cast(Table, UriIndex.__table__),
}

# The statements of every write, built once: building and cache-keying a statement per call cost more
# than running it (bench/adapters_orders.py).
_CURRENT = select(R).where(R.c.res_type == bindparam("res_type"), R.c.res_id == bindparam("res_id"))
_CURRENT_LOCKED = _CURRENT.with_for_update()
_INSERT_VERSION = insert(V)
_INSERT_CURRENT = insert(R).returning(R.c.rid)
_UPDATE_CURRENT = (
    update(R)
    .where(R.c.rid == bindparam("old_rid"), R.c.version_id == bindparam("old_version"))
    .values(
        version_id=bindparam("version_id"),
        last_updated=bindparam("last_updated"),
        deleted=bindparam("deleted"),
        content=bindparam("content"),
        writer=bindparam("writer"),
    )
)
_CURRENT_MANY = select(R).where(R.c.rid.in_(bindparam("rids", expanding=True)))
# Many resources of one type by id: the unique (type, id) index answers id by id on both databases.


def _current_of(types: int, lock: bool) -> Select[Any]:
    """The current rows of the ids of `types` resource types: a branch (type, ids) each, so that each
    probes the type's ids in the (type, id) index (a row-value IN list scans the table on SQLite)."""
    branches = (
        and_(
            R.c.res_type == bindparam(f"res_type_{i}"), R.c.res_id.in_(bindparam(f"ids_{i}", expanding=True))
        )
        for i in range(types)
    )
    statement = select(R).where(or_(*branches))
    return statement.with_for_update() if lock else statement


CURRENT_OF_TYPES = 12  # the most types one query of `current_of` reads; more take another query
_CURRENT_OF = {
    (n, lock): _current_of(n, lock) for n in range(1, CURRENT_OF_TYPES + 1) for lock in (False, True)
}
# The claims of many identifiers (the claims' primary key answers each type × system × value asked;
# those not asked are dropped). Their resources are then read by rid: one query joining both let
# PostgreSQL hash-join a scan of every resource row (~15 ms a query at 200k resources).
_CLAIMS_OF = select(CLAIM.c.res_type, CLAIM.c.system, CLAIM.c.value, CLAIM.c.rid).where(
    CLAIM.c.res_type.in_(bindparam("types", expanding=True)),
    CLAIM.c.system.in_(bindparam("systems", expanding=True)),
    CLAIM.c.value.in_(bindparam("values", expanding=True)),
)
REF = _INDEX_TABLES["reference"]
# The resources of a type whose reference parameter points at any of some resources of one type on this
# server (a relative reference, or an absolute one under the server's base), by rid; read by rid after.
_REFERRING = select(REF.c.rid).where(
    REF.c.res_type == bindparam("res_type"),
    REF.c.param == bindparam("param"),
    REF.c.target_id.in_(bindparam("ids", expanding=True)),
    REF.c.target_type == bindparam("target_type"),
    or_(REF.c.url.is_(None), REF.c.url == bindparam("base")),
)
_CLAIMED_BY = select(CLAIM.c.rid).where(
    CLAIM.c.res_type == bindparam("res_type"),
    CLAIM.c.system == bindparam("system"),
    CLAIM.c.value == bindparam("value"),
)
_INSERT_CLAIMS = insert(CLAIM)
_DELETE_CLAIMS = delete(CLAIM).where(CLAIM.c.rid == bindparam("old_rid"))
_INSERT_INDEX = {name: insert(table) for name, table in _INDEX_TABLES.items()}
_DELETE_INDEX = {
    name: delete(table).where(table.c.rid == bindparam("old_rid")) for name, table in _INDEX_TABLES.items()
}


# Statements that read no version rows, index rows or claims (claims held back are looked up beside
# _CLAIMED_BY and _CLAIMS_OF): held-back rows need not be written before them.
QUIET = (
    *_CURRENT_OF.values(),
    _CURRENT,
    _CURRENT_LOCKED,
    _CURRENT_MANY,
    _INSERT_VERSION,
    _INSERT_CURRENT,
    _UPDATE_CURRENT,
    _CLAIMED_BY,
    _CLAIMS_OF,
    _DELETE_CLAIMS,
    *_DELETE_INDEX.values(),
    *relations.QUIET,
)


def hold_index_writes(engine: Engine) -> None:
    """Version rows, index rows and claims of this engine's write transactions are held back and written
    together."""
    pending.install(engine, QUIET)


@dataclass(frozen=True)
class Stored:
    """One version of a resource as stored; `content` is its JSON text, meta included."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: str
    rid: int = 0
    # The organisation whose client wrote the current version (None: a trusted writer); current rows only.
    writer: str | None = None

    def json(self) -> Json:
        data: Json = loads(self.content)
        return data


_VISIBLE_CURRENT: dict[int, tuple[ColumnElement[bool], Select[Any]]] = {}


def _visible_current(visible: ColumnElement[bool]) -> Select[Any]:
    """The lookup by type and id under a visibility condition, built once per condition (conditions are
    kept by the policy, so a reader's statement is reused, not built and cache-keyed per read)."""
    found = _VISIBLE_CURRENT.get(id(visible))
    if found is not None and found[0] is visible:
        return found[1]
    if len(_VISIBLE_CURRENT) > 4096:
        _VISIBLE_CURRENT.clear()
    statement = _CURRENT.where(visible)
    _VISIBLE_CURRENT[id(visible)] = (visible, statement)
    return statement


def _stored(row: Any) -> Stored:
    return Stored(
        res_type=row.res_type,
        res_id=row.res_id,
        version_id=row.version_id,
        last_updated=row.last_updated,
        deleted=row.deleted,
        content=row.content,
        rid=getattr(row, "rid", 0),
        writer=getattr(row, "writer", None),
    )


class Repository:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def current(self, res_type: str, res_id: str, lock: bool = False) -> Stored | None:
        """The current version; `lock` holds its row until the transaction ends (PostgreSQL), so
        concurrent updaters of one resource queue instead of colliding."""
        statement = _CURRENT_LOCKED if lock else _CURRENT
        row = self.connection.execute(statement, {"res_type": res_type, "res_id": res_id}).first()
        return _stored(row) if row else None

    def current_visible(self, res_type: str, res_id: str, visibility: Visibility) -> Stored | None:
        """The current version (a tombstone too) when the reader sees it; None alike when it does not and
        when there is none, from one query."""
        visible = visibility.where(R, res_type)
        if visibility.everything or visible is true():  # all of its type: the prebuilt lookup
            return self.current(res_type, res_id)
        statement = _visible_current(visible)
        row = self.connection.execute(statement, {"res_type": res_type, "res_id": res_id}).first()
        return _stored(row) if row else None

    def current_many(self, rids: Sequence[int]) -> list[Stored]:
        """Current versions by rid, in the order given."""
        if not rids:
            return []
        rows = self.connection.execute(_CURRENT_MANY, {"rids": list(rids)}).all()
        by_rid = {row.rid: _stored(row) for row in rows}
        return [by_rid[rid] for rid in rids if rid in by_rid]

    def version(self, res_type: str, res_id: str, version_id: int) -> Stored | None:
        row = self.connection.execute(
            select(V).where(V.c.res_type == res_type, V.c.res_id == res_id, V.c.version_id == version_id)
        ).first()
        return _stored(row) if row else None

    def write(
        self,
        previous: Stored | None,
        resource: Json,
        method: str,
        now: datetime,
        deleted: bool = False,
        writer: str | None = None,
    ) -> Stored:
        """Store a new version (the next after `previous`); `writer` is the organisation whose client
        wrote it (None: the gateway's own writers, region-wide clients: `resource.writer`). A concurrent
        writer of the same version is caught on the current row (the UPDATE replaces only the version it
        read: StaleVersion; the INSERT of a new resource meets the unique type and id), and again by the
        unique constraint on resource_version when the held-back version rows are written; the caller
        re-runs or answers 412."""
        version_id = previous.version_id + 1 if previous else 1
        content = dumps(resource)
        values = {
            "res_type": resource["resourceType"],
            "res_id": resource["id"],
            "version_id": version_id,
            "last_updated": now,
            "deleted": deleted,
            "content": content,
        }
        waiting = pending.held(self.connection)
        if waiting is not None:
            waiting.add_version(values | {"method": method})
        else:
            self.connection.execute(_INSERT_VERSION, values | {"method": method})
        if previous is None:
            rid = self.connection.execute(_INSERT_CURRENT, values | {"writer": writer}).scalar_one()
        else:
            rid = previous.rid
            changed = {key: values[key] for key in ("version_id", "last_updated", "deleted", "content")}
            changed["writer"] = writer
            result = self.connection.execute(
                _UPDATE_CURRENT, changed | {"old_rid": rid, "old_version": previous.version_id}
            )
            if result.rowcount != 1:
                raise StaleVersion(resource["resourceType"], resource["id"])
        return Stored(rid=rid, **values)

    def replace_index(self, rid: int, rows: IndexRows | None, fresh: bool = False) -> None:
        """Replace the resource's index rows (None removes them, as for a tombstone). `fresh`: the
        resource row was just inserted, so there is nothing to remove first. The new rows are held back
        until the transaction next reads or commits (gateway.store.pending)."""
        waiting = pending.held(self.connection)
        if not fresh:
            if waiting is not None:
                waiting.drop_index(rid)
            for removal in _DELETE_INDEX.values():
                self.connection.execute(removal, {"old_rid": rid})
        if rows is None:
            return
        for name, addition in _INSERT_INDEX.items():
            batch = [row | {"rid": rid} for row in getattr(rows, name)]
            if batch and waiting is not None:
                waiting.add_index(_INDEX_TABLES[name], batch)
            elif batch:
                self.connection.execute(addition, batch)

    def replace_claims(
        self, rid: int, res_type: str, identifiers: Iterable[tuple[str, str]], fresh: bool = False
    ) -> None:
        """Claim each (system, value) for this resource. A claim held by another resource makes the
        insert fail on the primary key: the database, not a prior read, keeps identifiers unique."""
        waiting = pending.held(self.connection)
        if not fresh:
            if waiting is not None:
                waiting.drop_claims(rid)
            self.connection.execute(_DELETE_CLAIMS, {"old_rid": rid})
        rows = [
            {"res_type": res_type, "system": system, "value": value, "rid": rid}
            for system, value in sorted(set(identifiers))
        ]
        if rows and waiting is not None:
            waiting.add_claims(rows)
        elif rows:
            self.connection.execute(_INSERT_CLAIMS, rows)

    def current_of(
        self, keys: Iterable[tuple[str, str]], lock: bool = False
    ) -> dict[tuple[str, str], Stored]:
        """Current versions of many (type, id) keys in one query (a branch per type); absent ones are left
        out. `lock` holds the rows found as `current` does (PostgreSQL)."""
        by_type: dict[str, set[str]] = {}
        for res_type, res_id in keys:
            by_type.setdefault(res_type, set()).add(res_id)
        types = sorted(by_type.items())
        found: dict[tuple[str, str], Stored] = {}
        for start in range(0, len(types), CURRENT_OF_TYPES):
            some = types[start : start + CURRENT_OF_TYPES]
            values: dict[str, object] = {}
            for i, (res_type, ids) in enumerate(some):
                values |= {f"res_type_{i}": res_type, f"ids_{i}": sorted(ids)}
            rows = self.connection.execute(_CURRENT_OF[len(some), lock], values)
            found |= {(row.res_type, row.res_id): _stored(row) for row in rows}
        return found

    def held_by(self, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], Stored]:
        """The current version of the resource holding each identifier, by (type, system, value): the
        claims of them all in one query (with those held back in this transaction), their resources in
        one more. It probes every type × system × value asked: keys of many values are best asked type by
        type."""
        wanted = set(keys)
        if not wanted:
            return {}
        types, systems, values = (sorted({key[i] for key in wanted}) for i in range(3))
        claims = self.connection.execute(_CLAIMS_OF, {"types": types, "systems": systems, "values": values})
        rids = {(row.res_type, row.system, row.value): row.rid for row in claims}
        waiting = pending.held(self.connection)
        if waiting:  # claims held back in this transaction, of resources whose rows are written
            for key in wanted - rids.keys():
                if (rid := waiting.claimed_by(*key)) is not None:
                    rids[key] = rid
        rids = {key: rid for key, rid in rids.items() if key in wanted}
        by_rid = {stored.rid: stored for stored in self.current_many(sorted(set(rids.values())))}
        return {key: by_rid[rid] for key, rid in rids.items() if rid in by_rid}

    def referring(
        self, res_type: str, param: str, target_type: str, ids: Iterable[str], base: str = ""
    ) -> list[Stored]:
        """The current resources of `res_type` whose reference search parameter `param` points at any of
        `target_type`/`ids` here (`base`: this server's base URL): `res_type?param=T/a,T/b,…`, without
        the search's parsing and planning, for the many targets of one chunk of source records."""
        wanted = sorted(set(ids))
        if not wanted:
            return []
        values = {"res_type": res_type, "param": param, "target_type": target_type, "ids": wanted}
        rids = sorted({row.rid for row in self.connection.execute(_REFERRING, values | {"base": base})})
        return [stored for stored in self.current_many(rids) if not stored.deleted]

    def claims_in(self, res_type: str, system: str) -> Iterator[tuple[int, str]]:
        """(rid, value) of every identifier of this type in `system`: what holds identifiers there,
        streamed (a server-side cursor on PostgreSQL) while the unit of work lasts."""
        statement = select(CLAIM.c.rid, CLAIM.c.value).where(
            CLAIM.c.res_type == res_type, CLAIM.c.system == system
        )
        result = self.connection.execute(statement.execution_options(yield_per=2000))
        return ((row.rid, row.value) for row in result)

    def claimed_by(self, res_type: str, system: str, value: str) -> int | None:
        """The resource holding the identifier: a claim held back in this transaction, or a stored one."""
        waiting = pending.held(self.connection)
        holder = waiting.claimed_by(res_type, system, value) if waiting is not None else None
        if holder is not None:
            return holder
        return self.connection.execute(
            _CLAIMED_BY, {"res_type": res_type, "system": system, "value": value}
        ).scalar()


class StaleVersion(Exception):
    """The current version changed between read and write (a concurrent update won)."""

    def __init__(self, res_type: str, res_id: str) -> None:
        super().__init__(f"{res_type}/{res_id} was changed concurrently")


def history(
    connection: Connection,
    res_type: str | None,
    res_id: str | None,
    since: datetime | None,
    before_seq: int | None,
    limit: int,
    visibility: Visibility | None = None,
    check: Callable[[list[int]], None] | None = None,
) -> list[tuple[int, str, Stored]]:
    """Versions newest first as (seq, method, version), for instance, type or system history; with
    `visibility`, only of resources whose current version (or tombstone) the reader sees. `check` is
    given their stored sizes before they are read (the response budget), and may refuse."""
    if check is not None:
        sizes = history_statement(
            select(V.c.seq, content_size(V.c.content)), res_type, res_id, since, before_seq, limit, visibility
        )
        check([int(row[1] or 0) for row in connection.execute(sizes)])
    statement = history_statement(select(V), res_type, res_id, since, before_seq, limit, visibility)
    return [(row.seq, row.method, _stored(row)) for row in connection.execute(statement)]


def history_statement(
    statement: Select[Any],
    res_type: str | None,
    res_id: str | None,
    since: datetime | None,
    before_seq: int | None,
    limit: int,
    visibility: Visibility | None,
) -> Select[Any]:
    if visibility is not None and not visibility.everything:
        current = R.alias()
        statement = statement.join(
            current, and_(current.c.res_type == V.c.res_type, current.c.res_id == V.c.res_id)
        ).where(visibility.where(current, res_type))
    if res_type is not None:
        statement = statement.where(V.c.res_type == res_type)
    if res_id is not None:
        statement = statement.where(V.c.res_id == res_id)
    if since is not None:
        statement = statement.where(V.c.last_updated >= since)
    if before_seq is not None:
        statement = statement.where(V.c.seq < before_seq)
    return statement.order_by(V.c.seq.desc()).limit(limit)
