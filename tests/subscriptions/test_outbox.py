"""The transactional outbox: one row per stored version, in the write's own transaction."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.services import Services
from gateway.subscriptions.outbox import OUTBOX
from tests.api.helpers import patient
from tests.api.test_transaction import entry, submit


def outbox(services: Services) -> list[tuple[str, str, int, str]]:
    with services.engine.connect() as connection:
        rows = connection.execute(
            select(OUTBOX.c.res_type, OUTBOX.c.res_id, OUTBOX.c.version_id, OUTBOX.c.method).order_by(
                OUTBOX.c.id
            )
        )
        return [(str(t), str(i), int(v), str(m)) for t, i, v, m in rows]


def test_each_stored_version_has_one_outbox_row(services: Services, client: TestClient) -> None:
    assert client.put("/fhir/Patient/p1", json=patient(id="p1")).status_code == 201
    assert client.put("/fhir/Patient/p1", json=patient(id="p1", family="Ny")).status_code == 200
    assert client.put("/fhir/Patient/p1", json=patient(id="p1", family="Ny")).status_code == 200  # unchanged
    assert client.delete("/fhir/Patient/p1").status_code in (200, 204)
    assert outbox(services) == [
        ("Patient", "p1", 1, "PUT"),
        ("Patient", "p1", 2, "PUT"),
        ("Patient", "p1", 3, "DELETE"),
    ]


def test_a_rolled_back_write_leaves_no_outbox_row(services: Services, client: TestClient) -> None:
    response = submit(
        client,
        entry("POST", "Patient", patient("201212121212")),
        entry("GET", "Patient/nope"),
    )
    assert response.status_code == 404
    assert outbox(services) == []
