"""A reaction acts only on a write the gateway set up for the client that made it: the confirm-prescriber
Task the order adapter made, completed by its owner, for requests still unconfirmed, naming one of the
owner's own PractitionerRoles; a handover Task the HL7 v2 adapter made, answered by its owner. A client
cannot make such a Task itself, nor re-point one, to get the gateway to write for it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.services import Services
from gateway.workflow import return_reports
from gateway.workflow.orders import TAGS, TASK_CODES
from tests.api.helpers import HSA, patient
from tests.security.conftest import bearer, organisation_policy, register
from tests.security.test_organisation_policy import ref

ALL = "system/*.cruds"
ORDER = "urn:example:ordernummer"
PATCH = {"Content-Type": "application/json-patch+json"}
UNCONFIRMED = {"system": TAGS, "code": "unconfirmed-prescriber"}


class Orders:
    """Organisation A's order (DeviceRequest, unconfirmed) with the confirm Task the order adapter makes
    for it, A's handover Task from the hospital, and organisation B with a role of its own."""

    def __init__(self, services: Services, api: TestClient) -> None:
        self.api = api
        region = register(services, ALL, org="SE-REGION")
        organisation_policy(services).region_clients = frozenset({region.client_id})
        self.region = bearer(region.token(api, ALL))
        self.a = bearer(register(services, ALL, org="SE-A").token(api, ALL))
        self.b = bearer(register(services, ALL, org="SE-B").token(api, ALL))
        self.c = bearer(register(services, ALL, org="SE-C").token(api, ALL))
        for resource in self.resources():
            self.put(resource, self.region)

    def put(self, resource: dict[str, Any], headers: dict[str, str]) -> int:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        status: int = self.api.put(url, json=resource, headers=headers).status_code
        return status

    def get(self, target: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.api.get(f"/fhir/{target}", headers=headers or self.region)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def resources(self) -> list[dict[str, Any]]:
        return [
            {"resourceType": "Organization", "id": "orgA", "identifier": [{"system": HSA, "value": "SE-A"}]},
            {"resourceType": "Organization", "id": "orgB", "identifier": [{"system": HSA, "value": "SE-B"}]},
            {"resourceType": "Organization", "id": "orgC", "identifier": [{"system": HSA, "value": "SE-C"}]},
            {"resourceType": "PractitionerRole", "id": "ordererA", "organization": ref("Organization/orgA")},
            {"resourceType": "PractitionerRole", "id": "lakareA", "organization": ref("Organization/orgA")},
            {"resourceType": "PractitionerRole", "id": "roleB", "organization": ref("Organization/orgB")},
            patient("191212121212", id="pa"),
            {
                "resourceType": "DeviceRequest",
                "id": "drA",
                "meta": {"tag": [UNCONFIRMED]},
                "groupIdentifier": {"system": ORDER, "value": "4711"},
                "status": "active",
                "intent": "order",
                "codeCodeableConcept": {"text": "Rollator"},
                "subject": ref("Patient/pa"),
                "requester": ref("PractitionerRole/ordererA"),
            },
            {
                "resourceType": "Task",
                "id": "bp-4711-confirm",
                "groupIdentifier": {"system": ORDER, "value": "4711"},
                "status": "requested",
                "intent": "order",
                "code": {"coding": [{"system": TASK_CODES, "code": "confirm-prescriber"}]},
                "focus": ref("DeviceRequest/drA"),
                "basedOn": [ref("DeviceRequest/drA")],
                "for": ref("Patient/pa"),
                "owner": ref("Organization/orgA"),
            },
            {
                "resourceType": "Task",
                "id": "handoverA",
                "status": "requested",
                "intent": "order",
                "code": {"coding": [{"system": return_reports.TASK_SYSTEM, "code": "handover"}]},
                "for": ref("Patient/pa"),
                "requester": ref("Organization/orgC"),
                "owner": ref("Organization/orgA"),
                "input": [{"type": {"text": "ordination"}, "valueReference": ref("DeviceRequest/drA")}],
            },
        ]

    def complete(self, task_id: str, role: str, headers: dict[str, str]) -> int:
        completion = [
            {"op": "replace", "path": "/status", "value": "completed"},
            {
                "op": "add",
                "path": "/output",
                "value": [{"type": {"text": "förskrivare"}, "valueReference": ref(role)}],
            },
        ]
        response = self.api.patch(f"/fhir/Task/{task_id}", json=completion, headers={**headers, **PATCH})
        status: int = response.status_code
        return status

    def reports(self) -> list[dict[str, Any]]:
        bundle = self.get("Communication?based-on=DeviceRequest/drA")
        return [entry["resource"] for entry in bundle.get("entry", [])]

    def confirmations(self) -> list[dict[str, Any]]:
        bundle = self.get("Provenance?target=DeviceRequest/drA")
        return [entry["resource"] for entry in bundle.get("entry", [])]


@pytest.fixture
def orders(secure_services: Services, secure_client: TestClient) -> Orders:
    """Auth and the organisation policy (its default) on."""
    return Orders(secure_services, secure_client)


def forged_confirmation(**extra: Any) -> dict[str, Any]:
    """B's own confirm-prescriber Task, pointing at A's order, naming B's role as the prescriber."""
    return {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": "confirm-prescriber"}]},
        "groupIdentifier": {"system": ORDER, "value": "4711"},
        "focus": ref("DeviceRequest/drA"),
        "requester": ref("Organization/orgB"),
        "owner": ref("Organization/orgB"),
        "output": [{"type": {"text": "förskrivare"}, "valueReference": ref("PractitionerRole/roleB")}],
        **extra,
    }


def test_a_client_cannot_confirm_itself_as_prescriber_of_another_organisations_order(orders: Orders) -> None:
    assert orders.api.get("/fhir/Patient/pa", headers=orders.b).status_code == 404
    response = orders.api.post("/fhir/Task", json=forged_confirmation(), headers=orders.b)
    assert response.status_code == 403, response.text
    request = orders.get("DeviceRequest/drA")
    assert request["requester"] == ref("PractitionerRole/ordererA")
    assert request["meta"]["tag"] == [UNCONFIRMED]
    assert orders.confirmations() == []
    assert orders.api.get("/fhir/Patient/pa", headers=orders.b).status_code == 404


def test_a_forged_confirmation_is_refused_by_update_as_create_and_in_a_transaction(orders: Orders) -> None:
    assert orders.put({**forged_confirmation(), "id": "forged"}, orders.b) == 404  # no create by PUT
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": forged_confirmation(), "request": {"method": "POST", "url": "Task"}}],
    }
    assert orders.api.post("/fhir", json=bundle, headers=orders.b).status_code == 403
    assert orders.get("DeviceRequest/drA")["requester"] == ref("PractitionerRole/ordererA")


