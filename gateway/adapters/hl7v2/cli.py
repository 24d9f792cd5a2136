"""Command line: `gateway mllp` (the listener) and `gateway import hl7 FILE…`."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.adapters.cli import import_app
from gateway.adapters.hl7v2 import adapter, service
from gateway.adapters.hl7v2.message import split_messages
from gateway.adapters.hl7v2.mllp import ListenerSettings, serve_forever
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate

console = Console(stderr=True, soft_wrap=True)
assert adapter.ADAPTER.name == "hl7v2"


def mllp(
    host: Annotated[str | None, typer.Option(help="Address (default GATEWAY_MLLP_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default GATEWAY_MLLP_PORT or 2575).")] = None,
    upgrade: Annotated[bool, typer.Option(help="Migrate the database first.")] = True,
    parse_processes: Annotated[
        int, typer.Option(min=0, help="Parse messages in this many processes beside the listener's own.")
    ] = 0,
) -> None:
    """Listen for HL7 v2 ADT messages over MLLP (TLS when configured); answer each with an ACK."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gateway_settings = Settings.from_env()
    settings = ListenerSettings.from_settings(gateway_settings)
    settings = replace(
        settings, host=host or settings.host, port=port or settings.port, parse_processes=parse_processes
    )
    svc = Services.build(gateway_settings)
    if upgrade:
        migrate.upgrade(svc.engine)
    try:
        asyncio.run(serve_forever(svc, settings))
    except KeyboardInterrupt:
        pass
    finally:
        svc.engine.dispose()


async def _import(svc: Services, files: list[Path]) -> Counter[str]:
    tally: Counter[str] = Counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for path in files:
            try:
                messages = split_messages(path.read_bytes())
            except OSError as error:
                progress.console.print(f"[red]{escape(str(path))}: {escape(str(error))}")
                tally["unreadable"] += 1
                continue
            task = progress.add_task(path.name, total=len(messages))
            for number, message in enumerate(messages, start=1):
                result = await service.handle(svc, message, content_type="application/hl7-v2")
                code = "duplicate" if result.duplicate else result.ack.code
                tally[code] += 1
                if result.ack.code != "AA":
                    where = f" (quarantined as {result.quarantined})" if result.quarantined else ""
                    progress.console.print(
                        f"[red]{escape(str(path))}: message {number} {escape(result.ack.control_id)}: "
                        f"{result.ack.code} {escape(result.ack.text)}{where}"
                    )
                progress.advance(task)
    return tally


@import_app.command("hl7")
def import_hl7(
    files: Annotated[list[Path], typer.Argument(help="Files of one or more HL7 v2 messages each.")],
) -> None:
    """Import HL7 v2 ADT messages from files, exactly as if they came over MLLP. Exits 1 on any AE/AR."""
    svc = Services.build(Settings.from_env())
    try:
        tally = asyncio.run(_import(svc, files))
    finally:
        svc.engine.dispose()
    unreadable = f", unreadable files {tally['unreadable']}" if tally["unreadable"] else ""
    console.print(
        f"accepted {tally['AA']}, duplicates {tally['duplicate']}, errors (AE, quarantined) {tally['AE']}, "
        f"rejected (AR) {tally['AR']}{unreadable}"
    )
    if tally["AE"] or tally["AR"] or tally["unreadable"]:
        raise typer.Exit(1)
