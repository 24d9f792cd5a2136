"""Several transaction Bundles in one unit of work (`run_transactions`, the adapters' bulk entrance), each
in a savepoint (`UnitOfWork.attempt`): a Bundle that fails leaves nothing behind, not even rows it held
back or that were written while it ran, and the ones before it commit as if each had run alone."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import run_transactions
from gateway.hooks import AccessRecord, LogAudit, RequestContext
from gateway.pipeline import Conflict, UnitOfWork
from gateway.services import Services
from gateway.store import pending
from gateway.store.tables import IdentifierClaim, Resource, ResourceVersion, StringIndex

CONTEXT = RequestContext(base_url="http://test/fhir")
SYSTEM = "urn:test:grouped"


class Abort(Exception):
    pass


class Recorder(LogAudit):
    """An AuditSink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[AccessRecord] = []

    def record(self, record: AccessRecord) -> None:
        self.records.append(record)


def patient(value: str, family: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": value}],
        "name": [{"family": family or f"Grouped{value}"}],
    }


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post(resource: dict[str, Any], if_none_exist: str | None = None) -> dict[str, Any]:
    request = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"resource": resource, "request": request}


def stored(services: Services) -> dict[str, int]:
    """What the database holds of this test's Patients: resource and version rows, claims, names."""
    with services.engine.connect() as connection:

        def count(statement: Any) -> int:
            return int(connection.execute(statement).scalar_one())

        return {
            "resources": count(
                select(func.count()).select_from(Resource).where(Resource.res_type == "Patient")
            ),
            "versions": count(
                select(func.count()).select_from(ResourceVersion).where(ResourceVersion.res_type == "Patient")
            ),
            "claims": count(
                select(func.count()).select_from(IdentifierClaim).where(IdentifierClaim.system == SYSTEM)
            ),
            "names": count(
                select(func.count())
                .select_from(StringIndex)
                .where(StringIndex.param == "family", StringIndex.value_folded.like("grouped%"))
            ),
        }


def values(services: Services) -> list[str]:
    with services.engine.connect() as connection:
        rows = connection.execute(select(IdentifierClaim.value).where(IdentifierClaim.system == SYSTEM))
        return sorted(row[0] for row in rows)


def test_a_failed_attempt_leaves_nothing_and_the_unit_of_work_goes_on(services: Services) -> None:
    """The rows held before the attempt are written inside it (a search makes them be written) and then
    taken back by its rollback: they must still be written at commit; the attempt's own rows must not."""
    write_path = services.write_path

    def failing(uow: UnitOfWork) -> None:
        write_path.create(uow, patient("b"))
        services.searcher.match(uow.connection, "Patient", "family=Groupeda")  # writes what is held
        assert not pending.held(uow.connection), "written before the search"
        write_path.create(uow, patient("c"))
        raise Abort

    def work(uow: UnitOfWork) -> int:
        write_path.create(uow, patient("a"))
        with pytest.raises(Abort):
            uow.attempt(lambda: failing(uow))
        assert [change.res_type for change in uow.changes] == ["Patient"], "the attempt's changes forgotten"
        write_path.create(uow, patient("d"))
        assert uow.attempt(lambda: write_path.create(uow, patient("e")).status) == 201
        return len(uow.records)

    assert write_path.run(CONTEXT, work) == 3  # a, d and e audited; b and c not
    assert values(services) == ["a", "d", "e"]
    assert stored(services) == {"resources": 3, "versions": 3, "claims": 3, "names": 3}


def test_a_failed_attempt_frees_the_identifiers_it_claimed(services: Services) -> None:
    def work(uow: UnitOfWork) -> str:
        with pytest.raises(Abort):
            uow.attempt(lambda: (services.write_path.create(uow, patient("x")), (_ for _ in ()).throw(Abort)))
        return services.write_path.create(uow, patient("x")).stored.res_id

    res_id = services.write_path.run(CONTEXT, work)
    found = services.write_path.run(
        CONTEXT, lambda uow: services.searcher.match(uow.connection, "Patient", f"identifier={SYSTEM}|x")
    )
    assert [s.res_id for s in found] == [res_id]


