"""The adapters' quarantine: rejected inputs kept verbatim, listed, corrected and replayed.

Written in a transaction of its own, after the rejected input's transaction was rolled back, so a
rejection never leaves anything half-written and is never lost.

An item belongs to the client that sent the input (`client_id`; None: the gateway's own, the CLI without
`--client` or auth off): a client lists, shows, replays and discards only its own items over HTTP, and
another client's item is to it as an id never used; the operator (CLI) sees every item. There is one open
item per sending client, adapter and source key (the source, the record's key and its version: `PORTAL
1001 v2`, `SESAM@SE…-MAH1 MAH-000123`, `SE…-KS01 MSG0001`): the same record rejected again refreshes
that item (its payload, outcome and time) instead of adding one. An input without a readable key (`#3`,
`line 5`) is the same item only when its payload is the same too."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, insert, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from gateway.model.types import Json, dumps, loads
from gateway.search.dates import to_instant, utc_now
from gateway.store.database import WRITE_OPTION
from gateway.store.tables import QuarantineItem

Q = cast(Table, QuarantineItem.__table__)
STATUSES = ("open", "replayed", "discarded")


@dataclass(frozen=True)
class Quarantined:
    id: int
    adapter: str
    received_at: datetime
    source_key: str | None
    content_type: str
    payload: bytes
    outcome: Json
    status: str
    client_id: str | None = None

    def summary(self) -> Json:
        """The listing form: everything but the payload itself."""
        return {
            "id": self.id,
            "adapter": self.adapter,
            "receivedAt": to_instant(self.received_at),
            "sourceKey": self.source_key,
            "contentType": self.content_type,
            "size": len(self.payload),
            "status": self.status,
            "client": self.client_id,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class Whose:
    """Whose items a caller may see: every item (`everyone`: the operator, auth off) or one client's."""

    client_id: str | None = None
    everyone: bool = False

    def condition(self) -> ColumnElement[bool]:
        if self.everyone:
            return Q.c.id.is_not(None)
        if self.client_id is None:
            return Q.c.client_id.is_(None)
        return Q.c.client_id == self.client_id


EVERYONE = Whose(everyone=True)


def _item(row: Any) -> Quarantined:
    return Quarantined(
        row.id,
        row.adapter,
        row.received_at,
        row.source_key,
        row.content_type,
        row.payload,
        loads(row.outcome),
        row.status,
        row.client_id,
    )


def put(
    engine: Engine,
    adapter: str,
    payload: bytes,
    content_type: str,
    outcome: Json,
    source_key: str | None = None,
    client_id: str | None = None,
    keyed: bool = True,
) -> int:
    """Quarantine a rejected input of `client_id` (None: the gateway's own); its item id. The open item
    of the same client, adapter and source key (with `keyed` False, and the same payload) is refreshed
    instead of a second one added."""
    values = {
        "received_at": utc_now(),
        "content_type": content_type,
        "payload": payload,
        "outcome": dumps(outcome),
    }
    same = Whose(client_id).condition()
    key = Q.c.source_key.is_(None) if source_key is None else Q.c.source_key == source_key
    statement = select(Q.c.id).where(Q.c.adapter == adapter, Q.c.status == "open", same, key)
    if not keyed:
        statement = statement.where(Q.c.payload == payload)
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        if connection.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE serialises these already
            lock = f"quarantine|{adapter}|{client_id}|{source_key}"
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:lock))"), {"lock": lock})
        found = connection.execute(statement.order_by(Q.c.id).limit(1)).scalar()
        if found is not None:
            connection.execute(update(Q).where(Q.c.id == found).values(**values))
            return int(found)
        new_id: int = connection.execute(
            insert(Q)
            .values(adapter=adapter, source_key=source_key, status="open", client_id=client_id, **values)
            .returning(Q.c.id)
        ).scalar_one()
    return new_id


def get(engine: Engine, item_id: int, whose: Whose = EVERYONE) -> Quarantined | None:
    """The item, if `whose` may see it; None as for an id never used."""
    with engine.connect() as connection:
        row = connection.execute(select(Q).where(Q.c.id == item_id, whose.condition())).first()
    return _item(row) if row else None


def listing(
    engine: Engine,
    adapter: str | None = None,
    status: str | None = "open",
    limit: int = 100,
    after: int = 0,
    whose: Whose = EVERYONE,
) -> list[Quarantined]:
    statement = select(Q).where(Q.c.id > after, whose.condition())
    if adapter:
        statement = statement.where(Q.c.adapter == adapter)
    if status:
        statement = statement.where(Q.c.status == status)
    with engine.connect() as connection:
        rows = connection.execute(statement.order_by(Q.c.id).limit(limit)).all()
    return [_item(row) for row in rows]


def set_status(engine: Engine, item_id: int, status: str, payload: bytes | None = None) -> None:
    """Mark an item replayed or discarded; `payload` stores a corrected input in place of the old one."""
    values: dict[str, Any] = {"status": status}
    if status == "replayed":
        values["replayed_at"] = utc_now()
    if payload is not None:
        values["payload"] = payload
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        connection.execute(update(Q).where(Q.c.id == item_id).values(**values))
