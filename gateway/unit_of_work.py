"""A unit of work (one database transaction of the write path, and what happened in it) and the small
things the write path decides with: a write's result, the conflicts that re-run a unit of work."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from gateway.hooks import AccessRecord, Change, RequestContext
from gateway.model.types import Json
from gateway.store import pending
from gateway.store.repository import Repository, Stored

if TYPE_CHECKING:
    from gateway.hooks import AccessPolicy

T = TypeVar("T")
_SAVEPOINT = "gateway_attempt"  # an attempt's; nested ones shadow it (SQL savepoints stack by name)


@dataclass
class UnitOfWork:
    """One database transaction and what happened in it."""

    connection: Connection
    context: RequestContext
    now: datetime
    changes: list[Change] = field(default_factory=list)
    records: list[AccessRecord] = field(default_factory=list)
    reaction_depth: int = 0
    # Its records were stored in its own transaction (a unit of work that writes).
    audited: bool = False
    # The write path's access policy, for rules that must read only what the writing client may see.
    policy: AccessPolicy | None = field(default=None, compare=False, repr=False)
    # Current rows read ahead and locked for writes to come (a transaction's PUTs, in one query); None
    # where none is stored. Each is taken once, and dropped when this unit of work writes the resource.
    read_ahead: dict[tuple[str, str], Stored | None] = field(default_factory=dict, repr=False)
    # What a rule noted for the AuditEvent of the write it judged, by `Type/id`: a detail and the
    # resources it followed (a return report routed by the gateway, docs/security.md).
    audit_notes: dict[str, tuple[str, list[str]]] = field(default_factory=dict, repr=False)

    def note_audit(self, reference: str, detail: str, resources: Iterable[str]) -> None:
        """Have the AuditEvent of this unit of work's write of `reference` say `detail` and name
        `resources` besides."""
        self.audit_notes[reference] = (detail, list(resources))

    def read_ahead_for_write(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read the current rows of resources about to be written, locked, in one query."""
        wanted = [key for key in keys if key not in self.read_ahead]
        found = self.repository.current_of(wanted, lock=True)
        self.read_ahead |= {key: found.get(key) for key in wanted}

    def current_for_write(self, res_type: str, res_id: str) -> Stored | None:
        """The current row of a resource about to be written, locked: as read ahead, or read now."""
        key = (res_type, res_id)
        if key in self.read_ahead:
            return self.read_ahead.pop(key)
        return self.repository.current(res_type, res_id, lock=True)

    @property
    def repository(self) -> Repository:
        return Repository(self.connection)

    def attempt(self, work: Callable[[], T]) -> T:
        """Run `work` in a savepoint of this transaction. When it raises, everything it did is undone
        before the error goes on: its statements rolled back to the savepoint, and the rows it held
        back, the changes and audit records it noted and the rows it read ahead forgotten, so that the
        transaction goes on as if it had not run (the caller decides what becomes of its input)."""
        changes, records, read_ahead = len(self.changes), len(self.records), dict(self.read_ahead)
        held = pending.snapshot(self.connection)
        # Sent to the driver directly: SQLAlchemy's savepoint objects cost ~10x the statements, and
        # nothing of SQLAlchemy's needs to know (the transaction around them is its own).
        driver = self.connection.connection.driver_connection
        assert driver is not None
        driver.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            result = work()
        except BaseException:
            pending.restore(self.connection, held)
            del self.changes[changes:]
            del self.records[records:]
            self.read_ahead = read_ahead
            if not self.connection.invalidated:
                # Should this fail too (the database already rolled the whole transaction back), its
                # error goes on, the work's attached as its context, and the transaction is rolled back.
                driver.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
            raise
        driver.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        return result


@dataclass(frozen=True)
class WriteResult:
    status: int  # 201 created, 200 updated / matched / unchanged
    stored: Stored
    changed: bool = True


class Conflict(Exception):
    """Raised inside a unit of work when the database saw a concurrent writer; the unit is re-run."""


class IdentifierTaken(Exception):
    """A business identifier of the resource is held by another resource of its type."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression


def identifiers_of(resource: Json) -> Iterator[tuple[str, str]]:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, dict):
        identifiers = [identifiers]
    for identifier in identifiers or []:
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and isinstance(value, str):
            yield system[:255], value[:255]


# PostgreSQL's answer to writers that wait on each other's rows (a deadlock) or could not be serialised:
# nothing was written, and the same work run again succeeds.
_CONCURRENT_STATES = frozenset({"40P01", "40001"})


def concurrent(error: OperationalError) -> bool:
    return getattr(error.orig, "sqlstate", None) in _CONCURRENT_STATES


def content_equal(a: Json, b: Json) -> bool:
    """Equal apart from the server-maintained meta.versionId and meta.lastUpdated."""

    def strip(resource: Json) -> Json:
        clean = dict(resource)
        meta = {k: v for k, v in clean.get("meta", {}).items() if k not in ("versionId", "lastUpdated")}
        clean.pop("meta", None)
        if meta:
            clean["meta"] = meta
        return clean

    return strip(a) == strip(b)
