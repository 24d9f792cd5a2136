"""The `gateway` command: serve, db upgrade, load, reindex, and the subcommands of the adapters, security
and master data."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from gateway.adapters.cli import import_app
from gateway.adapters.device_register import backfill as device_backfill
from gateway.adapters.hl7v2 import cli as hl7v2_cli
from gateway.adapters.master_data_cli import master_data_app
from gateway.adapters.quarantine_cli import quarantine_app
from gateway.config import ConfigurationError, Settings
from gateway.errors import FhirError, Issue
from gateway.export.cli import export_app
from gateway.fhir import transaction
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json, loads
from gateway.pipeline import UnitOfWork
from gateway.risk.cli import risk_app
from gateway.schedule.cli import schedule_app, worklist
from gateway.schedule.clock import check_fake_clock
from gateway.search.dates import utc_now
from gateway.security.audit_cli import audit_app
from gateway.security.cli import clients_app, demo_token, keys_app
from gateway.security.endpoints import StartupRefused, check_base_url, check_key_secret
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import WRITE_OPTION, make_engine
from gateway.store.repository import R, Repository, Stored
from gateway.subscriptions.cli import notify, subscriptions_app
from gateway.telemetry import exposition, logs


class _Gateway(typer.Typer):
    """The command; a bad setting (ConfigurationError, naming its variable) is printed, exit status 2,
    without a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ConfigurationError as error:
            Console(stderr=True, soft_wrap=True).print(f"[red]configuration: {escape(str(error))}[/red]")
            raise SystemExit(2) from None


app = _Gateway(
    help="FHIR gateway for medical and assistive devices in Swedish home care.", no_args_is_help=True
)
db = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db, name="db")
backfill_app = typer.Typer(help="Write derived values onto stored resources, through the write path.")
app.add_typer(backfill_app, name="backfill")
app.add_typer(import_app, name="import")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(master_data_app, name="master-data")
app.command("mllp")(hl7v2_cli.mllp)
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(risk_app, name="risk")
app.command("notify")(notify)
app.command("demo-token")(demo_token)
app.add_typer(schedule_app, name="schedule")
app.add_typer(export_app, name="export")
app.command("worklist")(worklist)
# soft_wrap: messages stay one line each (greppable, and paths are never broken), whatever the width
console = Console(stderr=True, soft_wrap=True)
# The operator at the console has the database already: every interaction on every type (SMART scopes).
CLI_CONTEXT = RequestContext(principal=Principal(client_id="cli", scopes=frozenset({"system/*.cruds"})))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    upgrade: Annotated[bool, typer.Option(help="Migrate the database first.")] = True,
) -> None:
    """Serve FHIR at http://HOST:PORT/fhir (and MLLP too when GATEWAY_MLLP_PORT is set).

    Logs one line per request (JSON unless stderr is a terminal: GATEWAY_LOG_FORMAT), serves /metrics
    (and on GATEWAY_METRICS_PORT without a token), and on SIGTERM finishes what is in flight within
    GATEWAY_SHUTDOWN_GRACE_SECONDS, stores every queued audit record and exits 0 (docs/operations.md)."""
    settings = Settings.from_env()
    try:
        check_base_url(settings)
        check_key_secret(settings)
        check_fake_clock(settings)
    except StartupRefused as refused:
        console.print(f"[red]{escape(str(refused))}[/red]")
        raise typer.Exit(2) from refused
    logs.configure(settings.log_format)  # once it is going to serve
    if workers > 1 and settings.mllp_port is not None:
        console.print("[red]GATEWAY_MLLP_PORT runs the MLLP listener in the server: use one worker")
        raise typer.Exit(2)
    # SIGTERM before the server runs ends the command at once; while it runs uvicorn takes it (a graceful
    # stop), then raises it again here once done: exit status 0, not death by the signal.
    signal.signal(signal.SIGTERM, _terminated)
    if upgrade:
        upgrade_database()
    made = exposition.prepare_multiprocess() if workers > 1 else None  # before the workers start
    metrics_server = None
    if settings.metrics_port is not None:
        try:
            metrics_server = exposition.serve_port(settings.metrics_host, settings.metrics_port)
        except OSError as error:  # taken, or an address not of this host
            exposition.remove_multiprocess(made)
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            message = f"GATEWAY_METRICS_PORT: cannot listen on {where}: {error}"
            console.print(f"[red]{escape(message)}[/red]")
            raise typer.Exit(2) from error
    try:
        uvicorn.run(
            "gateway.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=logs.config(settings.log_format),
            access_log=False,  # gateway.requests logs each request (gateway/telemetry/requests.py)
            proxy_headers=False,  # forwarded headers: only from GATEWAY_TRUSTED_PROXIES (security/proxies.py)
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
        )
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        exposition.remove_multiprocess(made)


