"""`gateway import …`: adapter inputs from files, and replay of quarantined inputs.

Each adapter adds its own command to `import_app` in its package's cli module."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Connection

from gateway.adapters.intake import AdapterClient, UnknownClient
from gateway.config import Settings
from gateway.hooks import AccessRecord, AuditSink, Principal, RequestContext, patients_of
from gateway.model.types import Json
from gateway.security.audit import wait_durable
from gateway.services import Services
from gateway.store.repository import Repository

CHUNK = 1 << 16
console = Console(stderr=True, soft_wrap=True)


def file_progress(console: Console) -> Progress:
    """The progress bar of a streamed file import: bytes read per file, and time."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=console
    )


def read_chunks(path: Path, advance: Callable[[int], None]) -> Iterator[str]:
    """A text file in chunks (a BOM dropped), reporting the bytes read to the progress bar."""
    with path.open(encoding="utf-8-sig") as handle:
        while chunk := handle.read(CHUNK):
            advance(len(chunk.encode()))
            yield chunk


def count(tally: Counter[str], entry: Json) -> str:
    """Count one batch-response entry as created, updated, unchanged or rejected; its status."""
    status = str(entry["response"]["status"])
    if status.startswith("201"):
        tally["created"] += 1
    elif status.startswith("200"):
        text = str(entry["response"].get("outcome", {}))
        tally["unchanged" if "nothing changed" in text else "updated"] += 1
    else:
        tally["rejected"] += 1
    return status


def describe(entry: Json) -> str:
    """The errors of a rejected batch-response entry, each with the field it names."""
    response = entry.get("response")
    outcome = response.get("outcome", {}) if isinstance(response, dict) else {}
    issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
    return "; ".join(
        f"{issue.get('diagnostics')} ({', '.join(issue.get('expression', []))})"
        for issue in issues
        if issue.get("severity") in ("error", "fatal")
    )


# -- one audit record per input record -------------------------------------------------------------------


def named(entry: Json) -> list[str]:
    """The resources a batch-response entry names (its location, its issues' expressions), as `Type/id`."""
    response = entry.get("response") or {}
    issues = (response.get("outcome") or {}).get("issue") or []
    found = [response.get("location"), *(e for i in issues for e in i.get("expression") or [])]
    return list(dict.fromkeys(ref for ref in (_local(f) for f in found if isinstance(f, str)) if ref))


def _local(reference: str) -> str | None:
    """`Type/id` of a reference (`Type/id/_history/n` too); None for anything else (a JSON path …)."""
    parts = reference.split("/")
    if len(parts) not in (2, 4) or not parts[0].isalpha() or not parts[0][:1].isupper() or not parts[1]:
        return None
    return "/".join(parts[:2])


def entry_status(entry: Json) -> int:
    status = str((entry.get("response") or {}).get("status", "500")).split(" ", 1)[0]
    return int(status) if status.isdigit() else 500


class _Tee:
    """An AuditSink that also keeps the patients of what it passes on, by resource."""

    def __init__(self, sink: AuditSink, patients: dict[str, list[str]]) -> None:
        self.sink, self.patients = sink, patients

    def store(self, connection: Connection, records: list[AccessRecord]) -> None:
        for record in records:
            self._note(record)
        self.sink.store(connection, records)

    def record(self, record: AccessRecord) -> Future[None] | None:
        self._note(record)
        return self.sink.record(record)

    def _note(self, record: AccessRecord) -> None:
        """A record names its resources and the patients they concern (records are combined per
        patient set, `hooks.combined`): each resource is noted with those patients."""
        named = [f"{record.res_type}/{res_id}" for res_id in record.res_ids] if record.res_type else []
        for reference in named + record.resources:
            self.patients.setdefault(reference, []).extend(record.patients)


