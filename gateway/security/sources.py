"""The sources a registered client may send records of to the adapter entrances (table `client_source`,
`gateway clients add --source KIND:ID`, `gateway clients sources ID --add/--remove`).

A source is `KIND:ID`:
- `bestallningsportalen:<portal id>`: a Beställningsportalen (its id in mappings/bestallningsportalen/
  source.yaml `portal_id`, or an order's `portal`);
- `device-register:<REGISTER>@<owner HSA-id>`: one owner's units in a device register (SESAM, Medusa), the
  register name in capitals (a register is one register however a row spells it);
- `hl7v2:<HSA-id>`: a sending facility (MSH-4).
An adapter entrance takes a record from a registered client only when the client is bound to the record's
source; a record of any other source, bound to another client or to none, is refused the same way."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import cast

from sqlalchemy import Connection, Engine, Table, delete, insert, select

from gateway.store.database import WRITE_OPTION
from gateway.store.tables import ClientSource

SOURCES = cast(Table, ClientSource.__table__)

BESTALLNINGSPORTALEN = "bestallningsportalen"
DEVICE_REGISTER = "device-register"
HL7V2 = "hl7v2"
KINDS = (BESTALLNINGSPORTALEN, DEVICE_REGISTER, HL7V2)

HSA_ID = re.compile(r"^SE\d{10}-[A-Za-z0-9]{1,31}$")
PORTAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REGISTER = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_FORMS = {
    BESTALLNINGSPORTALEN: "bestallningsportalen:<portal id: letters, digits, . _ ->",
    DEVICE_REGISTER: "device-register:<REGISTER>@<owner HSA-id>",
    HL7V2: "hl7v2:<sending facility HSA-id (MSH-4)>",
}


class SourceError(ValueError):
    """Not a source: the text says what the form is."""


def device_register(register: str, owner: str) -> str:
    """The source of a register row: its register (in capitals) and its owner (`agare_hsaid`)."""
    return f"{DEVICE_REGISTER}:{register.strip().upper()}@{owner.strip()}"


def parse(text: str) -> str:
    """A source as `KIND:ID` in its canonical form, or SourceError."""
    kind, separator, ident = text.strip().partition(":")
    if not separator or kind not in KINDS:
        raise SourceError(f"{text!r} is not KIND:ID with KIND one of {', '.join(KINDS)}")
    if kind == BESTALLNINGSPORTALEN and PORTAL_ID.match(ident):
        return f"{kind}:{ident}"
    if kind == DEVICE_REGISTER:
        register, at, owner = ident.partition("@")
        if at and REGISTER.match(register) and HSA_ID.match(owner):
            return device_register(register, owner)
    if kind == HL7V2 and HSA_ID.match(ident):
        return f"{kind}:{ident}"
    raise SourceError(f"{text!r} is not of the form {_FORMS[kind]}")


def split(source: str) -> tuple[str, str]:
    kind, _, ident = source.partition(":")
    return kind, ident


def insert_rows(connection: Connection, client_id: str, sources: Iterable[str]) -> None:
    """Bind the client to these sources (canonical, see `parse`) in the caller's transaction; a source it
    is bound to already is left as it is."""
    statement = select(SOURCES.c.kind, SOURCES.c.source).where(SOURCES.c.client_id == client_id)
    held = {(str(row.kind), str(row.source)) for row in connection.execute(statement)}
    rows = [
        {"client_id": client_id, "kind": kind, "source": ident}
        for kind, ident in sorted({split(source) for source in sources})
        if (kind, ident) not in held
    ]
    if rows:
        connection.execute(insert(SOURCES), rows)


def bind(engine: Engine, client_id: str, sources: Iterable[str]) -> None:
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        insert_rows(connection, client_id, sources)


def unbind(engine: Engine, client_id: str, sources: Iterable[str]) -> None:
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        for kind, ident in sorted({split(source) for source in sources}):
            connection.execute(
                delete(SOURCES).where(
                    SOURCES.c.client_id == client_id, SOURCES.c.kind == kind, SOURCES.c.source == ident
                )
            )


def of_client(engine: Engine, client_id: str) -> frozenset[str]:
    """The sources the client is bound to, as `KIND:ID`."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(SOURCES.c.kind, SOURCES.c.source).where(SOURCES.c.client_id == client_id)
        ).all()
    return frozenset(f"{row.kind}:{row.source}" for row in rows)


def of_clients(engine: Engine) -> dict[str, list[str]]:
    """Every client's sources, by client id, sorted."""
    found: dict[str, list[str]] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(SOURCES).order_by(SOURCES.c.client_id, SOURCES.c.kind, SOURCES.c.source)
        ).all()
    for row in rows:
        found.setdefault(row.client_id, []).append(f"{row.kind}:{row.source}")
    return found
