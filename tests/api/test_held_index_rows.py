"""A unit of work's version rows, index rows and identifier claims are held back and written together (one
INSERT per table), yet every read inside the transaction sees them, and a rollback leaves none behind."""

from __future__ import annotations

import fcntl
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from gateway.errors import FhirError
from gateway.fhir.transaction import run_transaction
from gateway.hooks import RequestContext
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store import pending
from gateway.store.database import is_sqlite
from gateway.store.tables import IdentifierClaim, StringIndex

CONTEXT = RequestContext(base_url="http://test/fhir")
SYSTEM = "urn:test:held"


def patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": f"p{n}"}],
        "name": [{"family": f"Held{n}"}],
    }


@pytest.fixture
def inserts(services: Services) -> Iterator[Counter[str]]:
    """INSERT statements sent to the database, by table."""
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO"):
            seen[statement.split()[2]] += 1

    event.listen(services.engine, "before_cursor_execute", count)
    yield seen
    event.remove(services.engine, "before_cursor_execute", count)


def test_one_insert_per_index_table_for_a_whole_unit_of_work(
    services: Services, inserts: Counter[str]
) -> None:
    def work(uow: UnitOfWork) -> None:
        for n in range(3):
            services.write_path.create(uow, patient(n))

    services.write_path.run(CONTEXT, work)
    assert inserts["resource"] == 3 and inserts["resource_version"] == 1
    assert inserts["idx_string"] == 1 and inserts["identifier_claim"] == 1
    with services.engine.connect() as connection:
        claims = connection.execute(select(func.count()).select_from(IdentifierClaim)).scalar_one()
        names = connection.execute(
            select(func.count()).select_from(StringIndex).where(StringIndex.value_folded.like("held%"))
        ).scalar_one()
    assert claims == 3 and names >= 3


def test_reads_inside_the_transaction_see_the_held_rows(services: Services) -> None:
    def work(uow: UnitOfWork) -> list[int]:
        created = services.write_path.create(uow, patient(1)).stored
        assert pending.held(uow.connection), "held back, not yet written"
        assert uow.repository.version("Patient", created.res_id, 1) is not None, "vread sees the version"
        by_identifier = services.searcher.match(uow.connection, "Patient", f"identifier={SYSTEM}|p1")
        by_name = services.searcher.match(uow.connection, "Patient", "family=Held1")
        # A second resource with the same identifier, in the same transaction, is refused.
        with pytest.raises(Exception, match="already has the identifier"):
            services.write_path.create(uow, patient(1))
        return [len(by_identifier), len(by_name), created.rid]

    found_by_identifier, found_by_name, _ = services.write_path.run(CONTEXT, work)
    assert (found_by_identifier, found_by_name) == (1, 1)


def test_an_update_in_the_same_transaction_replaces_the_held_rows(services: Services) -> None:
    def work(uow: UnitOfWork) -> None:
        stored = services.write_path.create(uow, patient(2)).stored
        renamed = patient(2) | {"id": stored.res_id, "name": [{"family": "Renamed"}]}
        renamed["identifier"] = [{"system": SYSTEM, "value": "p2-new"}]
        services.write_path.update(uow, "Patient", stored.res_id, renamed)

    services.write_path.run(CONTEXT, work)

    def check(uow: UnitOfWork) -> tuple[int, int, int, int]:
        match = services.searcher.match
        return (
            len(match(uow.connection, "Patient", "family=Held2")),
            len(match(uow.connection, "Patient", "family=Renamed")),
            len(match(uow.connection, "Patient", f"identifier={SYSTEM}|p2")),
            len(match(uow.connection, "Patient", f"identifier={SYSTEM}|p2-new")),
        )

    assert services.write_path.run(CONTEXT, check, write=False) == (0, 1, 0, 1)


def test_a_rollback_leaves_no_held_rows_behind(services: Services) -> None:
    class Abort(Exception):
        pass

    def failing(uow: UnitOfWork) -> None:
        services.write_path.create(uow, patient(3))
        raise Abort

    with pytest.raises(Abort):
        services.write_path.run(CONTEXT, failing)
    # The next units of work (on the same pooled connections) write nothing of the rolled-back one.
    services.write_path.run(CONTEXT, lambda uow: services.write_path.create(uow, patient(4)))
    with services.engine.connect() as connection:
        values = connection.execute(select(IdentifierClaim.value).where(IdentifierClaim.system == SYSTEM))
        assert sorted(row[0] for row in values) == ["p4"]


