"""The control-and-cleaning job (issue 18, finding 9) end to end with auth on: the portal orders, the
register delivers the concentrator to the patient, a region-wide client registers municipality A as
providing personal care (a `personal-care` Task that A completes), and the scheduler runs with its clock
set: a control Task every 28 days, signed by A's staff (422 without the person), every missed one made
after downtime, none after the device is returned; municipality B, unrelated, sees none of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.master_data import MUNICIPALITY_CODE
from gateway.app import create_app
from gateway.cli import CLI_CONTEXT
from gateway.schedule.registry import run_pass
from gateway.schedule.writer import BASE, TASK_CODES
from gateway.search.dates import utc_now
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import changed, row_of
from tests.conftest import Database
from tests.schedule.test_follow_up_job import announced
from tests.security.conftest import bearer
from tests.workflow.test_follow_up_dates import World
from tests.workflow.test_order_to_return_report import client_for, search

CONTROL = f"{TASK_CODES}|control-cleaning"
KOMMUN_A = "SE2120000001-KOMA"
KOMMUN_B = "SE2120000002-KOMB"
HSA = "urn:oid:1.2.752.29.4.19"
OUTPUTS = f"{BASE}/CodeSystem/task-output-type"
SCOPES = "system/*.cruds"


@pytest.fixture
def secured_region(database: Database) -> Iterator[Services]:
    database.clear()
    settings = database.settings(auth=True, audit=True, region_clients=("region-journal",))
    built = Services.build(settings, engine=database.engine)
    yield built
    built.close()


class Town:
    def __init__(self, world: World, services: Services) -> None:
        self.http = world.http
        region = client_for(services, "region-journal", "SE2321000016-REGION", SCOPES)
        self.region = bearer(region.token(self.http, SCOPES))
        self.a = bearer(client_for(services, "kommun-a", KOMMUN_A, SCOPES).token(self.http, SCOPES))
        self.b = bearer(client_for(services, "kommun-b", KOMMUN_B, SCOPES).token(self.http, SCOPES))

    def as_(self, headers: dict[str, str]) -> TestClient:
        self.http.headers.update(headers)
        return self.http

    def post(self, headers: dict[str, str], resource: dict[str, Any]) -> dict[str, Any]:
        response = self.as_(headers).post(f"/fhir/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def put(self, headers: dict[str, str], resource: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = self.as_(headers).put(f"/fhir/Task/{resource['id']}", json=resource)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    def controls(self, headers: dict[str, str]) -> list[dict[str, Any]]:
        return search(self.as_(headers), "Task", code=CONTROL, _sort="due", _count="100")


@pytest.fixture
def town(secured_region: Services) -> Iterator[tuple[World, Town]]:
    with TestClient(create_app(secured_region.settings, services=secured_region)) as http:
        world = World(secured_region, http)
        yield world, Town(world, secured_region)


def delivered(world: World) -> dict[str, Any]:
    """The portal's order (golden 01) and the register's delivery of its concentrator to the patient (row
    02, for the order's line): the patient's reference."""
    line = world.order(golden("01"))
    world.rows(row_of("02"))
    patient: dict[str, Any] = world.plan(line)["subject"]
    return patient


def passes(services: Services, days: int) -> int:
    results = run_pass(services, utc_now() + timedelta(days=days))
    tally = results["control-cleaning"]
    assert tally is not None
    return tally.total()


def signed(task: dict[str, Any], result: str, person: bool = True) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": OUTPUTS, "code": "control-result"}]},
            "valueCodeableConcept": {
                "coding": [{"system": f"{BASE}/CodeSystem/control-result", "code": result}]
            },
        }
    ]
    if person:
        outputs.append(
            {
                "type": {"coding": [{"system": OUTPUTS, "code": "performed-by"}]},
                "valueIdentifier": {"system": "urn:kommun-a:personal", "value": "anna.s"},
            }
        )
    return {**task, "status": "completed", "output": outputs}


def personal_care(
    kommun: Town,
    patient: dict[str, Any],
    code: str | None = None,
    kind: str = f"{TASK_CODES}|personal-care",
    hsa: str = KOMMUN_A,
    completing: dict[str, str] | None = None,
    given: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Municipality A's Organization (in kommun `code` when given; another unit with `hsa`, whose client's
    headers are `completing`), registered by the region as providing personal care for the patient (a
    personal-care Task, with `given` in it, that the unit completes)."""
    unit: dict[str, Any] = {
        "resourceType": "Organization",
        "identifier": [{"system": HSA, "value": hsa}],
    }
    if code:
        coding = {"system": f"{BASE}/CodeSystem/kommunkod", "code": code}
        unit["address"] = [{"extension": [{"url": MUNICIPALITY_CODE, "valueCoding": coding}]}]
    organisation = kommun.post(kommun.region, {**unit, "name": "Kommun A"})
    care = kommun.post(
        kommun.region,
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [dict(zip(("system", "code"), kind.split("|"), strict=True))]},
            "for": patient,
            "owner": {"reference": f"Organization/{organisation['id']}"},
            **(given or {}),
        },
    )
    unit_client = completing or kommun.a
    held = kommun.as_(unit_client).get(f"/fhir/Task/{care['id']}").json()  # as the gateway filled it in
    kommun.put(unit_client, {**held, "status": "completed"})
    return organisation


