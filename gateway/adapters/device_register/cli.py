"""`gateway import devices [--mode full|delta] FILE…`: device register CSV exports through the adapter,
streamed in bounded memory, with a progress bar and a summary."""

from __future__ import annotations

from collections import Counter
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
from gateway.adapters.device_register.adapter import CLIENT, MODES, Importer, in_chunks, open_csv
from gateway.adapters.device_register.parse import HeaderError, Row
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services

HEADER_REJECTED: Json = {"response": {"status": "400 Bad Request"}}  # a file's audit record: no row read


async def import_files(
    svc: Services, files: list[Path], mode: str, progress: Progress, context: RequestContext | None = None
) -> Counter[str]:
    """Import register files as `context` (default: the adapter's own client), one audit record a row
    (a file rejected whole at its header: one for the file)."""
    tally: Counter[str] = Counter()
    context = context or CLIENT.context(svc)
    audit = ImportAudit(svc, context, "devices")
    for path in files:
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
        for rows in in_chunks(export.rows()):
            for row, entry in zip(rows, await _audited(audit, path, importer, rows), strict=True):
                status = count(tally, entry)
                if not status.startswith(("200", "201")):
                    progress.console.print(
                        f"{path}: line {row.line}: {status} {describe(entry)}", markup=False
                    )
        tally["marked missing"] += len(await importer.finish())
    return tally


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
) -> None:
    """Import device register rows (SESAM, Medusa). Each row is accepted or rejected on its own; rejected
    rows are quarantined (`GET /adapters/quarantine`, `gateway import --replay ID`). Exits 1 when any row
    or file was rejected. Each row is audited (an `import` AuditEvent), whatever its outcome, and so is
    a file rejected whole at its header."""
    if mode not in MODES:
        raise typer.BadParameter("full or delta", param_hint="--mode")
    tally = run_import(
        CLIENT, client, lambda svc, progress, context: import_files(svc, files, mode, progress, context)
    )
    keys = ("created", "updated", "unchanged", "rejected", "marked missing", "rejected files")
    console.print(f"device rows ({mode}): " + ", ".join(f"{key} {tally[key]}" for key in keys))
    if tally["rejected"] or tally["rejected files"]:
        raise typer.Exit(1)