def _terminated(_signal: int, _frame: object) -> None:
    raise SystemExit(0)


@db.command("upgrade")
def upgrade_database() -> None:
    """Create or migrate the database schema (Alembic) at DATABASE_URL."""
    settings = Settings.from_env()
    engine = make_engine(settings.database_url, settings.database_schema)
    migrate.upgrade(engine)
    engine.dispose()
    console.print(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} items"),
        TimeElapsedColumn(),
        console=console,
    )


def _store_one(svc: Services, resource: Any) -> None:
    write_path = svc.write_path

    def work(uow: UnitOfWork) -> None:
        if isinstance(resource, dict) and isinstance(resource.get("id"), str):
            write_path.update(uow, str(resource.get("resourceType")), resource["id"], resource)
        else:
            write_path.create(uow, resource)

    write_path.run(CLI_CONTEXT, work)


def post_bundle(svc: Services, bundle: Json) -> Json:
    """Process a transaction or batch Bundle exactly as POST [base] does; give the response Bundle.
    A transaction raises FhirError when it is rolled back; a batch reports each entry's outcome."""
    context = RequestContext(principal=CLI_CONTEXT.principal, base_url=svc.settings.base_url)
    return asyncio.run(transaction.process_bundle(svc, context, bundle))


def _describe(issues: Sequence[object]) -> str:
    """Issues (or their OperationOutcome JSON) as one line: each diagnostics with where it applies."""
    parts = []
    for issue in issues:
        if isinstance(issue, Issue):
            diagnostics, expression = issue.diagnostics, list(issue.expression)
        elif isinstance(issue, dict):
            diagnostics, expression = str(issue.get("diagnostics", "")), list(issue.get("expression", []))
        else:
            continue
        parts.append(f"{diagnostics} ({', '.join(map(str, expression))})" if expression else diagnostics)
    return "; ".join(parts)


def _error_text(error: Exception) -> str:
    if isinstance(error, FhirError):
        return f"{error.status} {_describe(error.issues) or error}"
    return str(error)


def _reject(progress: Progress, message: str) -> None:
    progress.console.print(f"[red]{escape(message)}[/red]")


@dataclass
class _Tally:
    loaded: int = 0
    failed: int = 0


def _load_bundle(svc: Services, path: Path, bundle: Json, tally: _Tally, progress: Progress) -> None:
    """A transaction (all or nothing) or a batch (entry by entry), as POST [base] would process it."""
    entries = bundle.get("entry") or []
    task = progress.add_task(f"{path.name} ({bundle.get('type')})", total=None)
    try:
        response = post_bundle(svc, bundle)
    except FhirError as error:
        tally.failed += len(entries) if isinstance(entries, list) and entries else 1
        _reject(progress, f"{path}: {bundle.get('type')} rolled back: {_error_text(error)}")
        return
    for number, item in enumerate(response.get("entry", [])):
        status = str(item.get("response", {}).get("status", ""))
        if status[:1] in ("2", "3"):
            tally.loaded += 1
        else:
            tally.failed += 1
            outcome = item.get("response", {}).get("outcome", {})
            _reject(progress, f"{path}: entry {number}: {status} {_describe(outcome.get('issue', []))}")
        progress.advance(task)


