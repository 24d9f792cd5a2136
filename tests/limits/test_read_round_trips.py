"""A read by id on PostgreSQL costs one statement, its SELECT (docs/performance.md, Reads by id): no
BEGIN/COMMIT around it (autocommit), no `SET LOCAL statement_timeout` once the pooled connection has the
request's timeout, no ping of a connection the pool lent a moment ago; for a region-wide client and an
organisation-scoped one alike. What the round trips did is still done: outside an HTTP request a
connection has the server's statement_timeout again, and a connection the server dropped while it rested in
the pool is replaced before it is lent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from gateway.store import database as store_database
from tests.conftest import Database
from tests.limits.conftest import Bounded, bounded_app
from tests.security.conftest import bearer, register

PATIENT = {"resourceType": "Patient", "id": "rt-1", "name": [{"family": "Tur"}]}


@pytest.fixture
def postgres(database: Database) -> Database:
    if database.backend != "postgresql":
        pytest.skip("the round trips counted are PostgreSQL's")
    return database


@contextmanager
def statements(app: Bounded) -> Iterator[list[tuple[str, bool]]]:
    """The statements sent through the engine while the block runs, each with whether its connection was
    in autocommit."""
    sent: list[tuple[str, bool]] = []

    def seen(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append((statement.split(maxsplit=1)[0], bool(conn.connection.driver_connection.autocommit)))

    event.listen(app.services.engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(app.services.engine, "before_cursor_execute", seen)


def test_a_read_by_id_sends_one_statement_for_either_client(postgres: Database) -> None:
    with bounded_app(postgres) as app:
        created = app.client.put("/fhir/Patient/rt-1", json=PATIENT, headers=app.headers)
        assert created.status_code == 201, created.text
        municipal = register(app.services, "system/*.rs", org="SE2321000016-RT")
        scoped = bearer(municipal.token(app.client, "system/*.rs"))
        for headers, status in ((app.headers, 200), (scoped, 404)):  # not related to it: hidden
            for _ in range(3):  # the pooled connections get the request's statement_timeout
                assert app.client.get("/fhir/Patient/rt-1", headers=headers).status_code == status
            with statements(app) as sent:
                answer = app.client.get("/fhir/Patient/rt-1", headers=headers)
            assert answer.status_code == status, answer.text
            assert sent == [("SELECT", True)]


def test_outside_a_request_the_server_default_statement_timeout_holds(postgres: Database) -> None:
    with bounded_app(postgres, statement_timeout=7) as app:
        app.client.put("/fhir/Patient/rt-1", json=PATIENT, headers=app.headers)
        for _ in range(5):
            assert app.client.get("/fhir/Patient/rt-1", headers=app.headers).status_code == 200
            with postgres.engine.connect() as connection:  # as the audit writer or a CLI command would
                connection.execute(text("SELECT 1"))
        for _ in range(5):  # each pooled connection
            with postgres.engine.begin() as connection:
                assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "0"


def test_a_connection_dropped_while_resting_in_the_pool_is_replaced(
    postgres: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_database, "PING_AFTER_IDLE", 0.0)  # every lent connection is tested
    with bounded_app(postgres) as app:
        app.client.put("/fhir/Patient/rt-1", json=PATIENT, headers=app.headers)
        assert app.client.get("/fhir/Patient/rt-1", headers=app.headers).status_code == 200
        held = [postgres.engine.connect() for _ in range(3)]  # the pool has at least these three
        pids = [connection.execute(text("SELECT pg_backend_pid()")).scalar_one() for connection in held]
        for connection in held:
            connection.close()
        admin = create_engine(postgres.url)
        try:
            with admin.connect() as connection:  # the server drops them while they rest in the pool
                for pid in pids:
                    connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            admin.dispose()
        for _ in range(6):
            answer = app.client.get("/fhir/Patient/rt-1", headers=app.headers)
            assert answer.status_code == 200, answer.text