def test_a_client_cannot_make_a_handover_task_to_get_a_return_report(orders: Orders) -> None:
    handover = {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": {"coding": [{"system": return_reports.TASK_SYSTEM, "code": "handover"}]},
        "requester": ref("Organization/orgB"),
        "owner": ref("Organization/orgB"),
        "input": [{"type": {"text": "ordination"}, "valueReference": ref("DeviceRequest/drA")}],
    }
    assert orders.api.post("/fhir/Task", json=handover, headers=orders.b).status_code == 403
    assert orders.reports() == []


def test_the_ordering_unit_confirms_its_prescriber(orders: Orders) -> None:
    assert orders.complete("bp-4711-confirm", "PractitionerRole/lakareA", orders.a) == 200
    request = orders.get("DeviceRequest/drA")
    assert request["requester"] == ref("PractitionerRole/lakareA")
    assert "tag" not in request["meta"]
    [provenance] = orders.confirmations()
    assert provenance["entity"][0]["what"]["reference"].startswith("Task/bp-4711-confirm/")


def test_a_prescriber_of_another_organisation_is_refused(orders: Orders) -> None:
    assert orders.complete("bp-4711-confirm", "PractitionerRole/roleB", orders.a) == 422
    assert orders.get("Task/bp-4711-confirm")["status"] == "requested"
    assert orders.get("DeviceRequest/drA")["requester"] == ref("PractitionerRole/ordererA")


