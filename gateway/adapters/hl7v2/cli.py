"""Command line: `gateway mllp` (the listener) and `gateway import hl7 FILE…`. Both store every queued
audit record before they end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.adapters.cli import ClientOption, ImportAudit, act_as, import_app
from gateway.adapters.hl7v2 import adapter, service
from gateway.adapters.hl7v2.message import split_messages
from gateway.adapters.hl7v2.mllp import AUDIT_STATUS, ListenerSettings, serve_forever
from gateway.config import Settings
from gateway.hooks import Principal
from gateway.model.types import Json
from gateway.security.endpoints import StartupRefused, check_key_secret
from gateway.services import Services
from gateway.store import migrate

console = Console(stderr=True, soft_wrap=True)
CONTENT_TYPE = "application/hl7-v2"
assert adapter.ADAPTER.name == "hl7v2"


def mllp(
    host: Annotated[str | None, typer.Option(help="Address (default GATEWAY_MLLP_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default GATEWAY_MLLP_PORT or 2575).")] = None,
    upgrade: Annotated[bool, typer.Option(help="Migrate the database first.")] = True,
    parse_processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Parse messages in this many processes beside the listener's own "
            "(default GATEWAY_MLLP_PARSE_PROCESSES or 0).",
        ),
    ] = None,
) -> None:
    """Listen for HL7 v2 ADT messages over MLLP (TLS when configured); answer each with an ACK. Stops on
    Ctrl-C or SIGTERM, having stored every audit record."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gateway_settings = Settings.from_env()
    try:
        check_key_secret(gateway_settings)  # the ids it derives are the installation's (PostgreSQL, auth on)
    except StartupRefused as refused:
        console.print(f"[red]{escape(str(refused))}[/red]")
        raise typer.Exit(2) from refused
    settings = ListenerSettings.from_settings(gateway_settings)
    settings = replace(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        parse_processes=settings.parse_processes if parse_processes is None else parse_processes,
    )
    svc = Services.build(gateway_settings)
    try:
        if upgrade:
            migrate.upgrade(svc.engine)
        asyncio.run(_listen(svc, settings))
    except KeyboardInterrupt:
        pass
    finally:
        svc.close()  # the audit records of the last messages stored before the command ends
        svc.engine.dispose()


async def _listen(svc: Services, settings: ListenerSettings) -> None:
    """The listener until SIGTERM (or Ctrl-C), which stops it as cleanly."""
    listening = asyncio.ensure_future(serve_forever(svc, settings))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, listening.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await listening


def _entry(result: service.Result) -> Json:
    """A message's answer as a batch-response entry for its audit record: the status MLLP records for
    its ACK code (AA 200, AE 422, AR 400) and the outcome (the ACK, and any errors)."""
    entry = adapter.entry_of(result)
    status = AUDIT_STATUS.get(result.ack.code, 400)
    entry["response"]["status"] = f"{status} {result.ack.code}"
    return entry


async def _import(svc: Services, files: list[Path], principal: Principal | None) -> Counter[str]:
    """Each message through the adapter as `principal` (None: the adapter's own client), each audited."""
    tally: Counter[str] = Counter()
    audit = ImportAudit(svc, service.CLIENT.context(svc), "hl7")
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
                result = await _audited(svc, audit, f"{path}: message {number}", message, principal)
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


async def _audited(
    svc: Services, audit: ImportAudit, where: str, message: bytes, principal: Principal | None
) -> service.Result:
    """One message through the adapter (`handle` never raises), audited by its ACK with the resources
    its writes touched, as the client it was written as."""
    with audit.collecting():
        result = await service.handle(svc, message, principal=principal, content_type=CONTENT_TYPE)
    audit.record(where, _entry(result), touched=True, principal=result.principal or principal)
    return result


@import_app.command("hl7")
def import_hl7(
    files: Annotated[list[Path], typer.Argument(help="Files of one or more HL7 v2 messages each.")],
    client: ClientOption = None,
) -> None:
    """Import HL7 v2 ADT messages from files, exactly as if they came over MLLP. Exits 1 on any AE/AR.
    Each message is audited (an `import` AuditEvent), whatever its ACK."""
    svc = Services.build(Settings.from_env().for_batch())
    try:
        principal = act_as(service.CLIENT, svc, client).principal if client is not None else None
        tally = asyncio.run(_import(svc, files, principal))
    finally:
        svc.close()  # every audit record stored before the command ends
        svc.engine.dispose()
    unreadable = f", unreadable files {tally['unreadable']}" if tally["unreadable"] else ""
    console.print(
        f"accepted {tally['AA']}, duplicates {tally['duplicate']}, errors (AE, quarantined) {tally['AE']}, "
        f"rejected (AR) {tally['AR']}{unreadable}"
    )
    if tally["AE"] or tally["AR"] or tally["unreadable"]:
        raise typer.Exit(1)
