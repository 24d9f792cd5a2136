"""The adapters' quarantine: rejected inputs kept verbatim, listed, corrected and replayed.

Written in a transaction of its own, after the rejected input's transaction was rolled back, so a
rejection never leaves anything half-written and is never lost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Engine, Table, insert, select, update

from gateway.model.types import Json, dumps, loads
from gateway.search.dates import to_instant, utc_now
from gateway.store.tables import QuarantineItem

Q = cast(Table, QuarantineItem.__table__)


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
            "outcome": self.outcome,
        }


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
    )


def put(
    engine: Engine,
    adapter: str,
    payload: bytes,
    content_type: str,
    outcome: Json,
    source_key: str | None = None,
) -> int:
    with engine.begin() as connection:
        new_id: int = connection.execute(
            insert(Q)
            .values(
                adapter=adapter,
                received_at=utc_now(),
                source_key=source_key,
                content_type=content_type,
                payload=payload,
                outcome=dumps(outcome),
                status="open",
            )
            .returning(Q.c.id)
        ).scalar_one()
    return new_id


def get(engine: Engine, item_id: int) -> Quarantined | None:
    with engine.connect() as connection:
        row = connection.execute(select(Q).where(Q.c.id == item_id)).first()
    return _item(row) if row else None


def listing(
    engine: Engine, adapter: str | None = None, status: str | None = "open", limit: int = 100, after: int = 0
) -> list[Quarantined]:
    statement = select(Q).where(Q.c.id > after)
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
    with engine.begin() as connection:
        connection.execute(update(Q).where(Q.c.id == item_id).values(**values))
