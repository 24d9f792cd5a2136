"""The index rows a write stores are exactly those of the resource as stored, however the write got
there: a transaction extracts a resource's index rows before its unit of work, but the references'
after rewriting them (`Entry.indexed`), and anew when a rule or a mask changed the resource. Every
adapter's golden inputs and the order → return report workflow are written, then every stored
resource's index rows are compared with a fresh extraction."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.fhir.transaction import run_transaction
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.extract import IndexRows
from gateway.services import Services
from gateway.store.repository import Repository
from gateway.store.tables import (
    DateIndex,
    NumberIndex,
    ReferenceIndex,
    Resource,
    StringIndex,
    TokenIndex,
    UriIndex,
)

GOLDEN = Path(__file__).parents[1] / "golden"
CONTEXT = RequestContext(base_url="http://test/fhir")
TABLES = {
    "token": TokenIndex,
    "string": StringIndex,
    "reference": ReferenceIndex,
    "date": DateIndex,
    "number": NumberIndex,
    "uri": UriIndex,
}


def _stored_rows(services: Services) -> dict[int, dict[str, Counter[tuple[Any, ...]]]]:
    """The index rows in the database, by resource row and table, without their own keys."""
    found: dict[int, dict[str, Counter[tuple[Any, ...]]]] = {}
    with services.engine.connect() as connection:
        for name, table in TABLES.items():
            columns = [c for c in table.__table__.columns if c.name not in ("pk", "rid")]
            for row in connection.execute(select(table.rid, *columns)):  # type: ignore[attr-defined]
                found.setdefault(row[0], {}).setdefault(name, Counter())[_normal(tuple(row[1:]))] += 1
    return found


def _normal(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Dates as the database gives them back (no time zone on SQLite) for comparison."""
    return tuple(v.replace(tzinfo=None) if hasattr(v, "tzinfo") and v.tzinfo else v for v in values)


def _expected(rows: IndexRows) -> dict[str, Counter[tuple[Any, ...]]]:
    expected: dict[str, Counter[tuple[Any, ...]]] = {}
    for name, table in TABLES.items():
        columns = [c.name for c in table.__table__.columns if c.name not in ("pk", "rid")]
        for row in getattr(rows, name):
            expected.setdefault(name, Counter())[_normal(tuple(row[c] for c in columns))] += 1
    return expected


def test_every_stored_resource_has_the_index_rows_of_its_content(
    client: TestClient, services: Services
) -> None:
    for path in sorted((GOLDEN / "bestallningsportalen").glob("*.order.json")):
        response = client.post("/adapters/bestallningsportalen/orders", content=path.read_bytes())
        assert response.status_code == 200, response.text
    for path in sorted((GOLDEN / "device_register").glob("*.csv")):
        body = path.read_bytes()
        response = client.post(
            "/adapters/device-register/records", content=body, headers={"Content-Type": "text/csv"}
        )
        assert response.status_code == 200, response.text
    for path in sorted((GOLDEN / "hl7v2").glob("*.hl7")):
        client.post(
            "/adapters/hl7v2", content=path.read_bytes(), headers={"Content-Type": "application/hl7-v2"}
        )
    # A rule completes a resource (a return report gets its recipients), a transaction rewrites references.
    confirm = client.get("/fhir/Task?code=confirm-prescriber").json()["entry"][0]["resource"]
    report = {
        "resourceType": "Communication",
        "status": "completed",
        "subject": confirm["for"],
        "basedOn": [confirm["focus"]],
        "payload": [{"contentString": "Levererad"}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:7e4c0b1e-0000-4000-8000-000000000001", "resource": report,
                   "request": {"method": "POST", "url": "Communication"}}],
    }  # fmt: skip
    assert client.post("/fhir", json=bundle).status_code == 200

    stored = _stored_rows(services)
    extractor = services.write_path.extractor
    checked = Counter[str]()
    with services.engine.connect() as connection:
        rids = [row[0] for row in connection.execute(select(Resource.rid).where(Resource.deleted.is_(False)))]
        for current in Repository(connection).current_many(rids):
            if current.res_type == "AuditEvent":
                continue
            assert stored.get(current.rid, {}) == _expected(extractor.rows(current.json())), current.res_type
            checked[current.res_type] += 1
    assert {"DeviceRequest", "Device", "Encounter", "Task", "Communication", "Provenance"} <= set(checked)


def test_a_resource_a_rule_completes_is_indexed_as_completed(services: Services) -> None:
    def renamed(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
        if resource.get("resourceType") != "Patient":
            return resource
        return {**resource, "name": [{"family": "Completed"}]}

    services.hooks.rules.append(renamed)
    patient = {"resourceType": "Patient", "name": [{"family": "Given"}]}
    for request in ({"method": "POST", "url": "Patient"}, {"method": "PUT", "url": "Patient/ruled"}):
        entry = {"resource": patient if request["method"] == "POST" else {**patient, "id": "ruled"}}
        run_transaction(services, CONTEXT, {"resourceType": "Bundle", "type": "transaction",
                                            "entry": [{**entry, "request": request}]})  # fmt: skip

    def count(family: str) -> int:
        return services.write_path.run(
            CONTEXT,
            lambda uow: len(services.searcher.match(uow.connection, "Patient", f"family={family}", 10)),
            write=False,
        )

    assert (count("Completed"), count("Given")) == (2, 0)
