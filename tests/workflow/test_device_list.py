"""The patient's device list (`Patient/{id}/$device-list`, issue 19), end to end with security on: the
seed 000 §4.8.1 patient with an oxygen concentrator prescribed by the lung clinic and delivered by MAH
(its request `completed`), a rollator from another aids centre in the register, and compression
stockings-like accessories (a `tillbehor` order); a discharge hands the patient over to home help. The
municipality that accepted the handover and the region see the whole list with owners' names,
prescribers and phone numbers; an unrelated municipality gets the answer of an unknown patient."""

from __future__ import annotations

from typing import Any

from gateway.security.scopes import ADAPTER_DEVICE_REGISTER
from tests.adapters.test_device_register import HEADER, changed
from tests.adapters.test_device_register import URL as RECORDS
from tests.security.conftest import bearer
from tests.workflow.journey import HSA, KOMMUN_A, KOMMUN_B, Journey, journey, order, secured
from tests.workflow.test_order_to_return_report import client_for

__all__ = ["journey", "secured"]  # fixtures

HMC = "SE2321000016-HMC2"
LIST_URL = "Patient/{}/$device-list"


def register(j: Journey, row: str) -> None:
    """The other aids centre's device register sends a row."""
    source = (f"device-register:SESAM@{HMC}",)
    client = client_for(j.services, "hmc-register", HMC, ADAPTER_DEVICE_REGISTER, source)
    headers = bearer(client.token(j.http, ADAPTER_DEVICE_REGISTER))
    response = j.http.post(
        f"{RECORDS}?mode=delta",
        content=f"{HEADER}\n{row}\n".encode(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert all(e["response"]["status"].startswith("20") for e in response.json()["entry"]), response.text


def seed(j: Journey) -> dict[str, Any]:
    """The §4.8.1 patient: the concentrator ordered, delivered and on loan; a rollator of another aids
    centre on loan; an accessory order delivered; a stay ending in a handover to home help (accepted)."""
    j.order(order("01"))
    j.order(order("01", version=2, status="levererad"))
    j.delivered()
    rollator = changed(
        "02-utlanad",
        individnummer="HMC-000777",
        serienummer="RL-4411",
        artikelnummer="120603",
        benamning="Rollator",
        iso9999="12 06 06",
        agare_hsaid=HMC,
        forskrivning_ordernummer="",
        nasta_service="",
    )
    register(j, rollator)
    j.order(order("04"))  # tillbehor: a nasal cannula without a unit, a tube with one
    j.stay()
    kommun = f"Organization/{j.organization(KOMMUN_A)}"
    handover = j.handover("ka", kommun)
    j.patch("ka", f"Task/{handover['id']}", [{"op": "replace", "path": "/status", "value": "accepted"}])
    mah = j.organization("SE2321000016-MAH1")
    service = {
        "resourceType": "HealthcareService",
        "providedBy": {"reference": f"Organization/{mah}"},
        "name": "MAH felanmälan",
        "telecom": [{"system": "phone", "value": "08-123 456 00"}],
        "availableTime": [
            {
                "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                "availableStartTime": "08:00:00",
                "availableEndTime": "16:00:00",
            }
        ],
    }
    j.post("region", service)
    return {"patient": j.patient()}


def entries(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == mode]


def test_the_whole_list_for_the_related_municipality_and_the_region_none_for_another(
    journey: Journey,
) -> None:
    j = journey
    patient = seed(j)["patient"]
    for who in ("ka", "region"):
        bundle = j.get(who, LIST_URL.format(patient))
        assert bundle["type"] == "searchset"
        [listed] = entries(bundle, "match")
        assert bundle["entry"][0]["resource"] is listed or bundle["entry"][0]["resource"] == listed
        assert listed["resourceType"] == "List" and listed["mode"] == "snapshot"
        assert listed["subject"]["reference"] == f"Patient/{patient}"
        included = entries(bundle, "include")
        by_key = {f"{r['resourceType']}/{r['id']}": r for r in included}
        items = [e["item"]["reference"] for e in listed["entry"]]
        kinds = sorted(item.split("/")[0] for item in items)
        # the concentrator and the rollator (units); the cannula and the tube (accessories, no Device)
        assert kinds == ["Device", "Device", "DeviceRequest", "DeviceRequest"], items
        devices = [by_key[i] for i in items if i.startswith("Device/")]
        assert {d.get("serialNumber") for d in devices} >= {"SN88231", "RL-4411"}
        owners = {by_key[d["owner"]["reference"]]["identifier"][0]["value"] for d in devices}
        assert {"SE2321000016-MAH1", HMC} <= owners  # several owners
        requests = [r for r in included if r["resourceType"] == "DeviceRequest"]
        assert any(r["status"] == "completed" for r in requests)  # delivered: still listed
        assert {"PractitionerRole", "Practitioner", "Organization", "HealthcareService"} <= {
            r["resourceType"] for r in included
        }
        assert not [r for r in included if r["resourceType"] in ("Binary", "Provenance")]
        div = listed["text"]["div"]
        for text in (
            "Syrgaskoncentrator stationär",
            "Rollator",
            "Näsgrimma",
            "Medicinteknisk apparatur i hemmet (MAH)",
            f"HSA-id {HMC}",  # the register names no name: the directory does (test_directory.py)
            "Frida Förskrivare, läkare, Lungmottagningen",
            "Patienten, Hemtjänst",
            "08-123 456 00",
            "mån–fre 08:00–16:00",
            "2027-01-10",  # next service
            "2026-12-11",  # next follow-up
        ):
            assert text in div, (who, text, div)
        # the records of the list are readable in full too (patient-wide for a related organisation)
        for item in items:
            assert j.get(who, item)["id"] == item.split("/")[1]

    # an unrelated municipality: the answer of an unknown patient, nothing more
    hidden = j.http.get(f"/fhir/{LIST_URL.format(patient)}", headers=j.headers["kb"])
    unknown = j.http.get(f"/fhir/{LIST_URL.format('no-such-patient')}", headers=j.headers["kb"])
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.text.replace(patient, "X") == unknown.text.replace("no-such-patient", "X")
    assert hidden.headers.get("content-type") == unknown.headers.get("content-type")
    assert j.search("kb", f"Device?patient=Patient/{patient}") == []

    # one AuditEvent per access, naming the patient
    events = [
        e
        for e in j.audit(f"entity=Patient/{patient}")
        if any(s.get("code") == "device-list" for s in e.get("subtype", []))
    ]
    assert len([e for e in events if e["outcome"] == "0"]) == 2
    named = {ent["what"]["reference"] for e in events for ent in e.get("entity", []) if "what" in ent}
    assert f"Patient/{patient}" in named


def test_the_operation_is_in_metadata_and_other_formats_are_refused(journey: Journey) -> None:
    j = journey
    statement = j.http.get("/fhir/metadata").json()
    [patient] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    assert {"name": "device-list", "definition": f"{HSA_BASE}/OperationDefinition/device-list"} in patient[
        "operation"
    ]
    pid = j.post("region", {"resourceType": "Patient", "name": [{"family": "Tom"}]})["id"]
    empty = j.get("region", LIST_URL.format(pid))
    [listed] = entries(empty, "match")
    assert listed["entry"] == [] and listed["emptyReason"]["coding"][0]["code"] == "nilknown"
    refused = j.http.get(f"/fhir/{LIST_URL.format(pid)}?_format=xml", headers=j.headers["region"])
    assert refused.status_code == 406
    assert KOMMUN_B and HSA  # imported for the journey's parties


HSA_BASE = "https://fhir.home-device-gateway.se"
