"""Security's rows in the database: registered clients, disabled external client ids, the gateway's
signing keys, seen assertion jtis.

Times are naive UTC, like every other DateTime column of the store.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.hooks import internal_client
from gateway.security import sources as client_sources
from gateway.store import locks
from gateway.store.database import WRITE_OPTION
from gateway.store.tables import AssertionJti, ClientNotify, DisabledClient, OAuthClient, SigningKey

CLIENTS = cast(Table, OAuthClient.__table__)
KEYS = cast(Table, SigningKey.__table__)
JTIS = cast(Table, AssertionJti.__table__)
DISABLED = cast(Table, DisabledClient.__table__)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    organization: str
    jwks: dict[str, Any]
    scopes: tuple[str, ...]
    created_at: datetime
    active: bool


@dataclass(frozen=True)
class KeyRow:
    kid: str
    alg: str
    # The private JWK as stored: sealed (gateway.security.sealing), or plain JSON from before encryption.
    stored_jwk: str
    created_at: datetime
    retired_at: datetime | None


def _client(row: Any) -> Client:
    return Client(
        row.client_id,
        row.name,
        row.organization,
        json.loads(row.jwks),
        tuple(row.scopes.split()),
        row.created_at,
        bool(row.active),
    )


NOTIFY = cast(Table, ClientNotify.__table__)


def add_client(
    engine: Engine,
    name: str,
    organization: str,
    jwks: dict[str, Any],
    scopes: list[str],
    client_id: str | None = None,
    sources: Sequence[str] = (),
    notify: Sequence[tuple[str, str]] = (),
) -> Client:
    """Register a client, bound to `sources` (canonical `KIND:ID`, `gateway.security.sources.parse`). A
    generated id is hexadecimal: an operator types it after `gateway clients disable`, where one beginning
    with `-` would be read as an option."""
    if client_id is not None and internal_client(client_id):
        raise ValueError(f"'{client_id}' is a client id the gateway keeps for itself")
    client = Client(
        client_id or secrets.token_hex(16), name, organization, jwks, tuple(scopes), utc_now(), True
    )
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        connection.execute(
            insert(CLIENTS).values(
                client_id=client.client_id,
                name=name,
                organization=organization,
                jwks=json.dumps(jwks, sort_keys=True),
                scopes=" ".join(scopes),
                created_at=client.created_at,
                active=True,
            )
        )
        client_sources.insert_rows(connection, client.client_id, sources)
        if notify:  # where its subscriptions may deliver (gateway/subscriptions/endpoints.py)
            connection.execute(
                insert(NOTIFY), [{"client_id": client.client_id, "kind": k, "value": v} for k, v in notify]
            )
    return client


def update_client(engine: Engine, client_id: str, jwks: dict[str, Any], scopes: list[str]) -> None:
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        connection.execute(
            update(CLIENTS)
            .where(CLIENTS.c.client_id == client_id)
            .values(jwks=json.dumps(jwks, sort_keys=True), scopes=" ".join(scopes), active=True)
        )


def get_client(engine: Engine, client_id: str) -> Client | None:
    with engine.connect() as connection:
        row = connection.execute(select(CLIENTS).where(CLIENTS.c.client_id == client_id)).first()
    return _client(row) if row is not None else None


def list_clients(engine: Engine) -> list[Client]:
    with engine.connect() as connection:
        rows = connection.execute(select(CLIENTS).order_by(CLIENTS.c.created_at, CLIENTS.c.client_id)).all()
    return [_client(row) for row in rows]


@dataclass(frozen=True)
class ClientStatus:
    """What the database says of a client id: registered (and then active or not), and whether it is on
    the list of disabled client ids (an external issuer's clients, `gateway clients disable`)."""

    registered: bool
    active: bool
    disabled: bool


def client_status(engine: Engine, client_id: str) -> ClientStatus:
    with engine.connect() as connection:
        active = connection.execute(
            select(CLIENTS.c.active).where(CLIENTS.c.client_id == client_id)
        ).scalar_one_or_none()
        disabled = connection.execute(
            select(DISABLED.c.client_id).where(DISABLED.c.client_id == client_id)
        ).first()
    return ClientStatus(active is not None, bool(active), disabled is not None)


def set_client_active(engine: Engine, client_id: str, active: bool) -> bool:
    """Enable or disable a registered client; False when no client has this id."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        result = connection.execute(
            update(CLIENTS).where(CLIENTS.c.client_id == client_id).values(active=active)
        )
    return bool(result.rowcount)


def remove_client(engine: Engine, client_id: str) -> bool:
    """Delete a registered client (its bound sources go with it); False when no client has this id."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        result = connection.execute(delete(CLIENTS).where(CLIENTS.c.client_id == client_id))
    return bool(result.rowcount)


def disable_external(engine: Engine, client_id: str) -> bool:
    """Put a client id that is not registered here (an external issuer's client) on the disabled list;
    False when it was there already (its first date is kept)."""
    try:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
            connection.execute(insert(DISABLED).values(client_id=client_id, disabled_at=utc_now()))
    except IntegrityError:
        return False
    return True


def enable_external(engine: Engine, client_id: str) -> bool:
    """Take a client id off the disabled list; False when it was not on it."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        result = connection.execute(delete(DISABLED).where(DISABLED.c.client_id == client_id))
    return bool(result.rowcount)


def disabled_external(engine: Engine) -> list[tuple[str, datetime]]:
    """The disabled client ids and when each was disabled, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(DISABLED.c.client_id, DISABLED.c.disabled_at).order_by(
                DISABLED.c.disabled_at, DISABLED.c.client_id
            )
        ).all()
    return [(row.client_id, row.disabled_at) for row in rows]


