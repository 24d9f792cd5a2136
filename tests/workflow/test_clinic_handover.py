"""A handover a unit opens itself (issue 16, policy `client_handovers`): the lung clinic, related to the
patient by the order it prescribed, hands the patient over to primary care without an admission; the
gateway fills the devices the patient has at home; the receiver is related by the clinic's referral (a
disclosure, audited) and its answer is reported to the prescriber like a discharge's."""

from __future__ import annotations

from typing import Any

from tests.workflow.journey import (
    HSA,
    KOMMUN_A,
    KOMMUN_B,
    LUNG,
    TASK_SYSTEM,
    Journey,
    journey,
    reject,
    secured,
    text,
)
from tests.workflow.test_return_reports_e2e import at_home

__all__ = ["journey", "secured"]  # fixtures

VC = "SE2321000016-VC01"
SELF_CARE_CHANGE = "https://fhir.home-device-gateway.se/CodeSystem/self-care-change"


def directory(j: Journey) -> None:
    """The units the region maintains: primary care, Kommun A and its home-help service."""
    for res_id, hsa in (("vc", VC), ("kommun-a", KOMMUN_A), ("kommun-b", KOMMUN_B)):
        j.put(
            "region",
            {"resourceType": "Organization", "id": res_id, "identifier": [{"system": HSA, "value": hsa}]},
        )
    service = {
        "resourceType": "HealthcareService",
        "id": "hemtjanst-a",
        "providedBy": {"reference": "Organization/kommun-a"},
        "name": "Hemtjänsten i Kommun A",
    }
    j.put("region", service)


def handover(j: Journey, owner: str, **changes: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_SYSTEM, "code": "handover"}]},
        "for": {"reference": f"Patient/{j.patient()}"},
        "requester": {"reference": f"Organization/{j.organization(LUNG)}"},
        "owner": {"reference": owner},
        "reasonCode": {"text": "Uppföljningen av syrgasbehandlingen flyttas till primärvården"},
        "description": "Överlämning utan inskrivning: patienten följs upp av vårdcentralen",
    }
    task.update(changes)
    return {k: v for k, v in task.items() if v is not None}


def test_a_clinic_hands_its_patient_over_to_primary_care_and_hears_back(journey: Journey) -> None:
    j = journey
    home = at_home(j)
    directory(j)
    patient = f"Patient/{j.patient()}"
    j.get("vc", patient, status=404)  # primary care does not know the patient yet

    opened = j.post("lung", handover(j, "Organization/vc", basedOn=[{"reference": home["line"]}]))
    assert "input" not in opened  # the answer is the clinic's write; the gateway fills the inputs after

    [task] = j.search("vc", "Task?code=handover&owner=Organization/vc")
    assert {i["valueReference"]["reference"] for i in task["input"]} == {home["device"], home["line"]}
    j.get("vc", patient)
    j.get("vc", home["device"])
    [disclosure] = j.audit(f"entity=Task/{task['id']}&subtype=disclose")
    entities = [e["what"]["reference"] for e in disclosure["entity"]]
    assert patient in entities and "Organization/vc" in entities and home["device"] in entities
    assert disclosure["agent"][0]["who"]["identifier"]["value"] == "lung-client"

    # related by the clinic's referral, primary care may not refer the patient on
    visit = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"text": "Hembesök"},
        "for": {"reference": patient},
        "requester": {"reference": "Organization/vc"},
        "owner": {"reference": "Organization/kommun-a"},
    }
    assert "referred" in j.post("vc", visit, status=403)["issue"][0]["diagnostics"]
    assert j.post("vc", handover(j, "Organization/kommun-a", requester={"reference": "Organization/vc"}), 403)

    answer: list[dict[str, Any]] = [
        {"op": "replace", "path": "/status", "value": "completed"},
        {
            "op": "add",
            "path": "/statusReason",
            "value": {"coding": [{"system": SELF_CARE_CHANGE, "code": "egenvard-blir-hsl-atgard"}]},
        },
    ]
    j.patch("vc", f"Task/{task['id']}", answer)
    [found] = j.reports("lung", home["prescriber"])
    assert "Egenvården blir en hälso- och sjukvårdsåtgärd" in text(found)
    assert found["sender"] == {"reference": "Organization/vc"}


def test_a_handover_to_a_service_reaches_the_organisation_that_provides_it(journey: Journey) -> None:
    j = journey
    home = at_home(j)
    directory(j)
    j.post("lung", handover(j, "HealthcareService/hemtjanst-a"))
    [task] = j.search("ka", "Task?code=handover&owner=HealthcareService/hemtjanst-a")
    assert home["device"] in [i["valueReference"]["reference"] for i in task["input"]]
    assert j.search("kb", "Task?code=handover") == []
    j.patch("ka", f"Task/{task['id']}", reject("Hemtjänsten kan inte ta emot syrgaskoncentratorn"))
    [found] = j.reports("lung", home["prescriber"])
    assert "Hemtjänsten kan inte ta emot syrgaskoncentratorn" in text(found)


def test_a_unit_opens_only_the_handovers_the_policy_allows(journey: Journey) -> None:
    j = journey
    home = at_home(j)
    directory(j)
    lung = f"Organization/{j.organization(LUNG)}"

    def refused(who: str, answer: int, **changes: Any) -> str:
        body = j.post(who, {**handover(j, "Organization/vc"), **changes}, status=answer)
        return str(body["issue"][0]["diagnostics"])

    device = {"type": {"text": "hjälpmedel"}, "valueReference": {"reference": home["device"]}}
    assert "input" in refused("lung", 403, input=[device])  # the gateway fills the inputs
    assert "identifier" in refused("lung", 403, identifier=[{"system": "urn:x", "value": "1"}])
    assert "status" in refused("lung", 403, status="completed")
    assert "requester" in refused("lung", 403, requester={"reference": "Organization/vc"})
    assert "owner" in refused("lung", 403, owner={"reference": "Organization/finns-inte"})
    assert "owner" in refused("lung", 403, owner={"reference": lung})  # not to itself
    without = {k: v for k, v in handover(j, "Organization/vc").items() if k != "reasonCode"}
    assert "reason" in j.post("lung", without, status=422)["issue"][0]["diagnostics"]
    # not related through what the region wrote: neither primary care nor Kommun B
    vc = {"requester": {"reference": "Organization/vc"}, "owner": {"reference": "Organization/kommun-a"}}
    assert "related" in refused("vc", 403, **vc)
    assert "related" in refused("kb", 403, requester={"reference": "Organization/kommun-b"})
    # its own references are checked as every write's: a request it may not read is an unknown one (of
    # a patient it is not related to: its related patients' requests it reads, the device list's rule)
    stranger = j.post("region", {"resourceType": "Patient", "name": [{"family": "Främling"}]})["id"]
    other = {
        "resourceType": "DeviceRequest",
        "id": "kommunens",
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"text": "Duschpall"},
        "subject": {"reference": f"Patient/{stranger}"},
        "requester": {"reference": "Organization/kommun-b"},
    }
    j.put("region", other)
    hidden = refused("lung", 422, basedOn=[{"reference": "DeviceRequest/kommunens"}])
    assert hidden.replace("kommunens", "finns-inte") == refused(
        "lung", 422, basedOn=[{"reference": "DeviceRequest/finns-inte"}]
    )
    assert j.search("vc", "Task?code=handover") == []
