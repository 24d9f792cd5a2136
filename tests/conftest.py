"""Shared fixtures. Every storage, search and API test runs on SQLite and, when
GATEWAY_TEST_POSTGRES_URL is set, on PostgreSQL too (one schema per test session, dropped after)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from gateway.app import create_app
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine
from gateway.store.tables import Base

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
# Where fastapi's TestClient requests come to: the configured base URL of every test with auth on (the
# gateway refuses to start with auth on and none, docs/security.md).
BASE_URL = "http://testserver/fhir"
# The installation's key secret of the tests' gateways, on both backends (with auth on and PostgreSQL the
# gateway does not start without one, docs/security.md): the in-process settings, the subprocesses'
# environment and the ids the tests compute (tests/adapters/source_ids.py) share it.
TEST_KEY_SECRET = "the tests' installation key secret, never a real one"
SKIP_POSTGRES = "PostgreSQL half skipped: set GATEWAY_TEST_POSTGRES_URL (CI sets it) to run it"


@dataclass
class Database:
    backend: str
    url: str
    schema: str
    engine: Engine

    def settings(self, **overrides: object) -> Settings:
        """Settings for this database; auth is off unless a test asks for it (`auth=True`, or the
        `secure_services` / `secure_client` fixtures), and so is audit (`audit=True`, tests/security/
        test_audit.py): AuditEvents would otherwise show up in tests that count what is stored. With auth
        on, the base URL is BASE_URL unless given; the key secret is TEST_KEY_SECRET unless given."""
        values: dict[str, object] = {
            "database_url": self.url,
            "database_schema": self.schema,
            "auth": False,
            "audit": False,
            "notify": False,  # no deliverer thread unless a test asks (tests/subscriptions)
            "schedule_seconds": 0.0,  # no scheduler thread unless a test asks (tests/schedule)
            "key_secret": TEST_KEY_SECRET,
            "export_poll_seconds": 0.0,  # no export worker thread: tests run `Worker.run_once` (tests/export)
        }
        values.update(overrides)
        if values["auth"] and "base_url" not in overrides:
            values["base_url"] = BASE_URL
        return Settings(**values)  # type: ignore[arg-type]

    def environment(self) -> dict[str, str]:
        """The environment a `gateway` subprocess needs to use this database. Its audit trail is off,
        like the in-process fixtures': a background audit writer would race the tables' clearing
        between tests (tests/security/test_audit.py covers the audit trail); so is the scheduler thread.
        So is the subscription deliverer: a served process (the interop tests' server lives as long as the
        test session) would otherwise match and deliver the subscriptions of later tests on this schema,
        taking their events and marking their endpoints refused (tests/subscriptions/test_processes.py
        turns it on for its own servers). The key secret is the in-process settings' (TEST_KEY_SECRET)."""
        return {
            "DATABASE_URL": self.url,
            "DATABASE_SCHEMA": self.schema,
            "GATEWAY_AUDIT": "off",
            "GATEWAY_SCHEDULE_SECONDS": "0",  # no scheduler thread in a served subprocess (tests/schedule)
            "GATEWAY_KEY_SECRET": TEST_KEY_SECRET,
            "GATEWAY_EXPORT_POLL_SECONDS": "0",  # nor an export worker (tests/export run it themselves)
            "GATEWAY_NOTIFY": "off",  # nor a subscription deliverer
        }

    def clear(self) -> None:
        """Every table emptied. On PostgreSQL the TRUNCATE may deadlock with what a previous test left
        finishing in the background (a served process or thread still reading): PostgreSQL aborts one of
        the two, and the TRUNCATE is tried again once the other is done."""
        tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
        for attempt in range(1, 6):
            try:
                with self.engine.begin() as connection:
                    if self.backend == "postgresql":
                        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                    else:
                        for name in tables:
                            connection.execute(text(f"DELETE FROM {name}"))
                return
            except OperationalError as error:
                if attempt == 5 or "deadlock" not in str(error).lower():
                    raise
                time.sleep(0.5 * attempt)


def _sqlite(tmp: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp / 'gateway.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield Database("sqlite", url, "", engine)
    engine.dispose()


@contextmanager
def postgres_schema(prefix: str = "gw_test") -> Iterator[Database]:
    """A PostgreSQL schema of its own (`prefix` and a random suffix), migrated, dropped after."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_POSTGRES)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine = make_engine(POSTGRES_URL, schema)
    try:
        migrate.upgrade(engine)
        yield Database("postgresql", POSTGRES_URL, schema, engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    if request.param == "sqlite":
        yield from _sqlite(tmp_path_factory.mktemp("sqlite"))
    else:
        with postgres_schema() as database:
            yield database


@pytest.fixture
def services(database: Database) -> Iterator[Services]:
    database.clear()
    built = Services.build(database.settings(), engine=database.engine)
    yield built
    built.close()  # no audit record of this test is written after the next one clears the tables


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services.settings, services=services)) as test_client:
        yield test_client


@pytest.fixture
def secure_services(database: Database) -> Iterator[Services]:
    """Services with GATEWAY_AUTH on: tokens required, SMART scopes and the organisation policy enforced
    (a client registered with `region=True`, tests/security/conftest.py, is exempt from the latter)."""
    database.clear()
    built = Services.build(database.settings(auth=True), engine=database.engine)
    yield built
    built.close()


@pytest.fixture
def secure_client(secure_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(secure_services.settings, services=secure_services)) as test_client:
        yield test_client


@pytest.fixture
def audited_services(database: Database) -> Iterator[Services]:
    """`secure_services` with the audit trail on: AuditEvents are stored (all of them once closed)."""
    database.clear()
    built = Services.build(database.settings(auth=True, audit=True), engine=database.engine)
    yield built
    built.close()


@pytest.fixture
def audited_client(audited_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(audited_services.settings, services=audited_services)) as test_client:
        yield test_client