def test_only_a_municipal_unit_registered_by_itself_or_the_region_gets_controls_from_when_it_accepted(
    town: tuple[World, Town], secured_region: Services
) -> None:
    """Primary care that accepted the handover gets no controls; a clinic may not register a municipality
    as providing personal care (403); a `lastModified` years back does not backdate the series."""
    world, kommun = town
    patient = delivered(world)
    primary = "SE2321000016-VC01"
    clinic = bearer(client_for(secured_region, "vc", primary, SCOPES).token(kommun.http, SCOPES))
    handover = f"{BASE}/CodeSystem/care-transition-task|handover"
    vc = personal_care(kommun, patient, kind=handover, hsa=primary, completing=clinic)
    assert passes(secured_region, 60) == 0  # primary care handed the devices: not a municipal unit
    # nor when a municipality's HSA-id is written beside the reference to it: the unit referenced decides
    forged_owner = {"reference": f"Organization/{vc['id']}", "identifier": {"system": HSA, "value": KOMMUN_A}}
    forged = kommun.post(
        kommun.region,
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": patient,
            "owner": forged_owner,
        },
    )
    held = kommun.as_(clinic).get(f"/fhir/Task/{forged['id']}").json()
    kommun.put(clinic, {**held, "status": "completed"})
    assert passes(secured_region, 60) == 0
    # and primary care may not register itself, or a municipality, as providing personal care by naming
    # its own unit one way and the municipality's the other
    mixed = {
        "resourceType": "Task",
        "status": "completed",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": "personal-care"}]},
        "for": patient,
        "owner": forged_owner,
    }
    assert kommun.as_(clinic).post("/fhir/Task", json=mixed).status_code == 403

    lung = bearer(client_for(secured_region, "lung", "SE2321000016-LUNG", SCOPES).token(kommun.http, SCOPES))
    registered_by_clinic = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": "personal-care"}]},
        "for": patient,
        "owner": {"identifier": {"system": HSA, "value": KOMMUN_A}},
    }
    refused = kommun.as_(lung).post("/fhir/Task", json=registered_by_clinic)
    assert refused.status_code == 403, refused.text
    assert passes(secured_region, 60) == 0

    personal_care(kommun, patient, given={"lastModified": "2020-01-01T08:00:00+01:00"})
    assert passes(secured_region, 22) == 1  # 28 days after the gateway stored it completed, not 2020
    [first] = kommun.controls(kommun.a)
    assert first["restriction"]["period"]["end"] >= (utc_now() + timedelta(days=27)).date().isoformat()


