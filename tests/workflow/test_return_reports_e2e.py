"""Return reports for the real actors (issue 16), end to end with security on: a handover carries every
device the patient has at home, delivered ones too; a rejection reaches the actual prescriber(s) of each,
found through the request, the unit's use and the device; a municipality's own report reaches them
without the report naming the requests (which, related to the patient, it may read since issue 19: the
device list); a plain completion is not reported, a change to self-care is."""

from __future__ import annotations

from typing import Any

from tests.workflow.journey import (
    CATEGORY,
    HSA,
    KOMMUN_A,
    KOMMUN_B,
    TASK_SYSTEM,
    Journey,
    complete,
    journey,
    order,
    reject,
    secured,
    text,
)

__all__ = ["journey", "secured"]  # fixtures

REASON = "Hemtjänsten är avslutad: ingen kan hantera syrgasen i hemmet"
OTHER_PRESCRIBER = {
    "hsaid": "SE2321000016-G7Y6",
    "namn": "Gustav Förskrivare",
    "yrke": "sjukskoterska",
    "enhet_hsaid": "SE2321000016-LUNG",
    "enhet_namn": "Lungmottagningen",
}


def at_home(j: Journey) -> dict[str, Any]:
    """The oxygen concentrator prescribed, delivered (its request completed) and on loan at the patient,
    and its prescriber's role."""
    [entry] = j.order(order("01"))
    line = entry["response"]["location"].split("/_history")[0]
    j.order(order("01", version=2, status="levererad"))
    j.delivered()
    request = j.get("region", line)
    assert request["status"] == "completed"
    [device] = j.search("region", f"Device?patient=Patient/{j.patient()}")
    return {"line": line, "prescriber": request["requester"]["reference"], "device": f"Device/{device['id']}"}


def report(subject: str, *based_on: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": "returrapport"}]}],
        "subject": {"reference": subject},
        "basedOn": [{"reference": r} for r in based_on],
        "payload": [{"contentString": "Hemtjänsten upphör den 1 december."}],
    }


def test_a_rejected_handover_reaches_the_prescribers_of_every_device_at_home(journey: Journey) -> None:
    j = journey
    home = at_home(j)
    j.order(order("04", forskrivare=OTHER_PRESCRIBER))  # tillbehor, two lines, delivered: completed
    group = "https://fhir.home-device-gateway.se/identifier/bestallningsportalen-order|BP-2026-004714"
    lines = [
        f"DeviceRequest/{r['id']}" for r in j.search("region", f"DeviceRequest?group-identifier={group}")
    ]
    assert len(lines) == 2
    other = j.get("region", lines[0])["requester"]["reference"]
    assert other != home["prescriber"]
    [unconfirmed] = j.order(order("02"))  # an order under way whose prescriber is not confirmed
    pending = unconfirmed["response"]["location"].split("/_history")[0]
    j.stay()

    kommun = f"Organization/{j.organization(KOMMUN_A)}"
    handover = j.handover("ka", kommun)
    carried = {item["valueReference"]["reference"] for item in handover["input"]}
    assert carried == {home["device"], home["line"], *lines, pending}
    assert j.get("ka", home["line"])["status"] == "completed"  # what it carries, the receiver reads
    since = handover["meta"]["lastUpdated"]
    j.patch("ka", f"Task/{handover['id']}", reject(REASON))

    [found] = j.search("lung", f"Communication?recipient={home['prescriber']}&_lastUpdated=gt{since}")
    assert found == j.search("lung", f"Communication?recipient={other}")[0]
    lung_unit = f"Organization/{j.organization('SE2321000016-LUNG')}"
    assert [r["reference"] for r in found["recipient"]] == [home["prescriber"], other, lung_unit]
    assert REASON in text(found) and "avvisades" in text(found)
    assert "obekräftad" in text(found)  # the pending order's report went to the ordering unit, and says so
    assert {"reference": home["line"]} in found["basedOn"]
    orderer = j.get("region", pending)["requester"]["reference"]
    assert orderer not in [r["reference"] for r in found["recipient"]]


