"""Fault reports (felanmälan, issue 18) end to end with security on: the municipality that handles a device
and the prescribing unit report faults to the device's owner; an unrelated municipality can neither
report nor learn anything; repeated faults reach the actual prescriber; a fault that could have harmed the
patient links an AdverseEvent the owner reads."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from gateway.hooks import GATEWAY_SCOPES, Principal, RequestContext
from gateway.pipeline import UnitOfWork, WritePath
from gateway.workflow.faults import open_fault_report
from tests.adapters.test_device_register import changed
from tests.security.conftest import bearer
from tests.workflow.journey import BASE, HSA, KOMMUN_A, KOMMUN_B, MAH, Journey, journey, secured, text
from tests.workflow.test_order_to_return_report import client_for
from tests.workflow.test_return_reports_e2e import at_home

__all__ = ["journey", "secured"]  # fixtures

TASK_CODES = f"{BASE}/CodeSystem/task-code"
OUTPUT_TYPES = f"{BASE}/CodeSystem/task-output-type"
REGISTER_TASK = f"{BASE}/CodeSystem/device-register-task"
FAULT = {"coding": [{"system": TASK_CODES, "code": "fault-report"}]}


def fault(device: str, requester: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": FAULT,
        "focus": {"reference": device},
        "requester": {"reference": requester},
        "note": [{"text": "Koncentratorn larmar och ger inget flöde."}],
        **more,
    }


def handled(j: Journey) -> dict[str, Any]:
    """The device at home, and Kommun A handling it (the hospital's handover to it)."""
    home = at_home(j)
    j.stay()
    home["patient"] = f"Patient/{j.patient()}"
    home["ka"] = f"Organization/{j.organization(KOMMUN_A)}"
    home["mah"] = f"Organization/{j.organization(MAH)}"
    home["lung"] = f"Organization/{j.organization('SE2321000016-LUNG')}"
    mah = client_for(j.services, "mah-client", MAH, "system/*.crus")
    j.headers["mah"] = bearer(mah.token(j.http, "system/*.crus"))
    j.put(
        "region",
        {
            "resourceType": "Organization",
            "id": "kommun-b",
            "identifier": [{"system": HSA, "value": KOMMUN_B}],
        },
    )
    return home


def test_a_fault_goes_to_the_owner_and_an_outsider_learns_nothing(journey: Journey) -> None:
    j = journey
    home = handled(j)
    task = j.post("ka", fault(home["device"], home["ka"]))
    assert task["owner"] == {"reference": home["mah"]}  # the gateway's choice, from the stored Device
    assert task["for"] == {"reference": home["patient"]}
    assert task["authoredOn"]

    [found] = j.search("mah", f"Task?code={TASK_CODES}|fault-report&owner={home['mah']}")  # the owner
    assert found["id"] == task["id"]

    # the owner is the stored Device's, whatever the client says
    wrong = j.post("ka", fault(home["device"], home["ka"], owner={"reference": "Organization/kommun-b"}), 422)
    assert wrong["issue"][0]["expression"] == ["Task.owner"]
    # the reporter is the client's own organisation
    j.post("ka", fault(home["device"], "Organization/kommun-b"), 403)

    # Kommun B, unrelated: a Device it may not read is refused exactly as one that does not exist
    device_id = home["device"].split("/")[1]
    hidden = j.post("kb", fault(home["device"], "Organization/kommun-b"), 422)
    absent = j.post("kb", fault("Device/finns-inte", "Organization/kommun-b"), 422)
    assert hidden["issue"][0]["code"] == absent["issue"][0]["code"] == "not-found"
    assert (
        hidden["issue"][0]["diagnostics"].replace(device_id, "finns-inte")
        == absent["issue"][0]["diagnostics"]
    )
    assert j.search("kb", f"Task?code={TASK_CODES}|fault-report") == []
    j.get("kb", f"Task/{task['id']}", status=404)

    # the reporter cannot move the report to another Device or patient afterwards
    j.patch(
        "ka", f"Task/{task['id']}", [{"op": "replace", "path": "/focus/reference", "value": "Device/x"}], 422
    )


def test_the_prescribing_unit_reports_a_fault_on_a_device_it_reads(journey: Journey) -> None:
    j = journey
    home = handled(j)
    # a unit related to the patient reads the patient's devices (named exception: the device list)
    j.get("lung", home["device"])
    task = j.post("lung", fault(home["device"], home["lung"]))
    assert task["owner"] == {"reference": home["mah"]}
    assert task["requester"] == {"reference": home["lung"]}
    j.get("ka", f"Task/{task['id']}", status=404)  # another reporter's report is not the municipality's


def test_three_faults_reach_the_actual_prescriber_once(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = journey
    home = handled(j)
    start = datetime(2027, 1, 10, 9, 0)
    days = iter(range(100))

    def on_day(day: int) -> None:
        monkeypatch.setattr(
            "gateway.pipeline.utc_now", lambda: start + timedelta(days=day, minutes=next(days))
        )

    on_day(0)
    j.post("ka", fault(home["device"], home["ka"]))
    j.post("ka", fault(home["device"], home["ka"]))  # the same reporter, device and day: counted once
    on_day(1)
    j.post("ka", fault(home["device"], home["ka"]))
    assert j.reports("lung", home["prescriber"]) == []
    on_day(5)
    third = j.post("ka", fault(home["device"], home["ka"]))
    [report] = j.reports("lung", home["prescriber"])
    assert "Upprepade felanmälningar: 3 felanmälningar" in text(report)
    assert "egenvården" in text(report)
    assert {"reference": f"Task/{third['id']}"} in report["basedOn"]
    assert [r["reference"] for r in report["recipient"]] == [home["prescriber"]]
    j.get("lung", f"Task/{third['id']}")  # the prescriber reads the reports it is based on (exception 6)
    j.get("lung", home["device"])  # the patient's device, as for every related unit (the device list)
    on_day(6)
    j.post("ka", fault(home["device"], home["ka"]))  # a fourth in the same window: no second report
    assert len(j.reports("lung", home["prescriber"])) == 1
    assert j.search("kb", "Communication") == []


def test_a_fault_that_could_have_harmed_the_patient_links_an_adverse_event(journey: Journey) -> None:
    j = journey
    home = handled(j)
    role = {
        "resourceType": "PractitionerRole",
        "id": "ka-sjukskoterska",
        "organization": {"reference": home["ka"]},
    }
    j.put("region", role)
    task = j.post("ka", fault(home["device"], home["ka"]))
    event = {
        "resourceType": "AdverseEvent",
        "actuality": "potential",
        "subject": {"reference": home["patient"]},
        "recorder": {"reference": "PractitionerRole/ka-sjukskoterska"},
        "suspectEntity": [{"instance": {"reference": home["device"]}}],
        "event": {"text": "Flödet upphörde nattetid; patienten larmade själv."},
    }
    stored = j.post("ka", event)
    output = {
        "type": {"coding": [{"system": OUTPUT_TYPES, "code": "adverse-event"}]},
        "valueReference": {"reference": f"AdverseEvent/{stored['id']}"},
    }
    j.patch("ka", f"Task/{task['id']}", [{"op": "add", "path": "/output", "value": [output]}])
    j.get("mah", f"AdverseEvent/{stored['id']}")  # the owner reads it through the Task
    assert [e["id"] for e in j.search("mah", f"AdverseEvent?subject={home['patient']}")] == [stored["id"]]
    j.get("kb", f"AdverseEvent/{stored['id']}", status=404)
    assert j.search("kb", "AdverseEvent") == []

    # an actual event, or one about another device, is not this fault's
    other = j.post("ka", {**event, "actuality": "actual"})
    bad = {**output, "valueReference": {"reference": f"AdverseEvent/{other['id']}"}}
    j.patch("ka", f"Task/{task['id']}", [{"op": "add", "path": "/output/-", "value": bad}], 422)


def test_the_gateway_opens_a_fault_report_for_a_signed_control(journey: Journey) -> None:
    j = journey
    home = handled(j)
    services = j.services
    path: WritePath = services.write_path

    # as a reaction or a scheduled job writes: the gateway's own client with every scope
    context = RequestContext(principal=Principal(client_id="cli", scopes=GATEWAY_SCOPES))

    def work(uow: UnitOfWork) -> None:
        open_fault_report(
            uow, path, home["device"], {"reference": home["ka"]}, "Fel vid kontroll", res_id="ctrl-1"
        )
        open_fault_report(
            uow, path, home["device"], {"reference": home["ka"]}, "Fel vid kontroll", res_id="ctrl-1"
        )

    path.run(context, work)
    task = j.get("mah", "Task/ctrl-1")
    assert task["owner"] == {"reference": home["mah"]} and task["for"] == {"reference": home["patient"]}
    assert task["note"][0]["text"] == "Fel vid kontroll"
    assert j.get("ka", "Task/ctrl-1")["requester"] == {"reference": home["ka"]}


def test_a_recall_informs_the_municipality_that_handles_the_unit(journey: Journey) -> None:
    j = journey
    home = handled(j)
    j.register(changed("02-utlanad", status="Återkallad"))
    recall = f"{REGISTER_TASK}|recall-device"
    [message] = j.search("ka", f"Communication?category={recall}&recipient={home['ka']}")
    assert "återkallat Syrgaskoncentrator stationär" in text(message)
    assert message["about"] == [{"reference": home["device"]}]
    assert [r["reference"] for r in message["recipient"]] == [home["ka"]]
    assert j.search("kb", "Communication") == []  # an unrelated municipality learns nothing
    assert j.search("kb", f"Communication?category={recall}") == []
    # the prescriber's message is still its own
    assert j.search("lung", f"Communication?category={recall}&recipient={home['prescriber']}")
    # and the topic device-recall-notice announces the municipality's (its subscription filters by recipient)
    topic = j.services.topics[f"{BASE}/SubscriptionTopic/device-recall-notice"]
    with j.services.engine.connect() as connection:
        assert topic.triggered(connection, "Communication", message["id"], 1, "POST")


def test_a_recall_informs_a_municipality_registered_for_personal_care_before_any_control(
    journey: Journey,
) -> None:
    """Kommun B provides personal care (the region's `personal-care` Task, which B completed) but has no
    control Task yet: it is told of the recall too."""
    j = journey
    home = handled(j)
    care = j.post(
        "region",
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": TASK_CODES, "code": "personal-care"}]},
            "for": {"reference": home["patient"]},
            "owner": {"reference": "Organization/kommun-b"},
        },
    )
    j.put("kb", {**j.get("kb", f"Task/{care['id']}"), "status": "completed"})
    j.register(changed("02-utlanad", status="Återkallad"))
    recall = f"{REGISTER_TASK}|recall-device"
    [message] = j.search("kb", f"Communication?category={recall}&recipient=Organization/kommun-b")
    assert {r["reference"] for r in message["recipient"]} == {home["ka"], "Organization/kommun-b"}