def test_a_control_task_every_28_days_until_the_device_is_returned(
    town: tuple[World, Town], secured_region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    assert passes(secured_region, 60) == 0  # no unit provides personal care: nobody learns of the patient

    organisation = personal_care(kommun, patient)
    assert passes(secured_region, 20) == 0  # the first control is due in 28 days, made 7 days ahead
    assert passes(secured_region, 22) == 1
    [first] = kommun.controls(kommun.a)
    assert first["owner"] == {"reference": f"Organization/{organisation['id']}"}
    assert first["focus"]["reference"].startswith("Device/")
    assert first["status"] == "requested"
    assert announced(secured_region, "control-due", first["id"], 1)
    assert passes(secured_region, 22) == 0  # a second pass changes nothing

    # signing: without the person it is 422; with, the person goes to the Provenance
    kommun.put(kommun.a, signed(first, "ok", person=False), status=422)
    kommun.put(kommun.a, signed(first, "ok"))
    assert not announced(secured_region, "control-due", first["id"], 2)  # announced once, when made
    found = search(kommun.as_(kommun.region), "Provenance", target=f"Task/{first['id']}")
    [provenance] = [p for p in found if p["reason"][0]["text"] == "Kontroll och rengöring signerad"]
    assert provenance["agent"][0]["who"]["identifier"]["value"] == "anna.s"

    # downtime: every missed control is made, the past ones overdue
    assert passes(secured_region, 110) >= 3
    controls = kommun.controls(kommun.a)
    assert len(controls) == 4
    overdue = [t for t in controls if t.get("businessStatus")]
    assert len(overdue) == 2  # the second and the third, due on days 56 and 84
    cleared = {k: v for k, v in overdue[0].items() if k != "businessStatus"}
    kommun.put(kommun.a, cleared, status=403)  # the mark is the scheduler's: the owner answers the Task
    assert {t["status"] for t in controls[1:]} == {"requested"}

    owner = {"reference": f"Organization/{organisation['id']}"}
    # a fault found: the text goes in a note (422 without)
    kommun.put(kommun.a, signed(controls[1], "fault-found"), status=422)
    noted = {
        **signed(controls[1], "fault-found"),
        "note": [{"text": "Filtret trasigt", "authorReference": owner}],
    }
    assert kommun.put(kommun.a, noted)["status"] == "completed"
    # … which opens a fault report to the device's owner, based on the control
    [report] = search(kommun.as_(kommun.region), "Task", code=f"{TASK_CODES}|fault-report")
    assert report["focus"] == controls[1]["focus"]
    assert {"reference": f"Task/{controls[1]['id']}"} in report.get("basedOn", [])
    assert "Filtret trasigt" in str(report)

    # municipality B, with no relationship to the patient, sees none of it
    assert kommun.controls(kommun.b) == []
    assert kommun.as_(kommun.b).get(f"/fhir/Task/{first['id']}").status_code == 404

    # returned: the open controls are cancelled and no more are made
    world.rows(changed("02", status="Återlämnad"))
    passes(secured_region, 111)
    controls = kommun.controls(kommun.a)
    assert [t["status"] for t in controls] == ["completed", "completed", "cancelled", "cancelled"]
    assert controls[2]["statusReason"]["coding"][0]["code"] == "device-left"
    assert passes(secured_region, 400) == 0


def next_control(kommun: Town, headers: dict[str, str], patient: dict[str, Any]) -> str | None:
    """The device list's "next control" of the patient's one device, as `headers`' client reads it."""
    response = kommun.as_(headers).get(f"/fhir/{patient['reference']}/$device-list")
    assert response.status_code == 200, response.text
    found = re.findall(
        r"Nästa kontroll och rengöring: ([0-9-]+)<", response.json()["entry"][0]["resource"]["text"]["div"]
    )
    assert len(found) <= 1
    return found[0] if found else None


def test_the_device_list_shows_the_next_control_before_and_after_its_task(
    town: tuple[World, Town], secured_region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    assert next_control(kommun, kommun.region, patient) is None  # no unit provides personal care

    personal_care(kommun, patient)
    planned = next_control(kommun, kommun.a, patient)
    assert planned is not None  # shown before the Task exists (made 7 days ahead)
    assert next_control(kommun, kommun.region, patient) == planned
    assert kommun.as_(kommun.b).get(f"/fhir/{patient['reference']}/$device-list").status_code == 404

    assert passes(secured_region, 22) == 1
    [first] = kommun.controls(kommun.a)
    assert first["restriction"]["period"]["end"][:10] == planned  # the Task's due date is the one shown
    assert next_control(kommun, kommun.a, patient) == planned  # the open Task's
    kommun.put(kommun.a, signed(first, "ok"))
    after = date.fromisoformat(planned) + timedelta(days=28)
    assert next_control(kommun, kommun.a, patient) == after.isoformat()  # signed: the next occurrence

    world.rows(changed("02", status="Återlämnad"))  # returned: no control, and no device on the list
    assert next_control(kommun, kommun.a, patient) is None


def test_a_move_and_a_stop_end_the_series(town: tuple[World, Town], secured_region: Services) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient, code="0180")
    assert passes(secured_region, 22) == 1
    [first] = kommun.controls(kommun.a)

    # A stops the series: the Task rejected with insats-upphord; none follow
    stop = {"coding": [{"system": f"{BASE}/CodeSystem/control-stop-reason", "code": "insats-upphord"}]}
    kommun.put(kommun.a, {**first, "status": "rejected", "statusReason": stop})
    assert passes(secured_region, 200) == 0
    assert [t["status"] for t in kommun.controls(kommun.a)] == ["rejected"]


def test_a_patient_who_moves_to_another_municipality_ends_the_controls(
    town: tuple[World, Town], secured_region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient, code="0180")
    assert passes(secured_region, 22) == 1

    def move(uow: Any) -> None:
        stored = uow.repository.current("Patient", patient["reference"].removeprefix("Patient/"))
        resource = {k: v for k, v in stored.json().items() if k != "meta"}
        coding = {"system": f"{BASE}/CodeSystem/kommunkod", "code": "1480"}
        resource["address"] = [
            {"city": "Göteborg", "extension": [{"url": MUNICIPALITY_CODE, "valueCoding": coding}]}
        ]
        secured_region.write_path.update(uow, "Patient", stored.res_id, resource)

    secured_region.write_path.run(CLI_CONTEXT, move)
    passes(secured_region, 23)
    [control] = kommun.controls(kommun.a)
    assert control["status"] == "cancelled"
    assert control["statusReason"]["coding"][0]["code"] == "patient-moved"
    assert passes(secured_region, 200) == 0


def test_an_accepted_handover_starts_the_controls(town: tuple[World, Town], secured_region: Services) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient, kind=f"{BASE}/CodeSystem/care-transition-task|handover")
    assert passes(secured_region, 22) == 1
    [control] = kommun.controls(kommun.a)
    assert kommun.controls(kommun.b) == []

    # nobody but the gateway creates a scheduled Task, not even the unit that owns one
    for code in ("control-cleaning", "follow-up", "service-due", "retirement-review"):
        forged = {k: v for k, v in control.items() if k not in ("id", "meta")}
        forged["code"] = {"coding": [{"system": TASK_CODES, "code": code}]}
        response = kommun.as_(kommun.a).post("/fhir/Task", json=forged)
        assert response.status_code == 403, response.text


def test_a_personal_care_team_the_region_wrote_starts_the_controls(
    town: tuple[World, Town], secured_region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    unit = kommun.post(
        kommun.region,
        {
            "resourceType": "Organization",
            "identifier": [{"system": HSA, "value": KOMMUN_A}],
            "name": "Kommun A",
        },
    )
    team = {
        "resourceType": "CareTeam",
        "status": "active",
        "category": [
            {"coding": [{"system": f"{BASE}/CodeSystem/careteam-category", "code": "personal-care"}]}
        ],
        "subject": patient,
        "period": {"start": utc_now().date().isoformat()},
        "participant": [{"member": {"reference": f"Organization/{unit['id']}"}}],
    }
    assert passes(secured_region, 22) == 0  # nobody provides personal care yet
    kommun.post(kommun.region, team)
    assert passes(secured_region, 22) == 1
    [control] = kommun.controls(kommun.a)
    assert control["basedOn"][0]["reference"].startswith("CareTeam/")
    assert kommun.controls(kommun.b) == []
