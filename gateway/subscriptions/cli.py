"""`gateway notify` (the deliverer on its own) and `gateway subscriptions list|status|retry ID`."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import select, update

from gateway.config import Settings
from gateway.services import Services
from gateway.subscriptions.delivery import Deliverer, set_status
from gateway.subscriptions.resource import STATE

subscriptions_app = typer.Typer(help="Subscriptions: their delivery state, and retrying one in error.")
console = Console(stderr=True, soft_wrap=True)
FIELDS = ("sub_id", "client_id", "status", "topic", "last_number", "acked", "attempts", "retry_at", "reason")


def notify() -> None:
    """Deliver subscriptions' notifications, without serving HTTP (beside `gateway serve` processes run
    with GATEWAY_NOTIFY=off, or as well as them on PostgreSQL: leases share the work)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = Services.build(Settings.from_env())
    deliverer = Deliverer(services).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print("delivering subscriptions' notifications (Ctrl-C stops)")
    stop.wait()
    deliverer.stop()
    services.close()


def _row(row: Any) -> str:
    return "\t".join(f"{name}={getattr(row, name)}" for name in FIELDS if getattr(row, name) is not None)


@subscriptions_app.command("list")
def list_() -> None:
    """Every subscription's delivery state, one a line."""
    services = Services.build(Settings.from_env())
    with services.engine.connect() as connection:
        for row in connection.execute(select(STATE).order_by(STATE.c.created_at, STATE.c.sub_id)):
            print(_row(row))


def _state(services: Services, sub_id: str) -> Any:
    """The subscription's delivery state row; exit 1 when there is none."""
    with services.engine.connect() as connection:
        row = connection.execute(select(STATE).where(STATE.c.sub_id == sub_id)).first()
    if row is None:
        console.print(f"[red]no subscription {sub_id}[/red]")
        raise typer.Exit(1)
    return row


@subscriptions_app.command("status")
def status(sub_id: Annotated[str, typer.Argument(help="The Subscription's id.")]) -> None:
    """One subscription's delivery state (exit 1 when unknown)."""
    services = Services.build(Settings.from_env())
    row = _state(services, sub_id)
    print(_row(row))


@subscriptions_app.command("retry")
def retry(sub_id: Annotated[str, typer.Argument(help="The Subscription's id.")]) -> None:
    """Deliver again now: a subscription in `error` (or waiting on a retry) back to active, from the
    first event its receiver did not acknowledge (topic-based: after a handshake)."""
    services = Services.build(Settings.from_env())
    row = _state(services, sub_id)
    if row.status == "off":
        console.print(f"[red]Subscription/{sub_id} is off (its client turned it off, or it ended)[/red]")
        raise typer.Exit(1)
    set_status(services, sub_id, "requested" if row.topic else "active", None)
    with services.engine.begin() as connection:
        connection.execute(
            update(STATE)
            .where(STATE.c.sub_id == sub_id)
            .values(attempts=0, retry_at=None, failing_since=None)
        )
    print(f"Subscription/{sub_id}: retrying")
