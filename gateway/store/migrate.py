"""Alembic migrations run programmatically, on an engine the caller already has.

Several processes may upgrade one database at once (each `gateway serve` runs `db upgrade` first): on
PostgreSQL the migration holds the schema's advisory lock (gateway/store/locks.py) from before Alembic reads
the schema's version until its commit, so one process migrates and the others then find the schema at head;
on SQLite the migration is a write transaction from its start (`BEGIN IMMEDIATE`), which serialises them."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from gateway.store import locks
from gateway.store.database import WRITE_OPTION


def alembic_config() -> Config:
    ini = resources.files("gateway") / "alembic.ini"
    return Config(str(ini))


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection, connection.begin():
        locks.hold_for_transaction(connection, locks.MIGRATION)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
