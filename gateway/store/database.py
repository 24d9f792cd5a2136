"""Engine creation for SQLite (embedded default) and PostgreSQL (production).

SQLite gets WAL, a busy timeout and `BEGIN IMMEDIATE` for write transactions, so that concurrent
writers queue on the database lock instead of failing when a read transaction tries to upgrade.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError

from gateway.limits import deadline

WRITE_OPTION = "gateway_write"
PING_AFTER_IDLE = 2.0  # seconds a PostgreSQL connection may rest in the pool and be lent untested
_RETURNED = "gateway_returned"  # when a pooled connection was last returned (or made), time.monotonic()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, schema: str = "") -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=16,
        )
        _configure_sqlite(engine)
        deadline.install(engine)  # an HTTP request's statements stop at its deadline
        return engine
    # No server-side prepared statements: psycopg prepares a statement after its 5th use, and PostgreSQL
    # then may plan it generically; the write path's row lookup by (type, id) went from ~0.5 ms to 1-4 ms
    # a call, growing with the store (bench/adapters_devices.py, docs/performance.md). The multi-row
    # INSERTs vary in shape and would churn psycopg's cache of prepared statements anyway.
    connect_args: dict[str, Any] = {"prepare_threshold": None}
    # No JIT compilation: a search PostgreSQL estimates as costly (many clauses) was compiled for seconds,
    # and a statement being compiled does not heed its statement_timeout (gateway.limits.deadline) nor a
    # cancel; the gateway's queries are short index lookups, where JIT only costs.
    options = ["-cjit=off"]
    if schema:
        options.append(f"-csearch_path={schema}")
    connect_args["options"] = " ".join(options)
    # Last in, first out: the connection lent is the one returned last, hot (not pinged, its
    # statement_timeout already the request's), and the others rest (gateway.limits.deadline, below).
    engine = create_engine(
        parsed, connect_args=connect_args, pool_size=10, max_overflow=20, pool_use_lifo=True
    )
    _ping_when_idle(engine)
    # Many-row INSERTs not sent through gateway.store.bulk (which sends the write path's and the audit
    # writer's as one JSON parameter) as one multi-row VALUES statement instead of psycopg's executemany,
    # which sends each row in pipeline mode and waits for its sync: the same "insertmanyvalues" SQLAlchemy
    # already uses for INSERT … RETURNING (bench/adapters_orders.py).
    engine.dialect.use_insertmanyvalues_wo_returning = True
    deadline.install(engine)  # an HTTP request's statements stop at its deadline
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """PostgreSQL: a pooled connection idle for PING_AFTER_IDLE seconds or more is tested (an empty
    statement) before it is lent, and replaced when the server dropped it (restarted, an idle timeout). One
    lent again sooner is not: SQLAlchemy's `pool_pre_ping` tested every one, a round trip on every read by
    id (docs/performance.md, Reads by id). A connection that dies within that time fails the one statement
    that finds it so; SQLAlchemy then replaces every connection of the pool older than it."""

    @event.listens_for(engine.pool, "connect")
    def _connected(_driver: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine.pool, "checkin")
    def _returned(_driver: Any, record: Any) -> None:
        if record is not None:
            record.info[_RETURNED] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _lent(driver: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_RETURNED, 0.0) < PING_AFTER_IDLE:
            return
        autocommit = driver.autocommit
        try:
            driver.autocommit = True  # no transaction begun for the ping
            driver.execute(";")
            driver.autocommit = autocommit
        except Exception as error:  # gone: the pool replaces it and tries again
            raise DisconnectionError(str(error)) from error


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # Reads come from memory, not from a 2 MB page cache that misses on every lookup of a large store.
        cursor.execute("PRAGMA cache_size=-65536")
        cursor.execute("PRAGMA mmap_size=1073741824")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def writer_turn(connection: Connection, write: bool) -> Iterator[None]:
    """SQLite: hold the database file's writer queue (an OS file lock beside it) around a write
    transaction, from before its BEGIN IMMEDIATE until after its COMMIT or ROLLBACK. SQLite's own busy
    handler makes a waiting writer sleep 1, 2, 5, 10 … ms between tries, so a writer that commits and
    begins again at once keeps the lock and the others mostly sleep; on the file lock a waiter wakes
    when it is released. Each turn opens the lock file anew (a descriptor of its own, closed with the
    turn), so threads of one process queue as processes do. Elsewhere (PostgreSQL, an in-memory SQLite,
    a read) it does nothing."""
    database = connection.engine.url.database if is_sqlite(connection.engine) else None
    if not write or not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # which releases the lock