def test_a_transaction_reads_its_put_targets_in_one_query(services: Services) -> None:
    ids = services.write_path.run(
        CONTEXT, lambda uow: [services.write_path.create(uow, patient(n)).stored.res_id for n in (5, 6, 7)]
    )
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if (
            statement.startswith("SELECT")
            and "FROM resource" in statement
            and "identifier_claim" not in statement
        ):
            reads.append(statement)

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": patient(n) | {"id": res_id, "name": [{"family": f"Renamed{n}"}]},
                "request": {"method": "PUT", "url": f"Patient/{res_id}"},
            }
            for n, res_id in zip((5, 6, 7), ids, strict=True)
        ]
        + [
            {
                "resource": patient(8) | {"id": "held-new"},
                "request": {"method": "PUT", "url": "Patient/held-new"},
            }
        ],
    }
    event.listen(services.engine, "before_cursor_execute", count)
    try:
        response = run_transaction(services, CONTEXT, bundle)
    finally:
        event.remove(services.engine, "before_cursor_execute", count)
    assert [entry["response"]["status"][:3] for entry in response["entry"]] == ["200", "200", "200", "201"]
    assert len(reads) == 1, reads


def test_a_row_read_ahead_is_taken_once_and_dropped_when_written(services: Services) -> None:
    res_id = services.write_path.run(
        CONTEXT, lambda uow: services.write_path.create(uow, patient(9)).stored.res_id
    )

    def work(uow: UnitOfWork) -> list[int]:
        uow.read_ahead_for_write([("Patient", res_id), ("Patient", "held-later")])
        versions = []
        for family in ("First", "Second"):  # the second update must see the first one's version
            body = patient(9) | {"id": res_id, "name": [{"family": family}]}
            versions.append(services.write_path.update(uow, "Patient", res_id, body).stored.version_id)
        # Read ahead as absent, then created by another step of the unit of work: the update that
        # follows must find it, not the stale "absent".
        services.write_path.create(uow, patient(10), new_id="held-later")
        assert ("Patient", "held-later") not in uow.read_ahead
        body = patient(10) | {"id": "held-later", "name": [{"family": "Later"}]}
        versions.append(services.write_path.update(uow, "Patient", "held-later", body).stored.version_id)
        return versions

    assert services.write_path.run(CONTEXT, work) == [2, 3, 2]


def test_a_transaction_validates_its_entries_before_its_unit_of_work(services: Services) -> None:
    """An invalid entry is refused before anything is sent to the database (on SQLite: before the write
    lock is taken), with the entry and the field named."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(11), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Task", "id": "held-task", "status": "bogus", "intent": "order"},
                "request": {"method": "PUT", "url": "Task/held-task"},
            },
        ],
    }
    event.listen(services.engine, "before_cursor_execute", count)
    try:
        with pytest.raises(FhirError) as refused:
            run_transaction(services, CONTEXT, bundle)
    finally:
        event.remove(services.engine, "before_cursor_execute", count)
    assert refused.value.status == 400
    assert refused.value.issues[0].expression == ("Bundle.entry[1].resource.status",)
    assert sent == []


def test_sqlite_write_units_of_work_take_turns_on_the_writer_queue(services: Services) -> None:
    """A write unit of work on a SQLite file holds the queue (a file lock beside the database) from before
    its BEGIN until after its COMMIT; another writer, thread or process, waits for its turn."""
    if not is_sqlite(services.engine):
        pytest.skip("PostgreSQL has no writer queue: its writers lock rows")
    lock_file = f"{services.engine.url.database}-writer"

    def held_by_another() -> bool:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock this descriptor took
        return False

    def work(uow: UnitOfWork) -> bool:
        services.write_path.create(uow, patient(12))
        return held_by_another()

    assert services.write_path.run(CONTEXT, work) is True, "held while writing"
    assert held_by_another() is False, "released after the commit"
    assert services.write_path.run(CONTEXT, lambda uow: held_by_another(), write=False) is False, "reads"
