"""`gateway quarantine list|show|discard`: the operator's view of the quarantine, every client's items
(a client sees only its own, over HTTP: gateway/adapters/routes.py). Replay: `gateway import --replay ID`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from gateway.adapters import quarantine
from gateway.config import Settings
from gateway.model.types import dumps
from gateway.store.database import make_engine

quarantine_app = typer.Typer(help="Rejected adapter inputs, every client's.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@quarantine_app.command("list")
def list_(
    adapter: Annotated[str | None, typer.Option(help="Only this adapter's items.")] = None,
    status: Annotated[str, typer.Option(help="open, replayed, discarded or all.")] = "open",
    client: Annotated[
        str | None, typer.Option(help="Only this client's items ('-': the gateway's own).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
) -> None:
    """One item a line, oldest first: id, adapter, status, client (- for the gateway's own), received,
    source key, the first error."""
    if status not in (*quarantine.STATUSES, "all"):
        raise typer.BadParameter(f"one of {', '.join(quarantine.STATUSES)} or all", param_hint="--status")
    whose = quarantine.EVERYONE
    if client is not None:
        whose = quarantine.Whose(None if client == "-" else client)
    settings = Settings.from_env()
    engine = make_engine(settings.database_url, settings.database_schema)
    try:
        items = quarantine.listing(engine, adapter, None if status == "all" else status, limit, 0, whose)
    finally:
        engine.dispose()
    for item in items:
        summary = item.summary()
        errors = [
            i.get("diagnostics", "")
            for i in item.outcome.get("issue", [])
            if i.get("severity") != "information"
        ]
        fields = (item.id, item.adapter, item.status, item.client_id or "-", summary["receivedAt"])
        print("\t".join(str(f) for f in (*fields, item.source_key or "", (errors or [""])[0])))


@quarantine_app.command("show")
def show(item_id: Annotated[int, typer.Argument(help="The item.")]) -> None:
    """The item's summary (JSON) on stderr, its payload verbatim on stdout."""
    settings = Settings.from_env()
    engine = make_engine(settings.database_url, settings.database_schema)
    try:
        item = quarantine.get(engine, item_id)
    finally:
        engine.dispose()
    if item is None:
        console.print(f"[red]no quarantined input with id {item_id}")
        raise typer.Exit(2)
    console.print(dumps(item.summary()), markup=False, highlight=False)
    sys.stdout.buffer.write(item.payload)
    sys.stdout.flush()


@quarantine_app.command("discard")
def discard(item_id: Annotated[int, typer.Argument(help="The item.")]) -> None:
    """Mark an open item discarded."""
    settings = Settings.from_env()
    engine = make_engine(settings.database_url, settings.database_schema)
    try:
        item = quarantine.get(engine, item_id)
        if item is None or item.status != "open":
            console.print(f"[red]no open quarantined input with id {item_id}")
            raise typer.Exit(2)
        quarantine.set_status(engine, item_id, "discarded")
    finally:
        engine.dispose()
    print(f"discarded {item_id}")