def test_run_transactions_stores_the_bundles_before_the_first_that_fails(services: Services) -> None:
    recorder = Recorder()
    services.hooks.audit = recorder
    first = services.write_path.run(CONTEXT, lambda uow: services.write_path.create(uow, patient("p0")))
    stale = {
        "resource": patient("p0", "Renamed") | {"id": first.stored.res_id},
        "request": {"method": "PUT", "url": f"Patient/{first.stored.res_id}", "ifMatch": 'W/"7"'},
    }
    recorder.records.clear()
    bundles = [
        transaction(post(patient("p1"))),
        transaction(post(patient("p2")), post(patient("p3"))),
        transaction(post(patient("p4")), stale),  # 412 once written: p4 is taken back too
        transaction(post(patient("p5"))),
    ]
    answers = run_transactions(services, CONTEXT, bundles)
    assert [[e["response"]["status"] for e in a["entry"]] for a in answers] == [
        ["201 Created"],
        ["201 Created", "201 Created"],
    ]
    assert values(services) == ["p0", "p1", "p2", "p3"]
    assert stored(services) == {"resources": 4, "versions": 4, "claims": 4, "names": 4}
    audited = sorted(r.res_ids[0] for r in recorder.records if r.interaction == "create")
    written = [e["response"]["location"].split("/")[1] for a in answers for e in a["entry"]]
    assert audited == sorted(written), "the failed Bundle's writes are not audited"


def test_run_transactions_stops_before_a_bundle_that_is_invalid_or_claims_a_taken_identifier(
    services: Services,
) -> None:
    invalid = transaction(post({"resourceType": "Patient", "gender": "unknown-gender"}))
    assert len(run_transactions(services, CONTEXT, [transaction(post(patient("q1"))), invalid])) == 1
    taken = transaction(post(patient("q1")))  # a plain create of an identifier another Patient holds
    answers = run_transactions(services, CONTEXT, [transaction(post(patient("q2"))), taken])
    assert len(answers) == 1
    assert values(services) == ["q1", "q2"]


def test_a_bundle_touching_what_an_earlier_one_of_the_group_writes_stops_it(services: Services) -> None:
    """It was built on what was stored before that write: it is left to be built again and run alone."""
    p0 = services.write_path.run(CONTEXT, lambda uow: services.write_path.create(uow, patient("p0"))).stored
    renamed = {
        "resource": patient("p0", "Renamed") | {"id": p0.res_id},
        "request": {"method": "PUT", "url": f"Patient/{p0.res_id}"},
    }
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": f"Patient/{p0.res_id}/_history/1"},
    }
    r1 = f"identifier={SYSTEM}|r1"
    touching = {
        "the same conditional create": post(patient("r1"), r1),
        "a reference to what it updates": post(observation),
        "an update of what it updates": renamed,
    }
    for n, (case, entry) in enumerate(touching.items()):
        bundles = [
            transaction(post(patient("r1"), r1), renamed),
            transaction(post(patient(f"u{n}"))),  # touches neither: written
            transaction(entry),
            transaction(post(patient(f"x{n}"))),  # after the one that stops the group
        ]
        assert len(run_transactions(services, CONTEXT, bundles)) == 2, case
    assert values(services) == ["p0", "r1", "u0", "u1", "u2"]


def test_a_conflict_that_outlasts_the_retries_stores_nothing_and_answers_none(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adapters then run each record by itself instead of losing the whole chunk."""

    def conflicting(self: UnitOfWork, keys: Any) -> None:
        raise Conflict("a concurrent writer")

    monkeypatch.setattr(UnitOfWork, "read_ahead_for_write", conflicting)
    assert run_transactions(services, CONTEXT, [transaction(post(patient("v1")))]) == []
    assert values(services) == []


def test_a_write_whose_audit_records_cannot_be_stored_is_not_committed(services: Services) -> None:
    """A write's AuditEvents commit in its own transaction: when they cannot be stored, nothing is."""

    class Refusing(LogAudit):
        def store(self, connection: Connection, records: list[AccessRecord]) -> None:
            raise FhirError(503, [Issue("error", "transient", "the audit log cannot take the records")])

    notified: list[Any] = []
    services.hooks.audit = Refusing()
    services.hooks.notify.changed = notified.extend  # type: ignore[method-assign,assignment]
    with pytest.raises(FhirError):
        services.write_path.run(CONTEXT, lambda uow: services.write_path.create(uow, patient("w1")))
    assert values(services) == []
    assert notified == []


def test_identifiers_claimed_in_the_transaction_are_found_without_writing_the_held_rows(
    services: Services,
) -> None:
    def work(uow: UnitOfWork) -> list[str]:
        created = services.write_path.create(uow, patient("s1")).stored
        found = uow.repository.held_by([("Patient", SYSTEM, "s1"), ("Patient", SYSTEM, "none")])
        assert pending.held(uow.connection), "the held rows are still held"
        return [created.res_id, *(s.res_id for s in found.values())]

    created, *found = services.write_path.run(CONTEXT, work)
    assert found == [created]