def _load_items(
    svc: Services, path: Path, items: Iterator[tuple[int, Any]], label: str, tally: _Tally, progress: Progress
) -> None:
    """Resources one by one, each in a unit of work of its own; a bad one is reported and skipped."""
    task = progress.add_task(path.name, total=None)
    for number, item in items:
        try:
            resource = loads(item) if isinstance(item, str) else item
            _store_one(svc, resource)
            tally.loaded += 1
        except (FhirError, ValueError) as error:
            tally.failed += 1
            _reject(progress, f"{path}: {label} {number}: {_error_text(error)}")
        progress.advance(task)


def _load_json(svc: Services, path: Path, tally: _Tally, progress: Progress) -> None:
    try:
        document = loads(path.read_bytes())
    except ValueError as error:
        tally.failed += 1
        _reject(progress, f"{path}: not JSON: {error}")
        return
    if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
        _load_items(svc, path, iter([(1, document)]), "resource", tally, progress)
    elif document.get("type") in ("transaction", "batch"):
        _load_bundle(svc, path, document, tally, progress)
    else:
        entries = document.get("entry") or []
        items = ((i, e.get("resource") if isinstance(e, dict) else e) for i, e in enumerate(entries))
        _load_items(svc, path, items, "entry", tally, progress)


@app.command()
def load(
    files: Annotated[list[Path], typer.Argument(help="Bundles (.json) or NDJSON files of resources.")],
) -> None:
    """Load resources through the write path: a Bundle (transaction, batch or collection) or NDJSON.

    A transaction or batch Bundle is processed as POST [base] would; a collection Bundle's and an NDJSON
    file's resources are stored one by one. NDJSON is streamed line by line; a bad line is reported with
    its number and the rest still loads. Exits with 1 when anything was rejected."""
    svc = Services.build(Settings.from_env().for_batch())
    tally = _Tally()
    try:
        with _progress() as progress:
            for path in files:
                if path.suffix == ".json":
                    _load_json(svc, path, tally, progress)
                else:
                    _load_items(svc, path, _lines(path), "line", tally, progress)
    finally:
        svc.close()  # every audit record stored before the command ends
        svc.engine.dispose()
    console.print(f"loaded {tally.loaded}, rejected {tally.failed}")
    if tally.failed:
        raise typer.Exit(1)


@backfill_app.command("device-lifetime")
def backfill_device_lifetime(
    batch: Annotated[int, typer.Option(help="Devices per transaction.")] = 500,
) -> None:
    """Set the end of each stored Device's lifetime (purchase date + lifetime, extension device-maintenance
    `lifetimeEnd`, searchable as `lifetime-end`) where it is missing or wrong, as a new version written
    through the write path (audited); a second run changes nothing (docs/adapters/device-register.md)."""
    svc = Services.build(Settings.from_env().for_batch())
    try:
        with _progress() as progress:
            task = progress.add_task("device-lifetime", total=None)
            seen, changed = device_backfill.backfill(
                svc, CLI_CONTEXT, batch, lambda n: progress.advance(task, n)
            )
    finally:
        svc.close()
    console.print(f"read {seen} devices, set the lifetime end of {changed}")


@app.command()
def reindex(batch: Annotated[int, typer.Option(help="Resources per transaction.")] = 500) -> None:
    """Recompute every resource's index rows from the current search parameter definitions, and its care
    relations from the access policy (docs/security.md)."""
    svc = Services.build(Settings.from_env())
    done, last = 0, 0
    try:
        with _progress() as progress:
            task = progress.add_task("reindex", total=None)
            while True:
                # a write transaction from the start (SQLite: BEGIN IMMEDIATE), like the write path's
                connection = svc.engine.connect().execution_options(**{WRITE_OPTION: True})
                with connection, connection.begin():
                    rows = connection.execute(
                        select(R.c.rid)
                        .where(R.c.rid > last, R.c.deleted.is_(False))
                        .order_by(R.c.rid)
                        .limit(batch)
                    ).all()
                    if not rows:
                        break
                    repository = Repository(connection)
                    current: list[Stored] = repository.current_many([row[0] for row in rows])
                    now = utc_now()
                    for stored in current:
                        svc.write_path.reindex(connection, stored, now)
                    last = rows[-1][0]
                    done += len(rows)
                    progress.advance(task, len(rows))
    finally:
        svc.engine.dispose()
    console.print(f"reindexed {done} resources")
