"""Search parameters are data: custom ones under profiles/ are indexed and searched like official ones."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.search.registry import Registry
from tests.api.helpers import create, ids, task

REQUIRED = {
    "Task": "status business-status owner requester patient subject focus based-on part-of code authored-on "
    "modified period identifier",
    "DeviceRequest": "patient subject requester performer status intent code authored-on encounter "
    "identifier",
    "Device": "patient type status organization manufacturer model identifier",
    "CarePlan": "patient category status date care-team encounter based-on identifier",
    "Communication": "recipient sender subject based-on category sent status identifier",
    "Provenance": "target agent recorded",
    "Encounter": "patient status date class identifier",
    "Patient": "name family given birthdate identifier",
    "Organization": "name partof identifier",
    "Practitioner": "name identifier",
    "PractitionerRole": "practitioner organization role identifier",
    "AuditEvent": "agent entity patient date type action",
    "Flag": "patient",
    "List": "patient status code",
    "ServiceRequest": "patient status code",
    "Consent": "patient status",
    "DeviceUseStatement": "patient",
}


def test_every_parameter_users_rely_on_is_served(client: TestClient) -> None:
    registry: Registry = client.app.state.services.registry  # type: ignore[attr-defined]
    missing = {
        (res_type, code)
        for res_type, codes in REQUIRED.items()
        for code in [*codes.split(), "_id", "_lastUpdated", "_tag", "_security", "_profile"]
        if registry.get(res_type, code) is None
    }
    assert not missing


def test_custom_due_parameter_finds_overdue_tasks(client: TestClient) -> None:
    late = create(client, task("p1", restriction={"period": {"end": "2026-01-10T12:00:00+01:00"}}))
    create(client, task("p1", restriction={"period": {"end": "2026-03-01"}}))
    create(client, task("p1"))
    found = client.get("/fhir/Task?due=lt2026-02-01&status=requested").json()
    assert ids(found) == [late["id"]]
    assert len(ids(client.get("/fhir/Task?due:missing=false").json())) == 2


def test_custom_parameter_is_in_the_capability_statement(client: TestClient) -> None:
    statement = client.get("/fhir/metadata").json()
    task_params = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Task")["searchParam"]
    due = next(p for p in task_params if p["name"] == "due")
    assert due["definition"] == "https://fhir.home-device-gateway.se/SearchParameter/task-due"
    assert due["type"] == "date"