def test_a_request_no_longer_unconfirmed_is_left_alone(orders: Orders) -> None:
    request = orders.get("DeviceRequest/drA")
    named = {**request, "meta": {}, "requester": ref("PractitionerRole/ordererA")}
    assert orders.put(named, orders.region) == 200
    assert orders.complete("bp-4711-confirm", "PractitionerRole/lakareA", orders.a) == 200
    assert orders.get("DeviceRequest/drA")["requester"] == ref("PractitionerRole/ordererA")
    assert orders.confirmations() == []


def test_only_the_owner_answers_for_the_gateway(orders: Orders) -> None:
    """C requests the handover Task A owns: it may change the Task's status, but its answer is not the
    owner's, so no return report is made; nor may it re-point the gateway's Task at other requests."""
    task = orders.get("Task/handoverA", orders.c)
    moved = {**task, "input": [{"type": {"text": "annan"}, "valueReference": ref("DeviceRequest/other")}]}
    refused = orders.api.put("/fhir/Task/handoverA", json=moved, headers=orders.c)
    assert refused.status_code == 403 and "input" in refused.text
    assert orders.api.delete("/fhir/Task/handoverA", headers=orders.c).status_code == 403
    assert orders.complete("handoverA", "PractitionerRole/roleB", orders.c) == 200
    assert orders.reports() == []


def test_the_owner_of_a_handover_gets_its_return_report(orders: Orders) -> None:
    rejection = [
        {"op": "replace", "path": "/status", "value": "rejected"},
        {"op": "add", "path": "/statusReason", "value": {"text": "Ingen hemtjänst"}},
    ]
    response = orders.api.patch("/fhir/Task/handoverA", json=rejection, headers={**orders.a, **PATCH})
    assert response.status_code == 200, response.text
    [report] = orders.reports()
    assert report["recipient"] == [ref("Organization/orgA")]  # the prescriber is still unconfirmed


def test_a_return_report_reaches_only_prescribers_of_requests_its_writer_may_see(orders: Orders) -> None:
    """B cares for the patient too (a Task of its own for her), so it reads her DeviceRequests (the device
    list's rule), but not A's request for a patient it does not care for: a report B bases on that request
    is refused exactly as one based on a request that does not exist, so B can neither message A's
    prescribers through the gateway nor learn that the request exists."""
    visit = {
        "resourceType": "Task",
        "id": "visitB",
        "status": "requested",
        "intent": "order",
        "code": {"text": "hembesök"},
        "for": ref("Patient/pa"),
        "owner": ref("Organization/orgB"),
    }
    assert orders.put(visit, orders.region) == 201
    assert orders.api.get("/fhir/DeviceRequest/drA", headers=orders.b).status_code == 200
    assert orders.put({"resourceType": "Patient", "id": "pz"}, orders.region) == 201
    other = {
        "resourceType": "DeviceRequest",
        "id": "drZ",
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"text": "Rollator"},
        "subject": ref("Patient/pz"),
        "requester": ref("PractitionerRole/lakareA"),
    }
    assert orders.put(other, orders.region) == 201
    assert orders.api.get("/fhir/DeviceRequest/drZ", headers=orders.b).status_code == 404
    report = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": return_reports.CATEGORY, "code": "returrapport"}]}],
        "subject": ref("Patient/pa"),
        "basedOn": [ref("DeviceRequest/drZ")],
        "payload": [{"contentString": "Hjälpmedlet fungerar inte."}],
    }
    hidden = orders.api.post("/fhir/Communication", json=report, headers=orders.b)
    unknown = {**report, "basedOn": [ref("DeviceRequest/finns-inte")]}
    absent = orders.api.post("/fhir/Communication", json=unknown, headers=orders.b)
    assert hidden.status_code == absent.status_code == 422, hidden.text
    [issue] = hidden.json()["issue"]
    assert issue["code"] == "not-found" and issue["expression"] == ["Communication.basedOn[0]"]
    assert hidden.json() == {
        **absent.json(),
        "issue": [{**absent.json()["issue"][0], "diagnostics": issue["diagnostics"]}],
    }
    assert issue["diagnostics"].replace("drZ", "finns-inte") == absent.json()["issue"][0]["diagnostics"]
    assert orders.reports() == []
