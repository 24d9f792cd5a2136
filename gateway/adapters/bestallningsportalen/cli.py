"""`gateway import orders FILE…`: Beställningsportalen exports (a JSON object, a JSON array or JSON Lines)
through the adapter, streamed in bounded memory, with a progress bar and a summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress

from gateway.adapters.bestallningsportalen.adapter import CLIENT, import_order
from gateway.adapters.bestallningsportalen.parse import pieces
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
from gateway.hooks import RequestContext
from gateway.services import Services


async def import_files(
    svc: Services, files: list[Path], progress: Progress, context: RequestContext | None = None
) -> Counter[str]:
    """Import order files as `context` (default: the adapter's own client), one audit record an order."""
    tally: Counter[str] = Counter()
    context = context or CLIENT.context(svc)
    audit = ImportAudit(svc, context, "orders")
    for path in files:
        task = progress.add_task(path.name, total=path.stat().st_size)
        lines = path.suffix in (".ndjson", ".jsonl")
        chunks = read_chunks(path, lambda n, task=task: progress.advance(task, n))  # type: ignore[misc]
        for piece in pieces(chunks, lines=lines):
            entry = None
            try:
                with audit.collecting():
                    entry = await import_order(svc, context, piece)
            finally:
                audit.record(f"{path}: order {piece.number}", entry)
            status = count(tally, entry)
            if not status.startswith(("200", "201")):
                progress.console.print(
                    f"[red]{escape(f'{path}: order {piece.number}: {status} {describe(entry)}')}"
                )
    return tally


@import_app.command("orders")
def import_orders(
    files: Annotated[
        list[Path], typer.Argument(help="Order exports: .json (object or array), .ndjson/.jsonl.")
    ],
    client: ClientOption = None,
) -> None:
    """Import Beställningsportalen orders. Each order is accepted or rejected on its own; rejected ones are
    quarantined (`GET /adapters/quarantine`, `gateway import --replay ID`). Exits 1 when any was rejected.
    Each order is audited (an `import` AuditEvent), whatever its outcome."""
    tally = run_import(
        CLIENT, client, lambda svc, progress, context: import_files(svc, files, progress, context)
    )
    summary = ", ".join(f"{key} {tally[key]}" for key in ("created", "updated", "unchanged", "rejected"))
    console.print(f"orders: {summary}")
    if tally["rejected"]:
        raise typer.Exit(1)
