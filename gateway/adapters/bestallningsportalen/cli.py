"""`gateway import orders FILE…`: Beställningsportalen exports (a JSON object, a JSON array or JSON Lines)
through the adapter, streamed in bounded memory, with a progress bar and a summary; with `--workers N`,
in N processes (the orders partitioned by ordernummer, so each order's versions keep their order)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from gateway.adapters.bestallningsportalen.adapter import CHUNK, CLIENT, import_chunk
from gateway.adapters.bestallningsportalen.parse import Piece, pieces
from gateway.adapters.cli import (
    ClientOption,
    ImportAudit,
    console,
    count,
    describe,
    import_app,
    read_chunks,
    run_import,
)
from gateway.adapters.workers import Worker, Workers
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services


async def import_files(
    svc: Services, files: list[Path], progress: Progress, context: RequestContext | None = None
) -> Counter[str]:
    """Import order files as `context` (default: the adapter's own client), one audit record an order;
    the orders in chunks of CHUNK (`import_chunk`)."""
    tally: Counter[str] = Counter()
    context = context or CLIENT.context(svc)
    audit = ImportAudit(svc, context, "orders")
    chunk: list[tuple[str, Piece]] = []
    for item in _read(files, progress):
        chunk.append(item)
        if len(chunk) == CHUNK:
            _tell_all(tally, progress, chunk, await _import_audited(svc, context, audit, chunk))
            chunk = []
    if chunk:
        _tell_all(tally, progress, chunk, await _import_audited(svc, context, audit, chunk))
    return tally


async def _import_audited(
    svc: Services, context: RequestContext, audit: ImportAudit, chunk: list[tuple[str, Piece]]
) -> list[Json]:
    """Orders, and the `import` audit record of each whatever becomes of it; their batch-response
    entries."""
    entries: list[Json] = []
    try:
        with audit.collecting():
            entries = await import_chunk(svc, context, [piece for _, piece in chunk])
    finally:
        audit.record_many([(where, entries[i] if entries else None) for i, (where, _) in enumerate(chunk)])
    return entries


def _tell_all(
    tally: Counter[str], progress: Progress, chunk: list[tuple[str, Piece]], entries: list[Json]
) -> None:
    for (where, _), entry in zip(chunk, entries, strict=True):
        _tell(tally, progress, where, entry)


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
    """`import_files` in `workers` processes (gateway/adapters/workers.py) as `client_id` (None: the
    adapter's own client): an order goes to the process its ordernummer hashes to, so the versions of
    one order are imported in file order; answers are reported in file order."""
    tally: Counter[str] = Counter()
    with Workers(workers, CHUNK, _work, CLIENT, "orders", client_id) as pool:
        for (where, _), entry in pool.imported(
            (_key(piece), (where, piece)) for where, piece in _read(files, progress)
        ):
            _tell(tally, progress, where, entry)
    return tally


def _key(piece: Piece) -> str:
    number = piece.value.get("ordernummer") if isinstance(piece.value, dict) else None
    return str(number if number is not None else piece.number)


async def _work(worker: Worker, chunk: list[tuple[str, Piece]]) -> list[Json]:
    """In a worker process: a chunk of orders, audited."""
    return await _import_audited(worker.svc, worker.context, worker.audit, chunk)


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
