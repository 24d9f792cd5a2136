"""`gateway import devices [--mode full|delta] FILE…`: device register CSV exports through the adapter,
streamed in bounded memory, with a progress bar and a summary."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from gateway.adapters.cli import console, count, describe, file_progress, import_app, read_chunks
from gateway.adapters.device_register.adapter import MODES, Importer, context_for, open_csv
from gateway.adapters.device_register.parse import HeaderError
from gateway.config import Settings
from gateway.services import Services


async def import_files(svc: Services, files: list[Path], mode: str, progress: Progress) -> Counter[str]:
    tally: Counter[str] = Counter()
    context = context_for(svc)
    for path in files:
        task = progress.add_task(path.name, total=path.stat().st_size)
        chunks = read_chunks(path, lambda n, task=task: progress.advance(task, n))  # type: ignore[misc]
        try:
            export = open_csv(chunks)
        except HeaderError as error:
            tally["rejected files"] += 1
            progress.console.print(f"[red]{path}: rejected whole: {error}", markup=False)
            continue
        importer = Importer(svc, context, export.header_text, mode)
        for row in export.rows():
            entry = await importer.row(row)
            status = count(tally, entry)
            if not status.startswith(("200", "201")):
                progress.console.print(f"{path}: line {row.line}: {status} {describe(entry)}", markup=False)
        tally["marked missing"] += len(await importer.finish())
    return tally


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
) -> None:
    """Import device register rows (SESAM, Medusa). Each row is accepted or rejected on its own; rejected
    rows are quarantined (`GET /adapters/quarantine`, `gateway import --replay ID`). Exits 1 when any row
    or file was rejected."""
    if mode not in MODES:
        raise typer.BadParameter("full or delta", param_hint="--mode")
    svc = Services.build(Settings.from_env())
    try:
        progress = file_progress(console)
        with progress:
            tally = asyncio.run(import_files(svc, files, mode, progress))
    finally:
        svc.engine.dispose()
    keys = ("created", "updated", "unchanged", "rejected", "marked missing", "rejected files")
    console.print(f"device rows ({mode}): " + ", ".join(f"{key} {tally[key]}" for key in keys))
    if tally["rejected"] or tally["rejected files"]:
        raise typer.Exit(1)
