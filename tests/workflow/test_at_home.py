"""The devices a patient has at home (gateway.workflow.at_home), read whole; and where a report goes when
no prescriber can be found (gateway.workflow.prescribers). Auth off: what is found, not who may see it
(tests/workflow/test_return_reports_e2e.py and test_clinic_handover.py run with security on)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.services import Services
from gateway.workflow import at_home
from tests.api.helpers import create, patient

BASE = "https://fhir.home-device-gateway.se"
UNIT = "urn:example:register-unit"
CATEGORY = f"{BASE}/CodeSystem/communication-category"


def device(
    patient_id: str, serial: str, status: str = "active", owner: str = "Organization/mah"
) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "identifier": [{"system": UNIT, "value": serial}],
        "status": status,
        "patient": {"reference": f"Patient/{patient_id}"},
        "owner": {"reference": owner},
    }


def request(patient_id: str, status: str, kind: str = "forskrivning", **extra: Any) -> dict[str, Any]:
    coding = {"system": f"{BASE}/CodeSystem/bestallningsportalen-ordertyp", "code": kind}
    return {
        "resourceType": "DeviceRequest",
        "extension": [{"url": at_home.ORDER_TYPE_EXT, "valueCoding": coding}],
        "status": status,
        "intent": "order",
        "codeCodeableConcept": {"text": "Hjälpmedel"},
        "subject": {"reference": f"Patient/{patient_id}"},
        **extra,
    }


def use(patient_id: str, device_id: str, request_id: str | None, status: str = "active") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DeviceUseStatement",
        "status": status,
        "subject": {"reference": f"Patient/{patient_id}"},
        "device": {"reference": f"Device/{device_id}"},
    }
    if request_id:
        link = {"reference": f"DeviceRequest/{request_id}"}
        resource["extension"] = [{"url": at_home.DEVICE_REQUEST_EXT, "valueReference": link}]
    return resource


def test_everything_at_home_is_found_however_many_there_are(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(at_home, "PAGE", 2)  # read in pages of two: nothing is left out
    pid = create(client, patient())["id"]
    other = create(client, patient("195001182046"))["id"]
    devices = [create(client, device(pid, f"U{i}"))["id"] for i in range(5)]
    create(client, device(pid, "GONE", status="inactive"))
    create(client, device(other, "ELSEWHERE"))
    used = create(client, request(pid, "completed"))["id"]  # delivered: the unit in use says so
    create(client, use(pid, devices[0], used))
    assigned = {
        "url": at_home.ASSIGNED_UNIT_EXT,
        "valueReference": {"identifier": {"system": UNIT, "value": "U1"}},
    }
    named = create(client, request(pid, "completed", extension=[assigned]))["id"]
    accessories = create(client, request(pid, "completed", "tillbehor"))["id"]
    under_way = create(client, request(pid, "active"))["id"]
    create(client, request(pid, "revoked", "tillbehor"))
    create(client, request(pid, "completed"))  # delivered once, the unit since returned
    create(client, request(pid, "entered-in-error", "tillbehor"))

    with services.engine.connect() as connection:
        home = at_home.devices_at_home(connection, pid)
    assert sorted(home.references("Device")) == sorted(f"Device/{d}" for d in devices)
    wanted = {used, named, accessories, under_way}
    assert sorted(home.references("DeviceRequest")) == sorted(f"DeviceRequest/{r}" for r in wanted)
    assert len(home.uses) == 1


def report(*based_on: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": "returrapport"}]}],
        "basedOn": [{"reference": r} for r in based_on],
    }


def test_without_a_prescriber_a_report_goes_to_the_follow_up_unit_or_the_owner(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    lonely = create(client, request(pid, "completed"))["id"]  # no requester, no Provenance
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        "author": {"reference": "Organization/uppfoljande-enhet"},
        "activity": [{"reference": {"reference": f"DeviceRequest/{lonely}"}}],
    }
    create(client, plan)
    sent = create(client, report(f"DeviceRequest/{lonely}"))
    assert sent["recipient"] == [{"reference": "Organization/uppfoljande-enhet"}]
    assert "ansvarar för uppföljningen" in sent["payload"][-1]["contentString"]

    unit = create(client, device(pid, "U9", owner="Organization/hjalpmedelscentralen"))["id"]
    sent = create(client, report(f"Device/{unit}"))
    assert sent["recipient"] == [{"reference": "Organization/hjalpmedelscentralen"}]
    assert "hjälpmedlets ägare" in sent["payload"][-1]["contentString"]
