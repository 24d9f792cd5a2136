"""The control-and-cleaning job's rules beyond the 28-day series (issue 18, finding 9, docs/scheduling.md),
end to end with auth on and the same parties as tests/schedule/test_control_job.py: an interval per ISO
9999 class (GATEWAY_CONTROL_INTERVALS; 0: no control), a patient's death, the missed controls of one
patient as one search, and a control signed by a Practitioner (reference, not identifier) named in the
Provenance and the write's AuditEvent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.cli import CLI_CONTEXT
from gateway.schedule.common import local_day
from gateway.schedule.writer import BUSINESS_STATUS
from gateway.search.dates import utc_now
from gateway.services import Services
from tests.conftest import Database
from tests.schedule.test_control_job import (
    CONTROL,
    OUTPUTS,
    Town,
    delivered,
    next_control,
    passes,
    personal_care,
    signed,
)
from tests.workflow.test_follow_up_dates import World
from tests.workflow.test_order_to_return_report import search

OVERDUE = f"{BUSINESS_STATUS}|overdue"


@pytest.fixture
def intervals() -> tuple[str, ...]:
    """GATEWAY_CONTROL_INTERVALS: none unless a test parametrizes it."""
    return ()


@pytest.fixture
def region(database: Database, intervals: tuple[str, ...]) -> Iterator[Services]:
    """As test_control_job's `secured_region`, with the control intervals of `intervals`."""
    database.clear()
    settings = database.settings(
        auth=True, audit=True, region_clients=("region-journal",), control_intervals=intervals
    )
    built = Services.build(settings, engine=database.engine)
    yield built
    built.close()


@pytest.fixture
def town(region: Services) -> Iterator[tuple[World, Town]]:
    with TestClient(create_app(region.settings, services=region)) as http:
        world = World(region, http)
        yield world, Town(world, region)


# The register's row 02 delivers a concentrator of ISO 9999 class "04 03 12": the longest matching prefix
# (0403) wins over the shorter one (04) and an unrelated class (1203).
@pytest.mark.parametrize("intervals", [("04=0", "0403=14", "1203=0")])
def test_a_14_day_interval_for_the_devices_class_makes_the_first_control_due_on_day_14(
    town: tuple[World, Town], region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient)
    today = local_day(utc_now(), region)
    assert next_control(kommun, kommun.a, patient) == (today + timedelta(days=14)).isoformat()

    assert passes(region, 6) == 0  # due on day 14, made 7 days ahead
    assert passes(region, 8) == 1
    [first] = kommun.controls(kommun.a)
    assert first["restriction"]["period"]["end"][:10] == (today + timedelta(days=14)).isoformat()
    kommun.put(kommun.a, signed(first, "ok"))

    assert passes(region, 22) == 1  # the second, due on day 28: every 14 days
    second = kommun.controls(kommun.a)[1]
    assert second["restriction"]["period"]["end"][:10] == (today + timedelta(days=28)).isoformat()


@pytest.mark.parametrize("intervals", [("0403=0", "04=14")])  # the longest prefix wins, in either order
def test_an_interval_of_0_for_the_devices_class_makes_no_control(
    town: tuple[World, Town], region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient)
    assert next_control(kommun, kommun.a, patient) is None  # the device list shows none either
    assert passes(region, 400) == 0
    assert kommun.controls(kommun.a) == []
    assert kommun.controls(kommun.region) == []


def test_a_death_cancels_the_open_controls_and_no_more_are_made(
    town: tuple[World, Town], region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient)
    assert passes(region, 22) == 1
    [first] = kommun.controls(kommun.a)
    assert first["status"] == "requested"

    def die(uow: Any) -> None:
        stored = uow.repository.current("Patient", patient["reference"].removeprefix("Patient/"))
        resource = {**stored.json(), "deceasedDateTime": utc_now().date().isoformat()}
        resource.pop("meta")
        region.write_path.update(uow, "Patient", stored.res_id, resource)

    region.write_path.run(CLI_CONTEXT, die)
    assert passes(region, 23) == 1  # before its due date (day 28): cancelled, not overdue
    [control] = kommun.controls(kommun.a)
    assert control["status"] == "cancelled"
    assert control["statusReason"]["coding"][0]["code"] == "patient-deceased"
    assert "businessStatus" not in control
    assert passes(region, 400) == 0  # none for the deceased, however many fell due
    assert len(kommun.controls(kommun.a)) == 1


def test_the_missed_controls_of_one_patient_are_one_search_away(
    town: tuple[World, Town], region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient)
    assert passes(region, 22) == 1
    [first] = kommun.controls(kommun.a)
    kommun.put(kommun.a, signed(first, "ok"))  # signed in time: not missed
    assert passes(region, 110) >= 3  # days 56 and 84 missed, day 112 not yet due
    controls = kommun.controls(kommun.a)
    assert [t["status"] for t in controls] == ["completed", "requested", "requested", "requested"]

    missed = {"patient": patient["reference"], "code": CONTROL, "business-status": OVERDUE}
    found = search(kommun.as_(kommun.a), "Task", _sort="due", **missed)
    assert [t["id"] for t in found] == [controls[1]["id"], controls[2]["id"]]
    assert search(kommun.as_(kommun.a), "Task", **{**missed, "patient": "Patient/someone-else"}) == []
    # municipality B, unrelated to the patient, gets none
    assert search(kommun.as_(kommun.b), "Task", **missed) == []


def test_a_control_signed_by_a_practitioner_names_them_in_the_provenance_and_the_audit_event(
    town: tuple[World, Town], region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    organisation = personal_care(kommun, patient)
    assert passes(region, 22) == 1
    [first] = kommun.controls(kommun.a)
    name = [{"family": "Svensson", "given": ["Anna"]}]
    nurse = kommun.post(kommun.region, {"resourceType": "Practitioner", "name": name})
    person = f"Practitioner/{nurse['id']}"
    by = {
        "type": {"coding": [{"system": OUTPUTS, "code": "performed-by"}]},
        "valueReference": {"reference": person},
    }

    # the person without the result is not a signed control
    response = kommun.as_(kommun.a).put(
        f"/fhir/Task/{first['id']}", json={**first, "status": "completed", "output": [by]}
    )
    assert response.status_code == 422, response.text
    assert "Task.output" in str(response.json()["issue"][0].get("expression"))
    assert "control-result" in response.text

    result = signed(first, "ok", person=False)["output"]
    done = kommun.put(kommun.a, {**first, "status": "completed", "output": [*result, by]})
    assert done["status"] == "completed"

    found = search(kommun.as_(kommun.region), "Provenance", target=f"Task/{first['id']}")
    [provenance] = [p for p in found if p["reason"][0]["text"] == "Kontroll och rengöring signerad"]
    assert provenance["agent"][0]["who"] == {"reference": person}
    assert provenance["agent"][0]["onBehalfOf"] == {"reference": f"Organization/{organisation['id']}"}

    assert region.audit is not None
    region.audit.flush()
    with region.engine.connect() as connection:
        stored = region.write_path.searcher.match(
            connection, "AuditEvent", f"entity=Task/{first['id']}", limit=20
        )
    [event] = [e for e in (s.json() for s in stored) if "signed by" in e.get("outcomeDesc", "")]
    assert event["action"] == "U"
    assert event["outcomeDesc"] == f"200 signed by {person} (control ok)"
    named = {entity["what"]["reference"] for entity in event["entity"] if "what" in entity}
    assert person in named
    assert f"Task/{first['id']}/_history/{done['meta']['versionId']}" in named
