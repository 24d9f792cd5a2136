"""Statement time per request: each statement an HTTP request runs in the database stops once it has run
GATEWAY_STATEMENT_TIMEOUT seconds, and every statement of the request stops at once when its client
disconnects. PostgreSQL: the session's `statement_timeout`, set when one of the request's transactions
begins on a connection that has another, and a cancel request on disconnect; SQLite: a progress handler
that interrupts a statement past its time, and `interrupt()` on disconnect. A statement stopped so is
answered 503 with an OperationOutcome naming the setting (in a batch: that entry's answer). Per
statement, not per request: a long batch or adapter import of many quick statements is not cut off. Work
outside an HTTP request (the CLI's batch commands, the MLLP listener, the audit writer) has no deadline.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection, ExceptionContext

from gateway.errors import FhirError, unavailable

SETTING = "GATEWAY_STATEMENT_TIMEOUT"
# SQLite calls the progress handler every this many virtual machine instructions (~0.1 ms apart).
PROGRESS_STEPS = 10_000
_QUERY_CANCELED = "57014"  # PostgreSQL: canceled by statement_timeout or a cancel request


@dataclass
class Deadline:
    """One request's: the time each of its statements may take (0: no limit), whether its client went
    away, when the statement running on each connection began, and the connections running its
    transactions now (to cancel them)."""

    timeout: float
    cancelled: bool = False
    _started: dict[int, float] = field(default_factory=dict, repr=False)
    _running: set[Any] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def statement(self, driver: Any) -> None:
        """A statement begins on `driver` (a DBAPI connection)."""
        if self.cancelled:
            raise self.error()
        self._started[id(driver)] = time.monotonic()

    def stopped(self, driver: Any) -> bool:
        """Whether the statement running on `driver` must stop: the client went away or its time is up."""
        if self.cancelled:
            return True
        started = self._started.get(id(driver))
        return self.timeout > 0 and started is not None and time.monotonic() > started + self.timeout

    def error(self) -> FhirError:
        if self.cancelled:
            return unavailable("The client disconnected; its request was stopped", "timeout")
        return unavailable(
            f"A database statement of this request ran longer than {self.timeout:g} s ({SETTING}) and was "
            "stopped; ask for less (narrower search criteria, a smaller _count)"
        )

    def cancel(self) -> None:
        """The client went away: stop what runs now, and every statement after."""
        with self._lock:
            self.cancelled = True
            for driver in self._running:
                _interrupt(driver)

    def enter(self, driver: Any) -> None:
        with self._lock:
            self._running.add(driver)
            if self.cancelled:
                _interrupt(driver)

    def leave(self, driver: Any) -> None:
        with self._lock:
            self._running.discard(driver)
            self._started.pop(id(driver), None)


def _interrupt(driver: Any) -> None:
    """Stop what a driver connection runs: psycopg sends a cancel request, sqlite3 interrupts."""
    stop = getattr(driver, "cancel", None) or getattr(driver, "interrupt", None)
    if stop is not None:
        with contextlib.suppress(Exception):  # the connection is gone already: nothing runs on it
            stop()


_current: ContextVar[Deadline | None] = ContextVar("statement_deadline", default=None)

# PostgreSQL: the statement_timeout a pooled connection's session has, in its pool record's `info`; absent:
# the server's default (a new connection), _UNSURE: unknown (a transaction that may have set it rolled back).
_TIMEOUT = "gateway_statement_timeout_ms"
_UNSURE = -1


def _rolling_back(driver: Any, info: dict[str, Any]) -> None:
    """A rollback is about to undo a SET the transaction open on `driver` made, if any (in autocommit, or
    with no transaction open, there is nothing to undo)."""
    if driver.info.transaction_status != TransactionStatus.IDLE:
        info[_TIMEOUT] = _UNSURE


def _set_timeout(conn: Connection, deadline: Deadline | None) -> None:
    """Give the session the statement_timeout of `deadline` (the server's default without one) when it has
    another. Set for the session, not per transaction (`SET LOCAL`): the setting is the same for every
    request, so a connection the pool lends again and again is set once, not once per transaction, which
    cost a round trip on every read (docs/performance.md, Reads by id)."""
    wanted = max(1, int(deadline.timeout * 1000)) if deadline is not None and deadline.timeout > 0 else None
    info = conn.connection.info
    if info.get(_TIMEOUT) == wanted:
        return
    conn.exec_driver_sql(f"SET statement_timeout = {wanted}" if wanted else "RESET statement_timeout")
    if wanted is None:
        info.pop(_TIMEOUT, None)
    else:
        info[_TIMEOUT] = wanted


def current() -> Deadline | None:
    return _current.get()


@contextmanager
def bounded(deadline: Deadline) -> Iterator[Deadline]:
    """`deadline` bounds the statements of what runs inside (worker threads started inside too)."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)


def install(engine: Engine) -> None:
    """Make `engine`'s connections keep the deadline of the request they run for."""
    sqlite = engine.dialect.name == "sqlite"

    if sqlite:

        @event.listens_for(engine, "connect")
        def _progress(dbapi_connection: Any, _record: Any) -> None:
            def handler() -> int:
                deadline = _current.get()
                return 1 if deadline is not None and deadline.stopped(dbapi_connection) else 0

            dbapi_connection.set_progress_handler(handler, PROGRESS_STEPS)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        deadline = _current.get()
        if deadline is not None:
            if deadline.cancelled:
                raise deadline.error()
            deadline.enter(conn.connection.driver_connection)
        if not sqlite:
            _set_timeout(conn, deadline)

    def _end(conn: Connection) -> None:
        deadline = _current.get()
        if deadline is not None:
            deadline.leave(conn.connection.driver_connection)

    def _rolled_back(conn: Connection) -> None:
        _end(conn)
        if not sqlite:
            _rolling_back(conn.connection.driver_connection, conn.connection.info)

    event.listen(engine, "commit", _end)
    event.listen(engine, "rollback", _rolled_back)

    if not sqlite:

        @event.listens_for(engine.pool, "reset")
        def _reset(driver: Any, record: Any, _state: Any) -> None:
            _rolling_back(driver, record.info)  # what a connection returned left open

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Connection, *_args: Any) -> None:
        deadline = _current.get()
        if deadline is not None:
            deadline.statement(conn.connection.driver_connection)

    @event.listens_for(engine, "handle_error")
    def _stopped(context: ExceptionContext) -> None:
        deadline = _current.get()
        if deadline is None:
            return
        original = context.original_exception
        if getattr(original, "sqlstate", None) == _QUERY_CANCELED or (
            sqlite and str(original) == "interrupted"
        ):
            raise deadline.error() from original
