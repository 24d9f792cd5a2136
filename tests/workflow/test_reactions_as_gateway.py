"""Workflow reactions write as the gateway, on behalf of the client whose write triggered them: the
client needs no scope for, and no organisation rule about, what the gateway writes in answer; the
AuditEvents and Provenance of those writes name both."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.hooks import GATEWAY_CLIENT
from gateway.services import Services
from gateway.workflow import return_reports
from gateway.workflow.orders import CLIENT_SYSTEM, TAGS, TASK_CODES
from tests.api.helpers import HSA, create, patient
from tests.security.conftest import bearer, register

KOMMUN = "SE2120000000-KOMMUN"
PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def secured(audited_services: Services) -> Services:
    return audited_services


@pytest.fixture
def api(audited_client: TestClient) -> TestClient:
    return audited_client


def _handover(api: TestClient, region: dict[str, str]) -> dict[str, Any]:
    """A municipality, a patient, a prescribed device and a handover Task the municipality owns."""
    kommun = {
        "resourceType": "Organization",
        "id": "kommun-1",
        "identifier": [{"system": HSA, "value": KOMMUN}],
    }
    assert api.put("/fhir/Organization/kommun-1", json=kommun, headers=region).status_code == 201
    person = create(api, patient(), **region)
    request = create(
        api,
        {
            "resourceType": "DeviceRequest",
            "status": "active",
            "intent": "order",
            "codeCodeableConcept": {"text": "Syrgaskoncentrator"},
            "subject": {"reference": f"Patient/{person['id']}"},
            "requester": {"reference": "PractitionerRole/lakare-1"},
        },
        **region,
    )
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": return_reports.TASK_SYSTEM, "code": "handover"}]},
        "for": {"reference": f"Patient/{person['id']}"},
        "owner": {"reference": "Organization/kommun-1"},
        "input": [
            {
                "type": {"text": "ordination"},
                "valueReference": {"reference": f"DeviceRequest/{request['id']}"},
            }
        ],
    }
    return create(api, task, **region)


def _audit(secured: Services, api: TestClient, query: str) -> list[dict[str, Any]]:
    assert secured.audit is not None
    secured.audit.flush()
    auditor = register(secured, "gateway/audit.read", region=True)
    token = auditor.token(api, "gateway/audit.read")
    response = api.get(f"/fhir/AuditEvent?{query}&_count=100", headers=bearer(token))
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def _clients(event: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """The client-id agents of an AuditEvent: client id → (participation code, requestor)."""
    return {
        agent["who"]["identifier"]["value"]: (agent["type"]["coding"][0]["code"], agent["requestor"])
        for agent in event["agent"]
        if agent["who"]["identifier"]["system"] == CLIENT_SYSTEM
    }


def test_a_rejection_without_communication_scope_gets_its_return_report(
    secured: Services, api: TestClient
) -> None:
    region = bearer(register(secured, "system/*.cruds", region=True).token(api, "system/*.cruds"))
    handover = _handover(api, region)
    kommun = register(secured, "system/Task.rus", org=KOMMUN)
    token = bearer(kommun.token(api, "system/Task.rus"))
    rejection = [
        {"op": "replace", "path": "/status", "value": "rejected"},
        {"op": "add", "path": "/statusReason", "value": {"text": "Ingen hemtjänst beviljad"}},
    ]
    response = api.patch(f"/fhir/Task/{handover['id']}", json=rejection, headers={**token, **PATCH})
    assert response.status_code == 200, response.text

    found = api.get(f"/fhir/Communication?based-on=Task/{handover['id']}", headers=region).json()
    [report] = [entry["resource"] for entry in found.get("entry", [])]
    assert return_reports.is_return_report(report)
    assert report["recipient"] == [{"reference": "PractitionerRole/lakare-1"}]

    [created] = _audit(secured, api, f"entity=Communication/{report['id']}&subtype=create")
    assert created["subtype"][0]["code"] == "create" and created["outcome"] == "0"
    assert _clients(created) == {kommun.client_id: ("IRCP", True), GATEWAY_CLIENT: ("PRF", False)}
    assert {"system": HSA, "value": KOMMUN} in [agent["who"]["identifier"] for agent in created["agent"]]
    [patched] = _audit(secured, api, f"entity=Task/{handover['id']}&subtype=patch")
    assert _clients(patched) == {kommun.client_id: ("IRCP", True)}


def test_the_client_still_needs_its_own_scopes_for_its_own_write(secured: Services, api: TestClient) -> None:
    region = bearer(register(secured, "system/*.cruds", region=True).token(api, "system/*.cruds"))
    handover = _handover(api, region)
    reader = register(secured, "system/Task.rs", org=KOMMUN)
    token = bearer(reader.token(api, "system/Task.rs"))
    rejection = [{"op": "replace", "path": "/status", "value": "rejected"}]
    response = api.patch(f"/fhir/Task/{handover['id']}", json=rejection, headers={**token, **PATCH})
    assert response.status_code == 403
    assert api.get("/fhir/Communication", headers=region).json().get("total", 0) == 0


def test_a_confirmed_prescribers_provenance_names_the_gateway_and_the_client(client: TestClient) -> None:
    person = create(client, patient())
    unit = create(client, {"resourceType": "Organization", "name": "Beställande enhet"})
    lakare = {"resourceType": "PractitionerRole", "organization": {"reference": f"Organization/{unit['id']}"}}
    assert client.put("/fhir/PractitionerRole/lakare-1", json={**lakare, "id": "lakare-1"}).status_code == 201
    request = create(
        client,
        {
            "resourceType": "DeviceRequest",
            "meta": {"tag": [{"system": TAGS, "code": "unconfirmed-prescriber"}]},
            "status": "active",
            "intent": "order",
            "codeCodeableConcept": {"text": "Rollator"},
            "subject": {"reference": f"Patient/{person['id']}"},
            "requester": {"reference": "PractitionerRole/bestallare-1"},
        },
    )
    task = create(
        client,
        {
            "resourceType": "Task",
            "status": "completed",
            "intent": "order",
            "code": {"coding": [{"system": TASK_CODES, "code": "confirm-prescriber"}]},
            "focus": {"reference": f"DeviceRequest/{request['id']}"},
            "for": {"reference": f"Patient/{person['id']}"},
            "owner": {"reference": f"Organization/{unit['id']}"},
            "output": [
                {
                    "type": {"text": "förskrivare"},
                    "valueReference": {"reference": "PractitionerRole/lakare-1"},
                }
            ],
        },
    )
    found = client.get(f"/fhir/Provenance?target=DeviceRequest/{request['id']}").json()
    [provenance] = [entry["resource"] for entry in found["entry"]]
    assert provenance["entity"][0]["what"]["reference"].startswith(f"Task/{task['id']}/")
    [performer] = [a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "performer"]
    assert performer["who"]["identifier"] == {"system": CLIENT_SYSTEM, "value": GATEWAY_CLIENT}
    assert performer["onBehalfOf"]["identifier"] == {"system": CLIENT_SYSTEM, "value": "anonymous"}


def test_the_owner_adds_notes_to_its_task_but_changes_none(secured: Services, api: TestClient) -> None:
    """The municipality that owns a handover may add a note of its own (dated by the gateway), but not
    change or remove a note already there, nor write one in another organisation's name."""
    region = bearer(register(secured, "system/*.cruds", region=True).token(api, "system/*.cruds"))
    handover = _handover(api, region)
    token = {
        **bearer(register(secured, "system/Task.rus", org=KOMMUN).token(api, "system/Task.rus")),
        **PATCH,
    }
    own = {
        "authorReference": {"reference": "Organization/kommun-1"},
        "text": "Hemtjänsten har fått hjälpmedlet.",
    }
    added = api.patch(
        f"/fhir/Task/{handover['id']}", json=[{"op": "add", "path": "/note", "value": [own]}], headers=token
    )
    assert added.status_code == 200, added.text
    [note] = added.json()["note"]
    assert note["text"] == own["text"] and note["time"]
    changed = [{"op": "replace", "path": "/note/0/text", "value": "Annat"}]
    assert api.patch(f"/fhir/Task/{handover['id']}", json=changed, headers=token).status_code == 403
    removed = [{"op": "remove", "path": "/note/0"}]
    assert api.patch(f"/fhir/Task/{handover['id']}", json=removed, headers=token).status_code == 403
    other = {"authorReference": {"reference": "Organization/annan"}, "text": "I någon annans namn"}
    refused = api.patch(
        f"/fhir/Task/{handover['id']}", json=[{"op": "add", "path": "/note/-", "value": other}], headers=token
    )
    assert refused.status_code == 403 and "note" in refused.text
