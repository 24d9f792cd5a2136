"""`gateway import devices [--mode full|delta] FILE…`: device register CSV exports through the adapter,
streamed in bounded memory, with a progress bar and a summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

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
from gateway.adapters.device_register import device
from gateway.adapters.device_register.adapter import CHUNK, CLIENT, MODES, Importer, in_chunks, open_csv
from gateway.adapters.device_register.parse import HeaderError, RegisterCsv, Row
from gateway.adapters.workers import Worker, Workers
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services

HEADER_REJECTED: Json = {"response": {"status": "400 Bad Request"}}  # a file's audit record: no row read


async def import_files(
    svc: Services,
    files: list[Path],
    mode: str,
    progress: Progress,
    context: RequestContext | None = None,
    pool: Workers | None = None,
) -> Counter[str]:
    """Import register files as `context` (default: the adapter's own client), one audit record a row
    (a file rejected whole at its header: one for the file); with a `pool`, the rows in its worker
    processes (a unit's rows in one, in file order), each file's rows all answered before the next
    file's are read, and a full export's units it no longer lists marked here after them."""
    tally: Counter[str] = Counter()
    context = context or CLIENT.context(svc)
    audit = ImportAudit(svc, context, "devices")
    for number, path in enumerate(files):
        task = progress.add_task(path.name, total=path.stat().st_size)
        chunks = read_chunks(path, lambda n, task=task: progress.advance(task, n))  # type: ignore[misc]
        try:
            export = open_csv(chunks)
        except HeaderError as error:
            tally["rejected files"] += 1
            progress.console.print(f"[red]{path}: rejected whole: {error}", markup=False)
            audit.record(f"{path}: file rejected whole at its header ({error})", HEADER_REJECTED)
            continue
        importer = Importer(svc, context, export.header_text, mode)
        try:
            if pool is None:
                for rows in in_chunks(export.rows()):
                    for row, entry in zip(rows, await _audited(audit, path, importer, rows), strict=True):
                        _tell(tally, progress, path, row, entry)
            else:
                for (*_, row), entry in pool.imported(_records(importer, export, number, path)):
                    _tell(tally, progress, path, row, entry)
            tally["marked missing"] += len(await importer.finish())
        finally:
            importer.ledger.close()
    return tally


async def import_in_workers(
    svc: Services,
    files: list[Path],
    mode: str,
    progress: Progress,
    context: RequestContext,
    client_id: str | None,
    workers: int,
) -> Counter[str]:
    """`import_files` with the rows in `workers` processes acting as `client_id` (None: the adapter's own
    client), which `context` is the context of."""
    with Workers(workers, CHUNK, _work, CLIENT, "devices", client_id) as pool:
        return await import_files(svc, files, mode, progress, context, pool)


def _tell(tally: Counter[str], progress: Progress, path: Path, row: Row, entry: Json) -> None:
    status = count(tally, entry)
    if not status.startswith(("200", "201")):
        progress.console.print(f"{path}: line {row.line}: {status} {describe(entry)}", markup=False)


def _records(
    importer: Importer, export: RegisterCsv, number: int, path: Path
) -> Iterator[tuple[str, tuple[int, str, str, Row]]]:
    """The export's rows for the worker processes, by unit; each unit noted as listed by `importer` (what
    the workers' own importers note), whose `finish` marks what a full export lacks."""
    for row in export.rows():
        importer.note_listed(row)
        yield _unit(row), (number, str(path), export.header_text, row)


def _unit(row: Row) -> str:
    """The worker key of a row: its unit (a unit's rows are imported by one process, in file order)."""
    if row.values.get("register") and row.values.get("individnummer"):
        return "|".join(device.unit_key(row.values))
    return f"line {row.line}"


async def _work(worker: Worker, chunk: list[tuple[int, str, str, Row]]) -> list[Json]:
    """In a worker process: a chunk of rows (of one file or more), each file's with an importer of its
    own (a delta: the main process marks what a full export lacks), audited."""
    entries: list[Json] = []
    for (number, path, header), group in groupby(chunk, key=lambda record: record[:3]):
        importer = worker.state.get(number)
        if importer is None:
            for earlier in [n for n in worker.state if n < number]:  # files answered whole before this one
                worker.state.pop(earlier).ledger.close()
            importer = worker.state[number] = Importer(worker.svc, worker.context, header, "delta")
        entries += await _audited(worker.audit, Path(path), importer, [row for *_, row in group])
    return entries


async def _audited(audit: ImportAudit, path: Path, importer: Importer, rows: list[Row]) -> list[Json]:
    """A chunk of rows through the importer, each row audited (as broken off when the chunk is)."""
    entries: list[Json] = []
    try:
        with audit.collecting():
            entries = await importer.rows(rows)
    finally:
        lines = [f"{path}: line {row.line}" for row in rows]
        audit.record_many([(line, entries[index] if entries else None) for index, line in enumerate(lines)])
    return entries


@import_app.command("devices")
def import_devices(
    files: Annotated[list[Path], typer.Argument(help="Register exports: semicolon-separated CSV.")],
    mode: Annotated[
        str,
        typer.Option(
            help="full: the register's whole state (units not listed are marked "
            "missing); delta: only changed rows."
        ),
    ] = "delta",
    client: ClientOption = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (each unit's rows stay in one, in order).")
    ] = 1,
) -> None:
    """Import device register rows (SESAM, Medusa). Each row is accepted or rejected on its own; rejected
    rows are quarantined (`GET /adapters/quarantine`, `gateway import --replay ID`). Exits 1 when any row
    or file was rejected. Each row is audited (an `import` AuditEvent), whatever its outcome, and so is
    a file rejected whole at its header."""
    if mode not in MODES:
        raise typer.BadParameter("full or delta", param_hint="--mode")

    async def work(svc: Services, progress: Progress, context: RequestContext) -> Counter[str]:
        if workers == 1:
            return await import_files(svc, files, mode, progress, context)
        return await import_in_workers(svc, files, mode, progress, context, client, workers)

    tally = run_import(CLIENT, client, work)
    keys = ("created", "updated", "unchanged", "rejected", "marked missing", "rejected files")
    console.print(f"device rows ({mode}): " + ", ".join(f"{key} {tally[key]}" for key in keys))
    if tally["rejected"] or tally["rejected files"]:
        raise typer.Exit(1)
