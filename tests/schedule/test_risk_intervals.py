"""Shorter intervals for a confirmed high-risk patient (issue 19): only a `final` high-risk RiskAssessment
moves the follow-ups and controls not yet made Tasks earlier (GATEWAY_RISK_INTERVAL_FACTOR, 0.5 by
default), never later and never before today, each Task with a Swedish note saying why; the Task ids stay
the occurrence's, so nothing is made twice. The clock is set as in the other scheduler tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.cli import CLI_CONTEXT
from gateway.risk.assess import ASSESSMENT_ID, current_of
from gateway.schedule import clock
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import row_of
from tests.schedule.test_control_job import Town, delivered, passes, personal_care, secured_region, town
from tests.schedule.test_follow_up_job import at, follow_ups
from tests.workflow.test_follow_up_dates import World
from tests.workflow.test_order_to_return_report import secured

__all__ = ["secured", "secured_region", "town"]

HIGH = {
    "coding": [
        {"system": "https://fhir.home-device-gateway.se/CodeSystem/risk-flag", "code": "hogriskpatient"}
    ]
}


def assessed(services: Services, patient: str, status: str) -> str:
    """The gateway's high-risk RiskAssessment of `patient` (`Patient/id`), made or set to `status` as the
    gateway (in production a clinician's system confirms it); its reference."""
    patient_id = patient.removeprefix("Patient/")
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": ASSESSMENT_ID, "value": patient_id}],
        "status": status,
        "subject": {"reference": patient},
        "prediction": [{"outcome": HIGH}],
    }

    def write(uow: Any) -> str:
        held, _ = current_of(uow, patient_id)
        if held is None:
            return str(services.write_path.create(uow, resource).stored.res_id)
        services.write_path.update(uow, "RiskAssessment", held.res_id, {**resource, "id": held.res_id})
        return str(held.res_id)

    # as a reaction of the gateway (only the gateway creates one; a clinician's system confirms it)
    return "RiskAssessment/" + services.write_path.run(CLI_CONTEXT.for_reaction(), write)


@pytest.fixture
def world(secured: Services) -> Iterator[World]:
    with TestClient(create_app(secured.settings, services=secured)) as http:
        yield World(secured, http)


def test_a_final_assessment_moves_follow_ups_not_yet_made_earlier(world: World, secured: Services) -> None:
    line = world.order(golden("01"))  # skapad 2026-11-20: follow-ups after 21 and 180 days
    plan = world.plan(line)
    patient = plan["subject"]["reference"]
    assessed(secured, patient, "preliminary")  # a proposal moves nothing
    assert at(secured, "2026-11-23T08:00:00+01:00")["follow-up"] == 0
    reference = assessed(secured, patient, "final")
    # 21 days shortened to 10: 2026-11-30, made 7 days ahead
    assert at(secured, "2026-11-22T08:00:00+01:00")["follow-up"] == 0
    assert at(secured, "2026-11-23T08:00:00+01:00")["follow-up"] == 1
    [task] = follow_ups(world)
    assert task["restriction"]["period"]["end"] == "2026-11-30T23:59:59+01:00"
    [note] = task["note"]
    assert note["text"].startswith(f"Tidigarelagd: patienten är bedömd som högriskpatient ({reference})")
    assert "2026-12-11" in note["text"] and "2026-11-30" in note["text"]
    assert "businessStatus" not in task
    # the ordinary day passes: no second Task for the same follow-up
    at(secured, "2026-12-04T08:00:00+01:00")  # overdue since 2026-11-30, and reported
    [again] = follow_ups(world)
    assert again["id"] == task["id"] and again["businessStatus"]["coding"][0]["code"] == "overdue"
    # the 180-day follow-up (2027-05-19) comes after 90 days (2027-02-18), made 7 days ahead
    assert at(secured, "2027-02-10T08:00:00+01:00")["follow-up"] == 0
    assert at(secured, "2027-02-11T08:00:00+01:00")["follow-up"] >= 1
    later = [t for t in follow_ups(world) if t["id"] != task["id"]]
    assert [t["restriction"]["period"]["end"][:10] for t in later] == ["2027-02-18"]


def test_the_device_list_shows_the_follow_up_as_the_scheduler_plans_it(
    world: World, secured: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confirmed high-risk: the list shows the moved day (2026-11-30), not the planned one (2026-12-11),
    before the Task exists (the scheduler's clock set to 2026-11-21) and after."""
    line = world.order(golden("01"))
    world.rows(row_of("02"))  # delivered: the concentrator is on the list
    patient = world.plan(line)["subject"]["reference"]
    monkeypatch.setattr(clock, "now", lambda settings, override=None: clock.parse("2026-11-21T08:00:00Z"))

    def shown() -> list[str]:
        world.http.headers.update(world.lung)
        response = world.http.get(f"/fhir/{patient}/$device-list")
        assert response.status_code == 200, response.text
        div = response.json()["entry"][0]["resource"]["text"]["div"]
        return re.findall(r"Nästa uppföljning: ([0-9-]+)<", div)

    assert shown() == ["2026-12-11"]
    assessed(secured, patient, "preliminary")
    assert shown() == ["2026-12-11"]  # a proposal moves nothing
    assessed(secured, patient, "final")
    assert shown() == ["2026-11-30"]
    assert at(secured, "2026-11-23T08:00:00+01:00")["follow-up"] == 1
    assert shown() == ["2026-11-30"]  # the Task's own due day


def test_confirmed_late_a_follow_up_moves_to_today_never_into_the_past(
    world: World, secured: Services
) -> None:
    line = world.order(golden("01"))
    patient = world.plan(line)["subject"]["reference"]
    assessed(secured, patient, "final")
    # the shortened day (2026-11-30) has passed on 2026-12-02: the follow-up is due today, not overdue
    assert at(secured, "2026-12-02T08:00:00+01:00")["follow-up"] == 1
    [task] = follow_ups(world)
    assert task["restriction"]["period"]["end"] == "2026-12-02T23:59:59+01:00"
    assert "businessStatus" not in task and "Tidigarelagd" in task["note"][0]["text"]


def test_a_final_assessment_shortens_the_controls_not_yet_made(
    town: tuple[World, Town], secured_region: Services
) -> None:
    world, kommun = town
    patient = delivered(world)
    personal_care(kommun, patient)
    assert passes(secured_region, 22) == 1  # the first control, due on day 28, as for every patient
    [first] = kommun.controls(kommun.a)
    assert "note" not in first
    reference = assessed(secured_region, patient["reference"], "final")
    # the next after 14 days (day 42), not 28 (day 56): made on day 35
    passes(secured_region, 34)  # the first is overdue by now: only that changes
    assert len(kommun.controls(kommun.a)) == 1
    passes(secured_region, 35)
    controls = kommun.controls(kommun.a)
    assert len(controls) == 2
    first_day = first["restriction"]["period"]["end"][:10]
    second_day = controls[1]["restriction"]["period"]["end"][:10]
    assert (date.fromisoformat(second_day) - date.fromisoformat(first_day)).days == 14
    assert controls[0]["id"] == first["id"]
    assert reference in controls[1]["note"][0]["text"]
    # a second pass and the ordinary day of the second occurrence make nothing twice
    assert passes(secured_region, 35) == 0
    passes(secured_region, 48)
    assert len(kommun.controls(kommun.a)) == 2
    passes(secured_region, 49)  # the third, due on day 56 (42 + 14)
    controls = kommun.controls(kommun.a)
    assert len(controls) == 3 and len({t["id"] for t in controls}) == 3
    # municipality B, unrelated, sees none of it
    assert kommun.controls(kommun.b) == []
