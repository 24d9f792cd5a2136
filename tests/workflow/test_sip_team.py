"""Units acting for themselves on a SIP (issue 16): the primary-care unit called to the SIP and the units of
its care team (which the HL7 v2 adapter wrote) work on the plan, none of them region-wide: the called
unit records the consent and activates it; a team member adds a note; neither changes who the plan is
for or by; an unrelated unit learns nothing of it. Auth on, each unit its own client."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.adapters.hl7v2.ack import read_ack
from gateway.security.scopes import ADAPTER_HL7V2
from gateway.services import Services
from tests.adapters.test_hl7v2_messages import KOMMUN, VC, adt
from tests.security.conftest import bearer, register

ALL = "system/*.cruds"
HOSPITAL = "SE2321000016-KS01"
PATCH = {"Content-Type": "application/json-patch+json"}


def _found(client: TestClient, query: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def _patch(client: TestClient, target: str, operations: list[dict[str, Any]], headers: dict[str, str]) -> Any:
    return client.patch(f"/fhir/{target}", json=operations, headers={**headers, **PATCH})


def test_the_called_unit_and_the_care_team_work_on_the_sip(
    secure_services: Services, secure_client: TestClient
) -> None:
    c = secure_client
    hospital = register(secure_services, ADAPTER_HL7V2, org=HOSPITAL, sources=(f"hl7v2:{HOSPITAL}",))
    feed = {**bearer(hospital.token(c, ADAPTER_HL7V2)), "Content-Type": "application/hl7-v2"}
    for message in (adt("A01", "M1"), adt("A08", "M2", sent="20261125100000", ready="20261125093000")):
        assert read_ack(c.post("/adapters/hl7v2", content=message, headers=feed).content)[0] == "AA"
    primary = bearer(register(secure_services, ALL, org=VC).token(c, ALL))
    kommun = bearer(register(secure_services, ALL, org=KOMMUN).token(c, ALL))
    other = bearer(register(secure_services, ALL, org="SE2321000016-ANNAN").token(c, ALL))
    [call] = _found(c, "Task?code=kalla-till-sip", primary)
    plan_ref = call["focus"]["reference"]
    plan = c.get(f"/fhir/{plan_ref}", headers=primary).json()
    assert plan["status"] == "draft"
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": plan["subject"],
        "provision": {"data": [{"meaning": "related", "reference": {"reference": plan_ref}}]},
    }
    recorded = c.post("/fhir/Consent", json=consent, headers=primary)
    assert recorded.status_code == 201, recorded.text
    active = _patch(c, plan_ref, [{"op": "replace", "path": "/status", "value": "active"}], primary)
    assert active.status_code == 200, active.text
    author = _patch(c, plan_ref, [{"op": "replace", "path": "/author", "value": {"display": "x"}}], primary)
    assert author.status_code == 403 and "author" in author.text
    note = [{"op": "add", "path": "/note", "value": [{"text": "Hemtjänsten deltar i SIP-mötet."}]}]
    assert _patch(c, plan_ref, note, kommun).status_code == 200
    subject = _patch(c, plan_ref, [{"op": "replace", "path": "/subject", "value": {"display": "x"}}], kommun)
    assert subject.status_code == 403 and "subject" in subject.text
    hidden = _patch(c, plan_ref, [{"op": "replace", "path": "/status", "value": "completed"}], other)
    unknown = _patch(
        c, "CarePlan/finns-inte", [{"op": "replace", "path": "/status", "value": "completed"}], other
    )
    assert hidden.status_code == unknown.status_code == 404