@dataclass
class ImportAudit:
    """One `import` AccessRecord per input record of `gateway import …`, whatever its outcome (unchanged,
    rejected, broken off): the patients and resources it touched, through the same sink as every other
    record (the REST entrances get one per request from AuditRequests). The resources are those its
    answer names; their patients come from the records of the writes made meanwhile (`collecting`), or
    else from what is stored (a record that changed nothing)."""

    svc: Services
    context: RequestContext
    command: str
    seen: dict[str, list[str]] = field(default_factory=dict)

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Note the patients of every interaction audited in the block (one input record, or a chunk)."""
        self.seen = {}
        sink = self.svc.hooks.audit
        self.svc.hooks.audit = _Tee(sink, self.seen)
        try:
            yield
        finally:
            self.svc.hooks.audit = sink

    def record(
        self,
        where: str,
        entry: Json | None,
        *,
        touched: bool = False,
        principal: Principal | None = None,
    ) -> None:
        """Audit one input record by its batch-response entry (None: it broke off, 500). With `touched`
        it names, beside what its answer names, every resource whose write was audited meanwhile (an
        HL7 ACK names none); `principal`: who it was written as, when not the command's client."""
        self.record_many([(where, entry)], touched=touched, principal=principal)

    def record_many(
        self,
        inputs: list[tuple[str, Json | None]],
        *,
        touched: bool = False,
        principal: Principal | None = None,
    ) -> None:
        """Audit input records (where each is, its batch-response entry) as `record` does one; the
        patients of what they name that no write meanwhile noted are read in one query for them all."""
        context = replace(self.context, principal=principal) if principal is not None else self.context
        named_by: list[tuple[str, int, list[str]]] = []
        for where, entry in inputs:
            status = entry_status(entry) if entry is not None else 500
            resources = named(entry) if entry is not None else []
            if touched:
                resources = list(dict.fromkeys([*resources, *self.seen]))
            named_by.append((where, status, resources))
        unseen = [ref for _, _, refs in named_by for ref in refs if ref not in self.seen]
        stored = self._stored_patients(unseen)
        waiting: list[Future[None] | None] = []
        for where, status, resources in named_by:
            detail = f"gateway import {self.command} {where}: {status}"[:1000]
            record = AccessRecord("import", None, [], status, context, detail)
            patients = [p for ref in resources for p in self.seen.get(ref, stored.get(ref, []))]
            record.patients = list(dict.fromkeys(patients))
            record.resources = [ref for ref in resources if ref not in record.patients]
            waiting.append(self.svc.hooks.audit.record(record))
        # stored before the command goes on (a crash loses at most the records of the chunk at hand)
        wait_durable([future for future in waiting if future is not None])

    def _stored_patients(self, resources: list[str]) -> dict[str, list[str]]:
        """The patients each stored resource concerns, by `Type/id` (read in one query)."""
        if not resources:
            return {}
        keys = [(ref.split("/")[0], ref.split("/")[1]) for ref in dict.fromkeys(resources)]
        with self.svc.engine.connect() as connection:
            held = Repository(connection).current_of(keys)
        return {
            f"{res_type}/{res_id}": patients_of(stored.json())
            for (res_type, res_id), stored in held.items()
            if not stored.deleted
        }


def act_as(client: AdapterClient, svc: Services, client_id: str | None) -> RequestContext:
    """The context of an import: the adapter's own, or `--client`'s (a usage error when it cannot)."""
    try:
        return client.cli_context(svc, client_id)
    except UnknownClient as error:
        raise typer.BadParameter(str(error), param_hint="--client") from error


def run_import(
    adapter: AdapterClient,
    client_id: str | None,
    work: Callable[[Services, Progress, RequestContext], Coroutine[Any, Any, Counter[str]]],
) -> Counter[str]:
    """An import command's frame: the services from the environment, the context it acts in (the
    adapter's own, or `--client`'s), `work` under a progress bar; every audit record stored before it
    returns."""
    svc = Services.build(Settings.from_env().for_batch())
    try:
        context = act_as(adapter, svc, client_id)
        with file_progress(console) as progress:
            return asyncio.run(work(svc, progress, context))
    finally:
        svc.close()
        svc.engine.dispose()


ClientOption = Annotated[
    str | None,
    typer.Option(
        "--client",
        help="Act as this registered client (its organisation and scopes; it needs the adapter's "
        "gateway/adapter.<name> scope), as if it had sent the records. Default: the adapter itself.",
    ),
]


import_app = typer.Typer(help="Import source files through the adapters, or replay quarantined inputs.")


@import_app.callback(invoke_without_command=True)
def import_main(
    ctx: typer.Context,
    replay: Annotated[int | None, typer.Option(help="Replay the quarantined input with this id.")] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if replay is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    from gateway.adapters.replay import replay_item

    raise typer.Exit(replay_item(replay))


# Each adapter's import command registers itself on import_app when its cli module is imported.
from gateway.adapters.bestallningsportalen import cli as _bestallningsportalen_cli  # noqa: E402, F401
from gateway.adapters.device_register import cli as _device_register_cli  # noqa: E402, F401
from gateway.adapters.directory import cli as _directory_cli  # noqa: E402, F401
from gateway.adapters.hl7v2 import cli as _hl7v2_cli  # noqa: E402, F401
