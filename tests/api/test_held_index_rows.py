"""A unit of work's version rows, index rows and identifier claims are held back and written together (one
INSERT per table), yet every read inside the transaction sees them, and a rollback leaves none behind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from gateway.hooks import RequestContext
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store import pending
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