def test_a_municipalitys_own_report_reaches_the_prescriber_without_revealing_the_request(
    journey: Journey,
) -> None:
    j = journey
    home = at_home(j)
    patient = f"Patient/{j.patient()}"
    j.stay()
    handover = j.handover("ka", f"Organization/{j.organization(KOMMUN_A)}")

    # Kommun A's report on the handover it received reaches the prescriber; it is told who
    sent = j.post("ka", report(patient, f"Task/{handover['id']}"))
    assert [r["reference"] for r in sent["recipient"]] == [home["prescriber"]]

    # Kommun B cares for the patient too: a handover the region made that carries only the device
    j.put(
        "region",
        {
            "resourceType": "Organization",
            "id": "kommun-b",
            "identifier": [{"system": HSA, "value": KOMMUN_B}],
        },
    )
    legacy = {
        "resourceType": "Task",
        "id": "legacy-b",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_SYSTEM, "code": "handover"}]},
        "for": {"reference": patient},
        "owner": {"reference": "Organization/kommun-b"},
        "input": [{"type": {"text": "hjälpmedel"}, "valueReference": {"reference": home["device"]}}],
    }
    j.put("region", legacy)
    j.get("kb", home["device"])  # through the handover
    j.get("kb", home["line"])  # and the patient's requests (named exception: the device list)
    request_id = home["line"].split("/")[1]
    for based_on in ("Task/legacy-b", home["device"]):
        sent = j.post("kb", report(patient, based_on))
        assert [r["reference"] for r in sent["recipient"]] == [home["prescriber"]]
        assert request_id not in str(sent)
        events = j.audit(f"entity=Communication/{sent['id']}&subtype=create")
        [event] = [e for e in events if "routed" in e["outcomeDesc"]]
        assert home["line"] in [e["what"]["reference"] for e in event["entity"]]
        [seen] = [
            e
            for e in j.audit(f"entity=Communication/{sent['id']}&subtype=create", "kb")
            if e["id"] == event["id"]
        ]
        assert home["line"] in [e["what"].get("reference") for e in seen["entity"]]  # it reads it

    # a request it may not read (another patient's) is refused exactly as one that does not exist; so is
    # A's handover
    stranger = j.post("region", {"resourceType": "Patient", "name": [{"family": "Främling"}]})["id"]
    elsewhere = {
        "resourceType": "DeviceRequest",
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"text": "Rollator"},
        "subject": {"reference": f"Patient/{stranger}"},
        "requester": {"reference": home["prescriber"]},
    }
    request_id = j.post("region", elsewhere)["id"]
    hidden = j.post("kb", report(patient, f"DeviceRequest/{request_id}"), status=422)
    absent = j.post("kb", report(patient, "DeviceRequest/finns-inte"), status=422)
    assert hidden["issue"][0]["code"] == absent["issue"][0]["code"] == "not-found"
    assert (
        hidden["issue"][0]["diagnostics"].replace(request_id, "finns-inte")
        == absent["issue"][0]["diagnostics"]
    )
    other = j.post("kb", report(patient, f"Task/{handover['id']}"), status=422)
    unknown = j.post("kb", report(patient, "Task/finns-inte"), status=422)
    assert (
        other["issue"][0]["diagnostics"].replace(handover["id"], "finns-inte")
        == unknown["issue"][0]["diagnostics"]
    )


def test_only_a_change_to_the_conditions_of_self_care_is_reported(journey: Journey) -> None:
    j = journey
    home = at_home(j)
    j.stay("V2026-000001")
    kommun = f"Organization/{j.organization(KOMMUN_A)}"
    first = j.handover("ka", kommun)
    j.patch("ka", f"Task/{first['id']}", complete())
    assert j.reports("lung", home["prescriber"]) == []  # a plain completion stays on the Task

    j.stay("V2026-000002")
    second = j.handover("ka", kommun)
    assert second["id"] != first["id"]
    j.patch("ka", f"Task/{second['id']}", complete("hemtjanst-upphor"))
    [found] = j.reports("lung", home["prescriber"])
    assert "genomförd" in text(found) and "Hemtjänsten upphör" in text(found)
    assert {"reference": f"Task/{second['id']}"} in found["basedOn"]
