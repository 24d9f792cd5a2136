"""The benchmark's bulk seeder (bench/seed.py) writes straight to the tables: its care relations must be
those the write path keeps, or the municipality figures of docs/performance.md would measure a client
that sees nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from bench.seed import ORGANIZATIONS, seed
from gateway.search.dates import utc_now
from gateway.services import Services
from gateway.store.relations import CR
from gateway.store.repository import R, Repository
from tests.security.conftest import bearer, register


def relations(services: Services) -> set[tuple[object, ...]]:
    with services.engine.connect() as connection:
        rows = connection.execute(
            select(CR.c.rid, CR.c.actor_type, CR.c.actor_id, CR.c.patient_id, CR.c.basis, CR.c.until)
        ).all()
    return {(*row[:5], row[5] is None) for row in rows}


def test_seeded_care_relations_are_the_write_paths(secure_services: Services) -> None:
    seed(secure_services, ORGANIZATIONS + 4 * 60)
    seeded = relations(secure_services)
    assert {basis for *_, basis, _ in seeded} == {"written"}
    assert any(ended for *_, ended in seeded) and not all(ended for *_, ended in seeded)
    with secure_services.engine.begin() as connection:
        connection.execute(CR.delete())
        rids = list(connection.execute(select(R.c.rid).order_by(R.c.rid)).scalars())
        now = utc_now()
        for stored in Repository(connection).current_many(rids):
            secure_services.write_path.reindex(connection, stored, now)
    assert relations(secure_services) == seeded


def test_a_municipality_sees_the_patients_the_seed_relates_it_to(
    secure_services: Services, secure_client: TestClient
) -> None:
    seed(secure_services, ORGANIZATIONS + 4 * 400)
    mine = {str(row[3]) for row in relations(secure_services) if row[1:3] == ("Organization", "org-7")}
    assert mine
    municipality = register(secure_services, "system/*.rs", org="SE2321000016-0007")
    headers = bearer(municipality.token(secure_client, "system/*.rs"))
    found = secure_client.get("/fhir/Patient?_count=1000&_elements=id", headers=headers).json()
    assert {entry["resource"]["id"] for entry in found.get("entry", [])} == mine
    other = next(f"pat-{n}" for n in range(400) if f"pat-{n}" not in mine)
    assert secure_client.get(f"/fhir/Patient/{other}", headers=headers).status_code == 404
    unrelated = register(secure_services, "system/*.rs", org="SE2321000016-9999")
    headers = bearer(unrelated.token(secure_client, "system/*.rs"))
    assert secure_client.get(f"/fhir/Patient/{sorted(mine)[0]}", headers=headers).status_code == 404
