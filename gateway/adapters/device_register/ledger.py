"""What one register export has said so far, kept on disk instead of in memory: the units it lists (a full
export then marks the register's other units) and each unit's first line and content (a unit listed
twice with other content is refused). A private temporary SQLite file (SQLite's own: it is deleted when
closed) with a small page cache holds them, so an export of any size is imported in bounded memory."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable

from gateway.adapters import mapping as m

_SCHEMA = """
CREATE TABLE listed (system TEXT NOT NULL, number TEXT NOT NULL, PRIMARY KEY (system, number))
    WITHOUT ROWID;
CREATE TABLE seen (
    system TEXT NOT NULL, number TEXT NOT NULL, line INTEGER NOT NULL, content TEXT NOT NULL,
    PRIMARY KEY (system, number)
) WITHOUT ROWID;
CREATE TABLE held (rid INTEGER NOT NULL, value TEXT NOT NULL);
"""
_UNLISTED = """
SELECT rid FROM held GROUP BY rid
HAVING NOT MAX(EXISTS (SELECT 1 FROM listed WHERE listed.system = ? AND listed.number = held.value))
ORDER BY rid
"""


class Ledger:
    """One export's units, by register: what it lists, and what each unit's first row said. Used from
    one thread at a time (an import's chunks run in turn), locked all the same."""

    def __init__(self) -> None:
        # "": a private temporary database on disk, deleted when closed (pages beyond its cache spill)
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        # a scratch file: no journal, no syncs (nothing to recover after a crash)
        self._db.executescript(
            "PRAGMA cache_size=-2048; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + _SCHEMA
        )
        self._lock = threading.Lock()
        self._registers: dict[str, str] = {}  # identifier system → the register's name as first spelt
        self._owners: dict[str, set[str]] = {}  # identifier system → the owners (HSA-ids) rows name

    def note(self, register: str, number: str, owner: str | None = None) -> None:
        """Note a unit as listed (and its owner, as the row names it). A register spelt two ways is one
        register (its identifier system is lower case): else a full export spelling it so would mark
        each spelling's units missing."""
        system = m.unit_system(register)
        self._registers.setdefault(system, register)
        if owner:
            self._owners.setdefault(system, set()).add(owner)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO listed VALUES (?, ?)", (system, number))

    def registers(self) -> list[tuple[str, str]]:
        """(name as first spelt, identifier system) of each register the export lists units of."""
        return sorted((name, system) for system, name in self._registers.items())

    def owners(self, system: str) -> set[str]:
        """The owners the export's rows of a register name."""
        return set(self._owners.get(system, set()))

    def first(self, unit: tuple[str, str], line: int, content: str) -> tuple[int, str]:
        """The line and content of the unit's (identifier system, number) first row in the export:
        these, when this is its first."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?, ?)", (*unit, line, content))
            earlier: tuple[int, str] = self._db.execute(
                "SELECT line, content FROM seen WHERE system = ? AND number = ?", unit
            ).fetchone()
        return earlier

    def unlisted(self, system: str, claims: Iterable[tuple[int, str]]) -> list[int]:
        """Of the resources holding identifiers in `system` ((row id, value) each, streamed), those of
        which the export lists none of their values, in row id order."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO held VALUES (?, ?)", claims)
                return [rid for (rid,) in self._db.execute(_UNLISTED, (system,))]
            finally:
                # nothing kept: each call is given its claims whole (a unit of work run again, anew);
                # emptied rather than rolled back, which a database without a journal cannot do
                self._db.execute("DELETE FROM held")
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
