"""`gateway import … --workers N`: an import's source records in N processes, each with its own database
connections, its own import audit and an event loop, set up once from the environment as the import's
client (`Worker`). A record goes to the process its key hashes to, so the records of one key (an order's
versions, a register unit's rows) are imported by one process in input order; a process takes its
records in chunks (the adapter's own chunk size), a chunk sent when full or when the oldest record not
yet answered is in it; answers come back in input order, and at most two chunks a process are read
ahead (bounded memory)."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from gateway.adapters.cli import ImportAudit, act_as
from gateway.adapters.intake import AdapterClient
from gateway.config import Settings
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services


@dataclass
class Worker:
    """What a worker process imports with: set up once, kept for the process's life."""

    svc: Services
    context: RequestContext
    audit: ImportAudit
    loop: asyncio.AbstractEventLoop
    state: dict[Any, Any] = field(default_factory=dict)  # the adapter's own, across its chunks


# A chunk of records through the adapter in a worker process (a module-level function: it is pickled by
# name); the answers, one batch-response entry a record, in order.
Work = Callable[[Worker, list[Any]], Coroutine[Any, Any, list[Json]]]

_WORKER: list[Worker] = []  # the worker process's one Worker, once started
PR_SET_PDEATHSIG = 1
PARENT_POLL_SECONDS = 1.0


def _start(adapter: AdapterClient, command: str, client_id: str | None, parent: int) -> None:
    _die_with(parent)
    svc = Services.build(Settings.from_env().for_batch())
    context = act_as(adapter, svc, client_id)
    _WORKER.append(Worker(svc, context, ImportAudit(svc, context, command), asyncio.new_event_loop()))


def _die_with(parent: int) -> None:
    """A worker ends when the import's process does, also when that one is killed (`kill -9`) and cannot
    stop it: the kernel sends it SIGKILL (Linux: PR_SET_PDEATHSIG), and a watch thread ends it once its
    parent is gone, where that is not available. Its unit of work then rolls back; a re-run of the
    import is correct (records stored are found unchanged)."""
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # gone already, before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run(work: Work, chunk: list[Any]) -> list[Json]:
    worker = _WORKER[0]
    return worker.loop.run_until_complete(work(worker, chunk))


def _stop() -> None:
    """Every audit record of the worker stored, its connections closed."""
    worker = _WORKER.pop()
    worker.svc.close()
    worker.svc.engine.dispose()
    worker.loop.close()


@dataclass
class _Batch:
    records: list[Any] = field(default_factory=list)
    answers: Future[list[Json]] | None = None


class Workers:
    """N worker processes importing through `work`; `imported` feeds them and gives the answers."""

    def __init__(
        self, count: int, chunk: int, work: Work, adapter: AdapterClient, command: str, client_id: str | None
    ) -> None:
        spawn = multiprocessing.get_context("spawn")  # no database connection is inherited
        self.chunk = chunk
        self.work = work
        self.pools = [
            ProcessPoolExecutor(
                1, mp_context=spawn, initializer=_start, initargs=(adapter, command, client_id, os.getpid())
            )
            for _ in range(count)
        ]

    def imported(self, records: Iterable[tuple[str, Any]]) -> Iterator[tuple[Any, Json]]:
        """(record, answer) for each (key, record), in input order, all of them answered by the end."""
        count = len(self.pools)
        gathering = [_Batch() for _ in range(count)]
        waiting: deque[tuple[Any, _Batch, int, int]] = deque()  # each record: record, batch, position, worker

        def send(worker: int) -> None:
            batch, gathering[worker] = gathering[worker], _Batch()
            batch.answers = self.pools[worker].submit(_run, self.work, batch.records)

        def oldest() -> tuple[Any, Json]:
            record, batch, position, worker = waiting.popleft()
            if batch.answers is None:
                send(worker)
            assert batch.answers is not None
            return record, batch.answers.result()[position]

        try:
            for key, record in records:
                worker = zlib.crc32(key.encode()) % count
                batch = gathering[worker]
                batch.records.append(record)
                waiting.append((record, batch, len(batch.records) - 1, worker))
                if len(batch.records) == self.chunk:
                    send(worker)
                while len(waiting) > 2 * self.chunk * count:
                    yield oldest()
            while waiting:
                yield oldest()
        finally:
            for _, batch, _, _ in waiting:  # broken off: what no worker has begun is not imported
                if batch.answers is not None:
                    batch.answers.cancel()

    def close(self) -> None:
        for pool in self.pools:
            with suppress(BrokenProcessPool):
                pool.submit(_stop).result()  # every audit record of the worker stored
            pool.shutdown()

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
