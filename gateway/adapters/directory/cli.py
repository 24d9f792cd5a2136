"""`gateway import directory FILE…`: an HSA catalogue extract (JSON lines, docs/adapters/directory.md)
written through the write path as the gateway's CLI (a trusted writer: the region maintains the
directory). Each unit is accepted or refused on its own; exits 1 when any was refused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gateway.adapters.cli import import_app
from gateway.adapters.directory.importer import DirectoryWriter
from gateway.adapters.directory.records import Refused, Unit, parents_first, read
from gateway.adapters.master_data import parse_datetime
from gateway.config import Settings
from gateway.errors import FhirError
from gateway.hooks import Principal, RequestContext
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services

console = Console(stderr=True, soft_wrap=True)


def cli_context() -> RequestContext:
    return RequestContext(principal=Principal(client_id="cli", scopes=frozenset({"system/*.cruds"})))


def import_directory_files(
    svc: Services, files: list[Path], changed: str | None, context: RequestContext | None = None
) -> tuple[Counter[str], list[str]]:
    """Every unit of the files written (parents first); the tally and the refusals (line, field, why)."""
    tally: Counter[str] = Counter()
    problems: list[str] = []
    units: list[Unit] = []
    for path in files:
        with path.open(encoding="utf-8-sig") as handle:
            for found in read(handle, changed):
                if isinstance(found, Refused):
                    problems.append(f"{path.name}: {found.message}")
                else:
                    units.append(found)
    writer = DirectoryWriter(svc, context or cli_context())
    for unit in parents_first(units):
        try:
            writer.write(unit, tally)
        except FhirError as error:
            why = "; ".join(f"{i.diagnostics}" for i in error.issues) or str(error.status)
            problems.append(f"line {unit.line} ({unit.hsa_id}): {why}")
    tally["refused"] = len(problems)
    return tally, problems


@import_app.command("directory")
def import_directory(
    files: Annotated[list[Path], typer.Argument(help="HSA catalogue extracts: JSON lines, one unit a line.")],
    changed: Annotated[
        str | None,
        typer.Option(
            help="When the catalogue last changed the units that give no `changed` (ISO date-time "
            "with offset). Default: the time of the import."
        ),
    ] = None,
) -> None:
    """Import an HSA catalogue extract: units' names, telecom, opening hours, parents and services as
    Organization, Location and HealthcareService, through the write path (conditional updates, merged by
    source time: a later write by a region client wins). Exits 1 when any unit was refused."""
    if changed is not None and parse_datetime(changed) is None:
        raise typer.BadParameter("a date-time with a time zone offset", param_hint="--changed")
    for path in files:
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="FILES")
    svc = Services.build(Settings.from_env())
    try:
        tally, problems = import_directory_files(svc, files, changed or to_instant(utc_now()))
    finally:
        svc.close()
        svc.engine.dispose()
    for problem in problems:
        console.print(f"[red]refused[/red] {escape(problem)}")
    keys = ("created", "updated", "unchanged", "refused")
    console.print("directory: " + ", ".join(f"{key} {tally[key]}" for key in keys))
    if problems:
        raise typer.Exit(1)
