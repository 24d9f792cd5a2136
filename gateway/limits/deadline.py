"""Statement time per request: each statement an HTTP request runs in the database stops once it has run
GATEWAY_STATEMENT_TIMEOUT seconds, and every statement of the request stops at once when its client
disconnects. PostgreSQL: `SET LOCAL statement_timeout` at the start of each of the request's
transactions, and a cancel request on disconnect; SQLite: a progress handler that interrupts a statement
past its time, and `interrupt()` on disconnect. A statement stopped so is answered 503 with an
OperationOutcome naming the setting (in a batch: that entry's answer). Per statement, not per request:
a long batch or adapter import of many quick statements is not cut off. Work outside an HTTP request (the
CLI's batch commands, the MLLP listener, the audit writer) has no deadline.
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
        if deadline is None:
            return
        if deadline.cancelled:
            raise deadline.error()
        deadline.enter(conn.connection.driver_connection)
        if deadline.timeout > 0 and not sqlite:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(deadline.timeout * 1000))}")

    def _end(conn: Connection) -> None:
        deadline = _current.get()
        if deadline is not None:
            deadline.leave(conn.connection.driver_connection)

    event.listen(engine, "commit", _end)
    event.listen(engine, "rollback", _end)

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
