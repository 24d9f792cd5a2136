"""`gateway audit verify` and `gateway audit archive`: proving the access log complete, and the one operator
path out of it (docs/security.md, Audit)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console

from gateway.config import Settings
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.search.dates import DateFormatError, date_range, utc_now
from gateway.services import Services
from gateway.store import audit_log
from gateway.store.database import WRITE_OPTION

audit_app = typer.Typer(help="Verify the access log, or archive its oldest AuditEvents.")
console = Console(stderr=True)


@dataclass
class Findings:
    versions: int = 0
    events: int = 0
    batches: int = 0
    processes: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


def _since(value: str | None, settings: Settings) -> datetime | None:
    if not value:
        return None
    try:
        return date_range(value, ZoneInfo(settings.local_timezone))[0]
    except DateFormatError as error:
        raise typer.BadParameter(str(error)) from error


def versioned_entities(content: str) -> Iterator[str]:
    """The versions an AuditEvent names (`Type/id/_history/n`): the writes it records."""
    event = json.loads(content)
    for entity in event.get("entity") or []:
        what = entity.get("what") if isinstance(entity, dict) else None
        reference = what.get("reference") if isinstance(what, dict) else None
        if isinstance(reference, str) and "/_history/" in reference:
            yield reference


def verify(svc: Services, since: datetime | None) -> Findings:
    """Every stored version (since `since`, and after the last archive) has an AuditEvent naming it; each
    process's chain of audit batches is unbroken and every batch still holds what it was committed with."""
    found = Findings()
    with svc.engine.connect() as connection:
        archived = audit_log.archived_before(connection)
        start = max((d for d in (since, archived) if d is not None), default=None)
        named: set[str] = set()
        for _id, _at, content in audit_log.events(connection, since=start):
            found.events += 1
            named.update(versioned_entities(content))
        for res_type, res_id, version, written in audit_log.versions(connection, since=start):
            found.versions += 1
            if f"{res_type}/{res_id}/_history/{version}" not in named:
                found.problems.append(f"{res_type}/{res_id} version {version} ({written}) has no AuditEvent")
        previous: audit_log.Batch | None = None
        for batch in audit_log.batches(connection, since):
            found.batches += 1
            found.processes.add(batch.process)
            found.problems += _link(previous, batch)
            if not batch.archived:
                found.problems += _kept(batch, audit_log.contents_of(connection, batch.events))
            previous = batch
    return found


def _link(previous: audit_log.Batch | None, batch: audit_log.Batch) -> list[str]:
    """What is wrong with a batch's place in its process's chain."""
    where = f"{batch.process}: batch {batch.number}"
    if previous is not None and previous.process == batch.process:
        if batch.number != previous.number + 1:
            return [f"{batch.process}: batches {previous.number + 1}..{batch.number - 1} are missing"]
        if batch.previous != previous.hash:
            return [f"{where} does not follow its predecessor"]
    elif batch.number == 1 and batch.previous != "":
        return [f"{where} does not start the chain"]
    return []


def _kept(batch: audit_log.Batch, contents: dict[str, str]) -> list[str]:
    """What is wrong with what a batch holds now."""
    where = f"{batch.process}: batch {batch.number}"
    if len(contents) != len(batch.events):
        return [f"{where} lost {len(batch.events) - len(contents)} AuditEvents"]
    if audit_log.chain_hash(batch.previous, [contents[i] for i in batch.events]) != batch.hash:
        return [f"{where} was changed after it was committed"]
    return []


@audit_app.command("verify")
def verify_command(
    since: Annotated[str | None, typer.Option(help="Only versions and batches from this date (ISO).")] = None,
) -> None:
    """Prove the access log complete: exit 1, listing what is wrong, when it is not."""
    settings = Settings.from_env()
    svc = Services.build(settings.for_batch())
    try:
        found = verify(svc, _since(since, settings))
    finally:
        svc.close()
        svc.engine.dispose()
    for problem in found.problems[:1000]:
        console.print(problem, markup=False)
    console.print(
        f"checked {found.versions} versions, {found.events} AuditEvents, {found.batches} batches of "
        f"{len(found.processes)} processes: {len(found.problems)} problems"
    )
    if found.problems:
        raise typer.Exit(1)


@audit_app.command("archive")
def archive_command(
    before: Annotated[str, typer.Option(help="Archive the AuditEvents stored before this date (ISO).")],
    to: Annotated[Path, typer.Option(help="The NDJSON file to write (must not exist).")],
) -> None:
    """Move the AuditEvents stored before a date to an NDJSON file, keep its SHA-256, and delete them from
    the store; the archive itself is audited. The one way out of the access log (retention is the
    region's choice; none by default)."""
    settings = Settings.from_env()
    cutoff = _since(before, settings)
    assert cutoff is not None
    if to.exists():
        console.print(f"{to} exists already; the archive is written to a new file")
        raise typer.Exit(2)
    svc = Services.build(settings.for_batch())
    try:
        count, digest = archive(svc, cutoff, to)
    finally:
        svc.close()
        svc.engine.dispose()
    console.print(f"archived {count} AuditEvents stored before {cutoff} to {to} (sha256 {digest})")


def archive(svc: Services, before: datetime, path: Path) -> tuple[int, str]:
    """Write the AuditEvents stored before `before` to `path`, then remove them, in one transaction with
    the archive's own record and AuditEvent."""
    digest = hashlib.sha256()
    ids: list[str] = []
    options = {WRITE_OPTION: True}
    with svc.engine.connect().execution_options(**options) as connection, connection.begin():
        with path.open("w", encoding="utf-8") as file:
            for event_id, _at, content in audit_log.events(connection, before=before):
                line = content + "\n"
                file.write(line)
                digest.update(line.encode())
                ids.append(event_id)
        audit_log.delete_events(connection, ids)
        audit_log.mark_archived(connection, before)
        now = utc_now()
        audit_log.add_archive(connection, before, str(path), digest.hexdigest(), len(ids), now)
        context = RequestContext(principal=Principal(client_id="cli"), base_url=svc.settings.base_url)
        detail = f"gateway audit archive: {len(ids)} before {before} to {path} sha256 {digest.hexdigest()}"
        record = AccessRecord("archive", "AuditEvent", [], 200, context, detail[:1000])
        svc.hooks.audit.store(connection, [record])
    return len(ids), digest.hexdigest()
