"""`gateway export run-once`: one pass of the export worker (delete what has expired, make every job
waiting or left by a dead worker), for operators and tests; `gateway serve` runs it every
GATEWAY_EXPORT_POLL_SECONDS (docs/fhir/export.md)."""

from __future__ import annotations

import typer
from rich.console import Console

from gateway.config import Settings
from gateway.export.worker import Worker
from gateway.services import Services

export_app = typer.Typer(help="Bulk $export jobs (docs/fhir/export.md).", no_args_is_help=True)
out = Console(soft_wrap=True)


@export_app.command("run-once")
def run_once() -> None:
    """Delete expired exports, then make every export job there is; print how many were finished."""
    svc = Services.build(Settings.from_env().for_batch())
    try:
        finished = Worker(svc).run_once()
    finally:
        svc.close()
        svc.engine.dispose()
    out.print(f"export jobs finished: {finished}")
