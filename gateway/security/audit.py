"""AuditEvent on every access, durable before the answer leaves (docs/security.md, Audit).

Two ways in, one storage (gateway/store/audit_log.py):
- `store(connection, records)`: a unit of work that writes stores its AuditEvents in its own
  transaction, just before it commits, so a committed write always has its record (a reaction's writes
  are in that transaction too).
- `record(record)`: everything else (reads, searches, a refused or rolled-back write, a request refused
  before any interaction, an adapter's `import` record) goes on a bounded queue; one writer thread per
  process commits them in batches (group commit) and resolves each record's `Future` once its batch is
  committed. The caller waits for it before its answer leaves: `AuditRequests` (ASGI) for every HTTP
  request (the futures of a request are gathered in `PENDING`), the MLLP listener before its ACK, batch
  commands before they go on. Each batch is a link of its process's chain (`audit_batch`: process,
  number, the hash of the previous batch and of its events), so `gateway audit verify` finds a batch that
  was deleted or altered.

When the queue is full, or its writer cannot store a batch, requests fail closed with 503: nothing is
served unaudited. The write path is bypassed on purpose: storing an audit record is not itself an access,
and no entrance may create or change an AuditEvent (405).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

from sqlalchemy import Connection, Engine

from gateway.hooks import AccessRecord
from gateway.model.types import dumps
from gateway.search.dates import utc_now
from gateway.search.extract import Extractor
from gateway.security.audit_event import audit_event, audit_unavailable
from gateway.store import audit_log
from gateway.store.database import WRITE_OPTION, writer_turn
from gateway.telemetry.metrics import AUDIT_BACKLOG, AUDIT_RECORDS

log = logging.getLogger("gateway.audit")
STORED, FAILED = AUDIT_RECORDS.labels("stored"), AUDIT_RECORDS.labels("failed")

LINGER_SECONDS = 0.002  # how long the writer waits to fill a batch after its first record
ATTEMPTS = 5
# The futures of the records one HTTP request queued (set by AuditRequests for the request's length).
PENDING: ContextVar[list[Future[None]] | None] = ContextVar("gateway_audit_pending", default=None)


class AuditLost(Exception):
    """The audit writer could not store a batch: its requests are answered 503."""


@dataclass
class _Item:
    record: AccessRecord
    recorded: datetime
    done: Future[None]


class AuditQueue:
    """The AuditSink: in the write's own transaction, or a bounded queue drained by one writer thread
    that commits batches (group commit) and tells each record's waiter."""

    def __init__(
        self,
        engine: Engine,
        extractor: Extractor,
        size: int = 10000,
        batch: int = 500,
        waits: bool = False,
        wait_seconds: float = 10.0,
    ) -> None:
        self.engine = engine
        self.wait_seconds = wait_seconds  # how long an answer waits for its records (then 503)
        self.extractor = extractor
        self.batch = max(1, batch)
        self.waits = waits  # a full queue: wait for room (a batch command) instead of refusing (503)
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=max(1, size))
        self._writing = threading.Lock()  # held while a batch is written; `paused` holds it too
        self._start = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # This process's chain: a fresh one per process (and per queue), numbered from 1.
        self.process = f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid4().hex[:12]}"
        self._number = 0
        self._previous = ""

    # -- in the write's transaction ---------------------------------------------------------------------

    def store(self, connection: Connection, records: list[AccessRecord]) -> None:
        """Store the AuditEvents of a unit of work's records in its own transaction (before it commits)."""
        if not records:
            return
        now = utc_now()
        audit_log.insert_events(connection, self.extractor, [audit_event(r, now) for r in records], now)
        for record in records:
            record.context.audited = True

    # -- queued, durable before the answer ----------------------------------------------------------

    def record(self, record: AccessRecord) -> Future[None]:
        """Queue the record; its Future resolves once the batch holding it is committed. A full queue
        raises 503 (the access must not go unaudited); a queue that `waits` (a batch command's) waits for
        the writer to make room instead. The future is also added to the request's `PENDING`."""
        self._ensure_writer()
        item = _Item(record, utc_now(), Future())
        try:
            if self.waits:
                self.queue.put(item)
            else:
                self.queue.put_nowait(item)
        except queue.Full:
            log.error(
                "audit queue full: refused %s %s %s", record.interaction, record.res_type, record.res_ids[:5]
            )
            raise audit_unavailable() from None
        record.context.audited = True
        AUDIT_BACKLOG.set(self.queue.qsize())
        pending = PENDING.get()
        if pending is not None:
            pending.append(item.done)
        return item.done

    def full(self) -> bool:
        return self.queue.full()

    # -- the writer ---------------------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not (self._stop.is_set() and self.queue.empty()):
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._writing:
                items = [first]
                # Linger a moment for more records: one commit per batch instead of one per request, and
                # the requests waiting on it wait a few milliseconds at most.
                deadline = time.monotonic() + LINGER_SECONDS
                while len(items) < self.batch:
                    try:
                        items.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        break
                try:
                    self._write(items)
                finally:
                    for _ in items:
                        self.queue.task_done()

    def _write(self, items: list[_Item]) -> None:
        """Store the batch, with the records queued while it waited for its turn (`_more`), retrying
        while the database is away; then tell each record's waiter."""
        events = self._events(items)
        for attempt in range(ATTEMPTS):
            try:
                self.write(events, lambda: self._more(items, events))
            except Exception as error:  # the database is away: retry, then fail the waiting requests
                if attempt == ATTEMPTS - 1:
                    for event in events:
                        log.exception("audit record not stored: %s", dumps(event))
                    self._fail(items, error)
                    FAILED.inc(len(items))
                    return
                time.sleep(0.05 * 2**attempt)
            else:
                for item in items:
                    if not item.done.done():
                        item.done.set_result(None)
                STORED.inc(len(events))
                AUDIT_BACKLOG.set(self.queue.qsize())
                return

    def _events(self, items: list[_Item]) -> list[dict[str, object]]:
        """The AuditEvents of these records; a record that cannot be made into one fails its waiter (503)
        and stays in the log."""
        events = []
        for item in items:
            try:
                events.append(audit_event(item.record, item.recorded))
            except Exception as error:
                log.exception("audit record not stored: %s", item.record)
                item.done.set_exception(AuditLost(str(error)))
        return events

    def _more(self, items: list[_Item], events: list[dict[str, object]]) -> list[dict[str, object]]:
        """The records queued meanwhile, up to the batch size, taken into the batch once its turn has come
        (on SQLite, processes write in turn: a batch that waited for the others' takes what queued behind
        it, so they commit once instead of once each); their AuditEvents."""
        taken: list[_Item] = []
        while len(items) + len(taken) < self.batch:
            try:
                taken.append(self.queue.get_nowait())
            except queue.Empty:
                break
        items.extend(taken)
        more = self._events(taken)
        events.extend(more)
        return more

    @staticmethod
    def _fail(items: list[_Item], error: Exception) -> None:
        for item in items:
            if not item.done.done():
                item.done.set_exception(AuditLost(str(error)))

    def write(
        self, events: list[dict[str, object]], more: Callable[[], list[dict[str, object]]] | None = None
    ) -> None:
        """Commit a batch of AuditEvents, one transaction, as the next link of this process's chain; once
        the transaction has its turn, `more` may add the events queued meanwhile (to `events`)."""
        now = utc_now()
        options = {WRITE_OPTION: True}
        with (
            self.engine.connect().execution_options(**options) as connection,
            writer_turn(connection, True),  # SQLite: in turn with the write path, not in its busy handler
            connection.begin(),
        ):
            if more is not None:
                more()
            if not events:
                return
            ids = audit_log.insert_events(connection, self.extractor, events, now)
            contents = [dumps(event) for event in events]
            number = self._number + 1
            value = audit_log.add_batch(connection, self.process, number, self._previous, ids, contents, now)
        self._number, self._previous = number, value

    # -- control ------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every queued record is stored (tests, shutdown)."""
        if not self.queue.empty():
            self._ensure_writer()
        self.queue.join()

    def close(self) -> None:
        """Flush and stop the writer; a later record starts it again."""
        self.flush()
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the writer (tests: a blocked database)."""
        with self._writing:
            yield


def wait_durable(pending: list[Future[None]], timeout: float = 60.0) -> None:
    """Block until these records are stored (a batch command, the MLLP listener); AuditLost or a
    timeout raises 503."""
    for future in pending:
        try:
            future.result(timeout=timeout)
        except Exception as error:
            raise audit_unavailable() from error