def remember_jti(engine: Engine, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record an assertion's jti; False when it was seen before (a replay). The primary key decides, so
    two workers racing with the same assertion cannot both win. Expired jtis are forgotten on the way."""
    try:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
            connection.execute(delete(JTIS).where(JTIS.c.expires_at < utc_now()))
            connection.execute(insert(JTIS).values(client_id=client_id, jti=jti, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def _key(row: Any) -> KeyRow:
    return KeyRow(row.kid, row.alg, row.private_jwk, row.created_at, row.retired_at)


def published_keys(engine: Engine, keep: timedelta) -> list[KeyRow]:
    """Active keys and those retired less than `keep` ago, newest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(KEYS)
            .where((KEYS.c.retired_at.is_(None)) | (KEYS.c.retired_at > utc_now() - keep))
            .order_by(KEYS.c.created_at.desc(), KEYS.c.kid)
        ).all()
    return [_key(row) for row in rows]


def add_key(engine: Engine, kid: str, alg: str, sealed_jwk: str, retire_others: bool) -> None:
    """Store a new signing key (its private JWK sealed); with `retire_others`, the keys signing until now
    become retired. Rotations of several processes at once take turns (the schema's advisory lock), so
    one key is left active."""
    now = utc_now()
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        locks.hold_for_transaction(connection, locks.SIGNING_KEYS)
        if retire_others:
            connection.execute(update(KEYS).where(KEYS.c.retired_at.is_(None)).values(retired_at=now))
        connection.execute(
            insert(KEYS).values(kid=kid, alg=alg, private_jwk=sealed_jwk, created_at=now, retired_at=None)
        )


def add_first_key(engine: Engine, kid: str, alg: str, sealed_jwk: str) -> bool:
    """Store the first signing key unless there is an active key already; whether it was stored. Processes
    (and threads) starting on an empty database all try at once: the schema's advisory lock (SQLite: the
    write transaction) lets one store it, the others find it and sign with it."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        locks.hold_for_transaction(connection, locks.SIGNING_KEYS)
        active = connection.execute(select(KEYS.c.kid).where(KEYS.c.retired_at.is_(None)).limit(1)).first()
        if active is not None:
            return False
        connection.execute(
            insert(KEYS).values(
                kid=kid, alg=alg, private_jwk=sealed_jwk, created_at=utc_now(), retired_at=None
            )
        )
    return True


def all_keys(engine: Engine) -> list[KeyRow]:
    with engine.connect() as connection:
        rows = connection.execute(select(KEYS).order_by(KEYS.c.created_at, KEYS.c.kid)).all()
    return [_key(row) for row in rows]


def reseal_key(engine: Engine, kid: str, plain_jwk: str, sealed_jwk: str) -> None:
    """Replace a key's plain private JWK by its sealed form (only while it is still the plain one)."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        connection.execute(
            update(KEYS)
            .where(KEYS.c.kid == kid, KEYS.c.private_jwk == plain_jwk)
            .values(private_jwk=sealed_jwk)
        )


def drop_retired_keys(engine: Engine, keep: timedelta) -> int:
    """Delete keys retired longer than `keep` ago: no unexpired token can carry their signature."""
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        result = connection.execute(delete(KEYS).where(KEYS.c.retired_at <= utc_now() - keep))
    return int(result.rowcount)
