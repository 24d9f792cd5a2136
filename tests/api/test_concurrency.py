"""Nothing lost or doubled under concurrency: the database, not a read-then-write, decides."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from gateway.errors import FhirError
from gateway.hooks import RequestContext
from gateway.pipeline import UnitOfWork, WriteResult
from gateway.services import Services
from tests.api.helpers import PNR, patient

WORKERS = 20
CONTEXT = RequestContext(base_url="http://test/fhir")


def _race(services: Services, work: Callable[[UnitOfWork, int], WriteResult]) -> list[int | str]:
    """Run `work` in WORKERS threads released at the same moment; each gives a status or an error."""
    barrier = Barrier(WORKERS)

    def attempt(worker: int) -> int | str:
        barrier.wait()
        try:
            return services.write_path.run(CONTEXT, lambda uow: work(uow, worker)).status
        except FhirError as error:
            return f"error {error.status}"

    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(attempt, range(WORKERS)))


def _count(services: Services, query: str) -> int:
    return services.write_path.run(
        CONTEXT,
        lambda uow: len(services.searcher.match(uow.connection, "Patient", query, limit=100)),
        write=False,
    )


def test_concurrent_identical_conditional_creates_make_one_resource(services: Services) -> None:
    condition = f"identifier={PNR}|191212121212"
    results = _race(services, lambda uow, _: services.write_path.create(uow, patient(), condition))
    assert Counter(results) == Counter({201: 1, 200: WORKERS - 1})
    assert _count(services, condition) == 1


def test_concurrent_conditional_updates_on_one_identifier_make_one_resource(services: Services) -> None:
    condition = f"identifier={PNR}|191212121212"

    def work(uow: UnitOfWork, _: int) -> WriteResult:
        return services.write_path.conditional_update(uow, "Patient", condition, patient())

    results = _race(services, work)
    assert results.count(201) == 1
    assert all(result in (200, 201) for result in results)
    assert _count(services, condition) == 1


def test_concurrent_updates_with_if_match_let_exactly_one_win(services: Services) -> None:
    services.write_path.run(
        CONTEXT, lambda uow: services.write_path.update(uow, "Patient", "p1", patient(id="p1"))
    )

    def work(uow: UnitOfWork, worker: int) -> WriteResult:
        changed: dict[str, Any] = patient(id="p1", family=f"Namn{worker}")
        return services.write_path.update(uow, "Patient", "p1", changed, if_match=1)

    results = _race(services, work)
    assert results.count(200) == 1
    assert results.count("error 412") == WORKERS - 1


def test_concurrent_updates_without_if_match_lose_nothing(services: Services) -> None:
    services.write_path.run(
        CONTEXT, lambda uow: services.write_path.update(uow, "Patient", "p1", patient(id="p1"))
    )

    def work(uow: UnitOfWork, worker: int) -> WriteResult:
        return services.write_path.update(uow, "Patient", "p1", patient(id="p1", family=f"Namn{worker}"))

    results = _race(services, work)
    assert all(result == 200 for result in results), results
    current = services.write_path.run(CONTEXT, lambda uow: services.write_path.read(uow, "Patient", "p1"))
    # every update became its own version: none was lost, none doubled
    assert current.version_id == WORKERS + 1


class _Deadlocked(Exception):
    sqlstate = "40P01"  # PostgreSQL: deadlock_detected


class _Unreachable(Exception):
    sqlstate = "08006"  # PostgreSQL: connection_failure


def test_a_unit_of_work_that_deadlocked_is_run_again_and_other_database_errors_are_not(
    services: Services,
) -> None:
    """Two writers waiting on each other's rows: PostgreSQL ends one of them (nothing written); the write
    path runs it again, as it does after any conflict with a concurrent writer."""
    calls: list[int] = []

    def deadlocked_once(uow: UnitOfWork) -> int:
        calls.append(1)
        services.write_path.create(uow, patient("191212121212"))
        if len(calls) == 1:
            raise OperationalError("UPDATE resource …", {}, _Deadlocked())
        return services.write_path.create(uow, patient("191212121213")).status

    assert services.write_path.run(CONTEXT, deadlocked_once) == 201
    assert len(calls) == 2
    assert _count(services, f"identifier={PNR}|") == 2, "the first run left nothing behind"  # nor a 409

    def unreachable(uow: UnitOfWork) -> int:
        raise OperationalError("SELECT 1", {}, _Unreachable())

    with pytest.raises(OperationalError):
        services.write_path.run(CONTEXT, unreachable)


def test_concurrent_identical_non_identifier_conditional_creates_make_one_resource(
    services: Services,
) -> None:
    """Criteria that are not an identifier (docs/fhir/create.md): the same normalized criteria, evaluated
    as the same client, take turns, so twenty concurrent creates make one resource."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
    }
    condition = "code=http://loinc.org|59408-5&status=final"
    same = "status=final&code=http%3A%2F%2Floinc.org%7C59408-5"  # the same criteria, written otherwise
    results = _race(
        services,
        lambda uow, worker: services.write_path.create(uow, observation, condition if worker % 2 else same),
    )
    assert Counter(results) == Counter({201: 1, 200: WORKERS - 1})
    found = services.write_path.run(
        CONTEXT,
        lambda uow: len(services.searcher.match(uow.connection, "Observation", condition, limit=100)),
        write=False,
    )
    assert found == 1


def test_concurrent_patches_without_if_match_are_all_applied(services: Services) -> None:
    """A patch without If-Match is applied to the version it finds; a concurrent change makes it apply
    again to the newer one (docs/fhir/patch.md): every patch counts."""
    created = services.write_path.run(
        CONTEXT, lambda uow: services.write_path.create(uow, patient() | {"name": [{"family": "Lapp"}]})
    )
    res_id = created.stored.res_id

    def work(uow: UnitOfWork, worker: int) -> WriteResult:
        operation = [{"op": "add", "path": "/name/-", "value": {"family": f"n{worker}"}}]
        return services.write_path.patch(uow, "Patient", res_id, operation)

    results = _race(services, work)
    assert Counter(results) == Counter({200: WORKERS})
    stored = services.write_path.run(
        CONTEXT, lambda uow: uow.repository.current("Patient", res_id), write=False
    )
    assert stored is not None
    families = [name["family"] for name in stored.json()["name"][1:]]
    assert sorted(families) == sorted(f"n{n}" for n in range(WORKERS))
    assert stored.version_id == WORKERS + 1
