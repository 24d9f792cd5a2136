"""`gateway import orders FILE…`: Beställningsportalen exports (a JSON object, a JSON array or JSON Lines)
through the adapter, streamed in bounded memory, with a progress bar and a summary; with `--workers N`,
in N processes (the orders partitioned by ordernummer, so each order's versions keep their order)."""

from __future__ import annotations

import asyncio
import multiprocessing
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from gateway.adapters.bestallningsportalen.adapter import CLIENT, import_order
from gateway.adapters.bestallningsportalen.parse import Piece, pieces
from gateway.adapters.cli import (
    ClientOption,
    ImportAudit,
    act_as,
    console,
    count,
    describe,
    import_app,
    read_chunks,
    run_import,
)
from gateway.config import Settings
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services

IN_FLIGHT = 32  # orders handed to worker processes and not yet answered, per worker


async def import_files(
    svc: Services, files: list[Path], progress: Progress, context: RequestContext | None = None
) -> Counter[str]:
    """Import order files as `context` (default: the adapter's own client), one audit record an order."""
    tally: Counter[str] = Counter()
    context = context or CLIENT.context(svc)
    audit = ImportAudit(svc, context, "orders")
    for where, piece in _read(files, progress):
        _tell(tally, progress, where, await _import_audited(svc, context, audit, where, piece))
    return tally


async def _import_audited(
    svc: Services, context: RequestContext, audit: ImportAudit, where: str, piece: Piece
) -> Json:
    """One order, and its `import` audit record whatever becomes of it; its batch-response entry."""
    entry = None
    try:
        with audit.collecting():
            entry = await import_order(svc, context, piece)
    finally:
        audit.record(where, entry)
    return entry


def _read(files: list[Path], progress: Progress) -> Iterator[tuple[str, Piece]]:
    """Every order of the files, streamed, with where it is (`FILE: order N`)."""
    for path in files:
        task = progress.add_task(path.name, total=path.stat().st_size)
        lines = path.suffix in (".ndjson", ".jsonl")
        chunks = read_chunks(path, lambda n, task=task: progress.advance(task, n))  # type: ignore[misc]
        for piece in pieces(chunks, lines=lines):
            yield f"{path}: order {piece.number}", piece


def _tell(tally: Counter[str], progress: Progress, where: str, entry: Json) -> None:
    status = count(tally, entry)
    if not status.startswith(("200", "201")):
        progress.console.print(f"[red]{escape(f'{where}: {status} {describe(entry)}')}")


def import_in_workers(
    files: list[Path], progress: Progress, client_id: str | None, workers: int
) -> Counter[str]:
    """`import_files` in `workers` processes, each with its own database connections, as `client_id`
    (None: the adapter's own client). An order goes to the process its ordernummer hashes to, so the
    versions of one order are imported in file order; answers are reported in file order; at most
    IN_FLIGHT orders a process are read ahead (bounded memory)."""
    spawn = multiprocessing.get_context("spawn")  # no database connection is inherited
    pools = [
        ProcessPoolExecutor(1, mp_context=spawn, initializer=_start_worker, initargs=(client_id,))
        for _ in range(workers)
    ]
    tally: Counter[str] = Counter()
    waiting: deque[tuple[str, Future[Json]]] = deque()
    try:
        for where, piece in _read(files, progress):
            key = piece.value.get("ordernummer") if isinstance(piece.value, dict) else None
            pool = pools[zlib.crc32(str(key if key is not None else piece.number).encode()) % workers]
            waiting.append((where, pool.submit(_import_piece, where, piece)))
            while len(waiting) > IN_FLIGHT * workers:
                done_where, answer = waiting.popleft()
                _tell(tally, progress, done_where, answer.result())
        while waiting:
            done_where, answer = waiting.popleft()
            _tell(tally, progress, done_where, answer.result())
    finally:
        for _, answer in waiting:  # broken off: what no worker has begun is not imported
            answer.cancel()
        for pool in pools:
            with suppress(BrokenProcessPool):
                pool.submit(_stop_worker).result()  # every audit record of the worker stored
            pool.shutdown()
    return tally


# -- in a worker process ----------------------------------------------------------------------------------


@dataclass
class _Worker:
    svc: Services
    context: RequestContext
    audit: ImportAudit
    loop: asyncio.AbstractEventLoop


_WORKER: list[_Worker] = []  # the worker process's one _Worker, once started


def _start_worker(client_id: str | None) -> None:
    svc = Services.build(Settings.from_env())
    context = act_as(CLIENT, svc, client_id)
    _WORKER.append(_Worker(svc, context, ImportAudit(svc, context, "orders"), asyncio.new_event_loop()))


def _import_piece(where: str, piece: Piece) -> Json:
    worker = _WORKER[0]
    return worker.loop.run_until_complete(
        _import_audited(worker.svc, worker.context, worker.audit, where, piece)
    )


def _stop_worker() -> None:
    worker = _WORKER.pop()
    worker.svc.close()
    worker.svc.engine.dispose()
    worker.loop.close()


@import_app.command("orders")
def import_orders(
    files: Annotated[
        list[Path], typer.Argument(help="Order exports: .json (object or array), .ndjson/.jsonl.")
    ],
    client: ClientOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (each order's versions stay in one, in order).")
    ] = 1,
) -> None:
    """Import Beställningsportalen orders. Each order is accepted or rejected on its own; rejected ones are
    quarantined (`GET /adapters/quarantine`, `gateway import --replay ID`). Exits 1 when any was rejected.
    Each order is audited (an `import` AuditEvent), whatever its outcome."""

    async def work(svc: Services, progress: Progress, context: RequestContext) -> Counter[str]:
        if workers == 1:
            return await import_files(svc, files, progress, context)
        return import_in_workers(files, progress, client, workers)  # the client checked by run_import

    tally = run_import(CLIENT, client, work)
    summary = ", ".join(f"{key} {tally[key]}" for key in ("created", "updated", "unchanged", "rejected"))
    console.print(f"orders: {summary}")
    if tally["rejected"]:
        raise typer.Exit(1)
