"""Migrations started by several processes at once on one empty PostgreSQL schema (each `gateway serve`
runs `db upgrade` first): all succeed, the schema is migrated once, to head (gateway/store/migrate.py takes
the schema's advisory lock). Without the lock the second one's CREATE TABLE fails on the first one's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

from gateway.store import migrate
from tests.conftest import POSTGRES_URL, SKIP_POSTGRES
from tests.interop.conftest import GATEWAY

UPGRADERS = 4
ROUNDS = 2


@pytest.fixture
def admin() -> Iterator[Engine]:
    if not POSTGRES_URL:
        pytest.skip(SKIP_POSTGRES)
    engine = create_engine(POSTGRES_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def empty_schemas(admin: Engine) -> Iterator[list[str]]:
    """Empty schemas of their own, dropped after."""
    made: list[str] = []

    def make() -> str:
        schema = f"gw_migrate_{uuid.uuid4().hex[:12]}"
        with admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        made.append(schema)
        return schema

    yield [make() for _ in range(ROUNDS)]
    with admin.begin() as connection:
        for schema in made:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def head() -> str:
    revision = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert revision is not None
    return revision


def versions(admin: Engine, schema: str) -> list[str]:
    with admin.connect() as connection:
        return list(connection.execute(text(f"SELECT version_num FROM {schema}.alembic_version")).scalars())


# One upgrading process: connected and with everything imported, it waits for the moment it is given, so
# that all of them start their migration within a millisecond or so of each other.
UPGRADER = """
import sys, time
from gateway.store import migrate
from gateway.store.database import make_engine
engine = make_engine(sys.argv[1], sys.argv[2])
with engine.connect():
    pass
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
migrate.upgrade(engine)
"""


def test_upgrades_started_at_once_on_an_empty_schema_all_succeed(
    admin: Engine, empty_schemas: list[str]
) -> None:
    """Several processes' upgrades of one empty schema released at the same moment, in a few rounds (in
    processes: Alembic's `context` is one per process). Without the lock the others' CREATE TABLE waits
    for the first one's commit and then fails on its table (or they deadlock)."""
    for schema in empty_schemas:
        moment = time.time() + 3.0  # after every process has started and connected
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", UPGRADER, POSTGRES_URL, schema, str(moment)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(UPGRADERS)
        ]
        failures = []
        for run in runs:
            try:
                _, err = run.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                run.kill()
                _, err = run.communicate()
            if run.returncode != 0:
                failures.append(err[-1500:])
        assert not failures, "\n----\n".join(failures)
        assert versions(admin, schema) == [head()]


def test_gateway_db_upgrade_in_two_processes_at_once(admin: Engine, empty_schemas: list[str]) -> None:
    """`gateway db upgrade` twice at once, as two containers starting on a new database do."""
    schema = empty_schemas[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "GATEWAY_"))}
    env |= {"DATABASE_URL": POSTGRES_URL, "DATABASE_SCHEMA": schema}
    command = [str(GATEWAY), "db", "upgrade"]
    runs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert "is up to date" in err
    assert versions(admin, schema) == [head()]
