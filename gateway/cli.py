"""The `gateway` command: serve, db upgrade, load, reindex."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from gateway.config import Settings
from gateway.errors import FhirError
from gateway.hooks import Principal, RequestContext
from gateway.model.types import loads
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine
from gateway.store.repository import R, Repository, Stored

app = typer.Typer(
    help="FHIR gateway for medical and assistive devices in Swedish home care.", no_args_is_help=True
)
db = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db, name="db")
console = Console(stderr=True)
CLI_CONTEXT = RequestContext(principal=Principal(client_id="cli"))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    upgrade: Annotated[bool, typer.Option(help="Migrate the database first.")] = True,
) -> None:
    """Serve FHIR at http://HOST:PORT/fhir."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if upgrade:
        upgrade_database()
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
    )


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


@app.command()
def load(
    files: Annotated[list[Path], typer.Argument(help="Bundles (.json) or NDJSON files of resources.")],
) -> None:
    """Load resources through the write path: a Bundle (transaction, batch or collection) or NDJSON.

    NDJSON is streamed line by line; a bad line is reported with its number and the rest still loads."""
    svc = Services.build(Settings.from_env())
    loaded = failed = 0
    with _progress() as progress:
        for path in files:
            task = progress.add_task(path.name, total=None)
            if path.suffix == ".json":
                entries = loads(path.read_bytes()).get("entry", [])
                items: Iterator[tuple[int, Any]] = ((i, e.get("resource")) for i, e in enumerate(entries))
                label = "entry"
            else:
                items = ((number, line) for number, line in _lines(path))
                label = "line"
            for number, item in items:
                try:
                    resource = loads(item) if isinstance(item, str) else item
                    _store_one(svc, resource)
                    loaded += 1
                except (FhirError, ValueError) as error:
                    failed += 1
                    progress.console.print(f"[red]{path}: {label} {number}: {error}")
                progress.advance(task)
    console.print(f"loaded {loaded}, rejected {failed}")
    if failed:
        raise typer.Exit(1)


@app.command()
def reindex(batch: Annotated[int, typer.Option(help="Resources per transaction.")] = 500) -> None:
    """Recompute every resource's index rows from the current search parameter definitions."""
    svc = Services.build(Settings.from_env())
    done, last = 0, 0
    with _progress() as progress:
        task = progress.add_task("reindex", total=None)
        while True:
            with svc.engine.begin() as connection:
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
                for stored in current:
                    repository.replace_index(stored.rid, svc.extractor.rows(stored.json()))
                last = rows[-1][0]
                done += len(rows)
                progress.advance(task, len(rows))
    console.print(f"reindexed {done} resources")
