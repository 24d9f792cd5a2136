"""SMART scopes on every interaction: 403 for a missing scope, invisible resources filtered from
includes, history and bundles, adapter and AuditEvent scopes."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from fastapi.testclient import TestClient

from gateway.hooks import Principal
from gateway.security import requires
from gateway.services import Services
from tests.api.helpers import patient, task
from tests.security.conftest import RegisteredClient, bearer, register


def _seed(client: TestClient, full: RegisteredClient) -> tuple[str, str]:
    headers = bearer(full.token(client, "system/*.cruds"))
    pat = client.put("/fhir/Patient/p1", json=patient(id="p1"), headers=headers)
    assert pat.status_code == 201, pat.text
    tsk = client.put("/fhir/Task/t1", json=task("p1", id="t1"), headers=headers)
    assert tsk.status_code == 201, tsk.text
    return "p1", "t1"


def _token(services: Services, client: TestClient, scopes: str) -> dict[str, str]:
    return bearer(register(services, scopes, region=True).token(client, scopes))


def test_each_interaction_needs_its_letter(
    secure_services: Services, secure_client: TestClient, full_client: RegisteredClient
) -> None:
    _seed(secure_client, full_client)
    read_only = _token(secure_services, secure_client, "system/Patient.r")
    assert secure_client.get("/fhir/Patient/p1", headers=read_only).status_code == 200
    assert secure_client.get("/fhir/Patient/p1/_history/1", headers=read_only).status_code == 200
    assert secure_client.get("/fhir/Patient/p1/_history", headers=read_only).status_code == 200
    assert secure_client.get("/fhir/Patient?name=x", headers=read_only).status_code == 403
    assert secure_client.post("/fhir/Patient/_search", headers=read_only).status_code == 403
    assert secure_client.post("/fhir/Patient", json=patient(), headers=read_only).status_code == 403
    assert secure_client.put("/fhir/Patient/p1", json=patient(id="p1"), headers=read_only).status_code == 403
    assert secure_client.delete("/fhir/Patient/p1", headers=read_only).status_code == 403
    other_type = secure_client.get("/fhir/Task/t1", headers=read_only)
    assert other_type.status_code == 403
    assert other_type.json()["resourceType"] == "OperationOutcome"
    assert 'error="insufficient_scope"' in other_type.headers["www-authenticate"]

    search_only = _token(secure_services, secure_client, "system/Patient.s")
    assert secure_client.get("/fhir/Patient", headers=search_only).status_code == 200
    assert secure_client.get("/fhir/Patient/_history", headers=search_only).status_code == 200
    assert secure_client.get("/fhir/Patient/p1", headers=search_only).status_code == 403

    writer = _token(secure_services, secure_client, "system/Patient.cu")
    assert (
        secure_client.post("/fhir/Patient", json=patient(pnr="190101010106"), headers=writer).status_code
        == 201
    )
    changed = patient(id="p1", family="Ny")
    assert secure_client.put("/fhir/Patient/p1", json=changed, headers=writer).status_code == 200
    assert secure_client.delete("/fhir/Patient/p1", headers=writer).status_code == 403


def test_update_as_create_needs_c(secure_services: Services, secure_client: TestClient) -> None:
    update_only = _token(secure_services, secure_client, "system/Patient.u")
    response = secure_client.put("/fhir/Patient/new", json=patient(id="new"), headers=update_only)
    assert response.status_code == 403


def test_v1_scopes_are_understood(
    secure_services: Services, secure_client: TestClient, full_client: RegisteredClient
) -> None:
    _seed(secure_client, full_client)
    reader = _token(secure_services, secure_client, "system/*.read")
    assert secure_client.get("/fhir/Task/t1", headers=reader).status_code == 200
    assert secure_client.get("/fhir/Task", headers=reader).status_code == 200
    assert secure_client.delete("/fhir/Task/t1", headers=reader).status_code == 403
    writer = _token(secure_services, secure_client, "system/Task.write")
    assert secure_client.delete("/fhir/Task/t1", headers=writer).status_code == 200


def _types(bundle: dict[str, Any]) -> list[str]:
    return sorted(
        entry["resource"]["resourceType"] for entry in bundle.get("entry", []) if "resource" in entry
    )


def test_includes_outside_the_scopes_are_left_out(
    secure_services: Services, secure_client: TestClient, full_client: RegisteredClient
) -> None:
    _seed(secure_client, full_client)
    tasks_only = _token(secure_services, secure_client, "system/Task.rs")
    bundle = secure_client.get("/fhir/Task?_include=Task:patient", headers=tasks_only).json()
    assert _types(bundle) == ["Task"]
    both = _token(secure_services, secure_client, "system/Task.rs system/Patient.rs")
    bundle = secure_client.get("/fhir/Task?_include=Task:patient", headers=both).json()
    assert _types(bundle) == ["Patient", "Task"]
    patients_only = _token(secure_services, secure_client, "system/Patient.rs")
    bundle = secure_client.get("/fhir/Patient?_revinclude=Task:patient", headers=patients_only).json()
    assert _types(bundle) == ["Patient"]


def test_transaction_entries_are_checked_one_by_one(
    secure_services: Services, secure_client: TestClient
) -> None:
    patients_only = _token(secure_services, secure_client, "system/Patient.cruds")
    entries = [
        {"fullUrl": "urn:uuid:1", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": task("x"), "request": {"method": "POST", "url": "Task"}},
    ]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = secure_client.post("/fhir", json=transaction, headers=patients_only)
    assert response.status_code == 403
    assert secure_client.get("/fhir/Patient", headers=patients_only).json().get("total", 0) == 0
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    response = secure_client.post("/fhir", json=batch, headers=patients_only)
    assert response.status_code == 200
    statuses = [entry["response"]["status"][:3] for entry in response.json()["entry"]]
    assert statuses == ["201", "403"]


def test_audit_events_need_the_audit_scope(secure_services: Services, secure_client: TestClient) -> None:
    everything = _token(secure_services, secure_client, "system/*.cruds")
    assert secure_client.get("/fhir/AuditEvent", headers=everything).status_code == 403
    auditor = _token(secure_services, secure_client, "gateway/audit.read")
    assert secure_client.get("/fhir/AuditEvent", headers=auditor).status_code == 200
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "x"}}],
        "source": {"observer": {"display": "x"}},
    }
    # the audit trail is append-only: even a client with every scope cannot write it
    assert secure_client.post("/fhir/AuditEvent", json=event, headers=everything).status_code == 405


def test_adapter_entrances_need_their_scope(secure_services: Services, secure_client: TestClient) -> None:
    everything = _token(secure_services, secure_client, "system/*.cruds")
    assert secure_client.get("/adapters/quarantine", headers=everything).status_code == 403
    assert secure_client.post("/adapters/hl7v2", content=b"MSH|", headers=everything).status_code == 403
    operator = _token(secure_services, secure_client, "gateway/adapter.quarantine")
    assert secure_client.get("/adapters/quarantine", headers=operator).status_code == 200
    assert secure_client.get("/adapters/quarantine").status_code == 401


def test_require_scope_helper_for_adapter_routes(
    secure_services: Services, secure_client: TestClient
) -> None:
    app = secure_client.app

    def handler(principal: Principal = Depends(requires("gateway/adapter.hl7v2"))) -> dict[str, str]:  # noqa: B008
        return {"client": principal.client_id}

    app.add_api_route("/probe-helper", handler, methods=["GET"])  # type: ignore[attr-defined]
    allowed = register(secure_services, "gateway/adapter.hl7v2")
    token = bearer(allowed.token(secure_client, "gateway/adapter.hl7v2"))
    assert secure_client.get("/probe-helper", headers=token).json() == {"client": allowed.client_id}
    other = _token(secure_services, secure_client, "system/Patient.r")
    assert secure_client.get("/probe-helper", headers=other).status_code == 403
