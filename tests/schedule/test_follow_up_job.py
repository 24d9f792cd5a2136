"""The follow-up job (issue 18, finding 4), end to end with auth on: the portal orders (skapad 2026-11-20,
a follow-up after 21 days: 2026-12-11), the scheduler runs with its clock set, and the responsible lung
clinic and an unrelated municipality look with their own organisation-scoped clients."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.master_data import MUNICIPALITY_CODE
from gateway.app import create_app
from gateway.cli import CLI_CONTEXT
from gateway.schedule import changes, clock
from gateway.schedule.registry import run_pass
from gateway.schedule.writer import BASE, BUSINESS_STATUS, TASK_CODES
from gateway.search.dates import utc_now
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import changed, row_of
from tests.security.conftest import bearer
from tests.workflow.test_follow_up_dates import World, version
from tests.workflow.test_order_to_return_report import client_for, read, search, secured

__all__ = ["secured"]

FOLLOW_UP = f"{TASK_CODES}|follow-up"
OTHER_TOWN = "SE2321000016-KOMMUNB"


@pytest.fixture
def world(secured: Services) -> Iterator[World]:
    with TestClient(create_app(secured.settings, services=secured)) as http:
        yield World(secured, http)


def at(services: Services, moment: str) -> dict[str, int]:
    results = run_pass(services, clock.parse(moment))
    return {name: tally.total() for name, tally in results.items() if tally is not None}


def written_by_the_scheduler(services: Services, task_id: str, organisation: str) -> None:
    """Its AuditEvent names the scheduler, then the plan's organisation; its Provenance the gateway, on
    behalf of the Organization."""
    searcher = services.write_path.searcher
    with services.engine.connect() as connection:
        found = searcher.match(connection, "AuditEvent", f"entity=Task/{task_id}", limit=20)
        events = [s.json() for s in found]
        [provenance] = [s.json() for s in searcher.match(connection, "Provenance", f"target=Task/{task_id}")]
    [event] = [e for e in events if e.get("action") == "C"]
    assert near_now(event["recorded"])  # the real clock, not the jobs' (GATEWAY_NOW / --now)
    assert event["agent"][0]["who"]["identifier"]["value"] == "gateway:scheduler"
    assert event["agent"][1]["who"]["identifier"]["value"] == "SE2321000016-LUNG"
    [agent] = provenance["agent"]
    assert agent["who"]["identifier"]["value"] == "gateway:scheduler"
    assert agent["onBehalfOf"] == {"reference": organisation}


def near_now(instant: str) -> bool:
    """Whether a FHIR instant is within ten minutes of the real clock."""
    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)
    return abs(moment - utc_now()) < timedelta(minutes=10)


def announced(services: Services, topic: str, task_id: str, version: int) -> bool:
    """Whether the subscription topic is triggered by this version of the Task (written by PUT)."""
    found = services.topics[f"https://fhir.home-device-gateway.se/SubscriptionTopic/{topic}"]
    with services.engine.connect() as connection:
        return found.triggered(connection, "Task", task_id, version, "PUT")


def follow_ups(world: World) -> list[dict[str, Any]]:
    world.http.headers.update(world.lung)
    return search(world.http, "Task", code=FOLLOW_UP, _sort="due")


def test_a_21_day_follow_up_is_a_task_on_day_14_overdue_on_day_22_with_the_prescribers_report(
    world: World, secured: Services
) -> None:
    line = world.order(golden("01"))
    plan = world.plan(line)
    assert at(secured, "2026-12-03T22:00:00+01:00")["follow-up"] == 0  # day 13: nothing yet
    assert follow_ups(world) == []

    assert at(secured, "2026-12-04T08:00:00+01:00")["follow-up"] == 1  # day 14: the Task
    [task] = follow_ups(world)
    assert task["status"] == "requested"
    assert task["restriction"]["period"]["end"] == "2026-12-11T23:59:59+01:00"
    assert task["focus"]["reference"] == line
    assert task["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
    assert task["for"] == plan["subject"]
    assert task["owner"]["reference"] == plan["author"]["reference"]
    written_by_the_scheduler(secured, task["id"], plan["author"]["reference"])
    assert task["authoredOn"].startswith("2026-12-04T07:00:00")  # the jobs' clock
    assert near_now(task["meta"]["lastUpdated"])  # the real one
    assert "businessStatus" not in task

    assert announced(secured, "follow-up-due", task["id"], 1)
    # a second pass, and a pass on a later day before the due date, change nothing
    assert at(secured, "2026-12-04T08:00:00+01:00")["follow-up"] == 0
    assert at(secured, "2026-12-11T23:00:00+01:00")["follow-up"] == 0
    # a later order version does not move the planned date
    world.order(version(golden("01"), 2, "2026-12-20T10:00:00+01:00", status="levererad"))

    assert at(secured, "2026-12-12T08:00:00+01:00")["follow-up"] == 2  # day 22: overdue, and the report
    world.http.headers.update(world.lung)
    [late] = search(world.http, "Task", code=FOLLOW_UP, **{"business-status": f"{BUSINESS_STATUS}|overdue"})
    assert late["id"] == task["id"]
    assert announced(secured, "follow-up-overdue", task["id"], 2)
    assert not announced(secured, "follow-up-due", task["id"], 2)
    [report] = search(world.http, "Communication", **{"based-on": f"Task/{task['id']}"})
    assert report["payload"][0]["contentString"].startswith("Uppföljningen är inte genomförd")
    assert near_now(report["sent"])  # the write's time, not the jobs' clock
    request = read(world.http, line)
    assert report["recipient"][0]["reference"] == request["requester"]["reference"]
    assert at(secured, "2026-12-13T08:00:00+01:00")["follow-up"] == 0  # reported once

    # the clinic completes it: the plan's activity is completed, the Task its outcome
    staff = client_for(secured, "lung-staff", "SE2321000016-LUNG", "system/*.cruds")
    world.http.headers.update(bearer(staff.token(world.http, "system/*.cruds")))
    note = {"text": "Patienten nöjd, flöde 2 l/min", "authorReference": plan["author"]}
    done = {**late, "status": "completed", "note": [note]}
    response = world.http.put(f"/fhir/Task/{late['id']}", json=done)
    assert response.status_code == 200, response.text
    [activity] = [a for a in world.plan(line)["activity"] if a.get("id") == "uppfoljning-21-aterbesok"]
    assert activity["detail"]["status"] == "completed"
    assert activity["outcomeReference"] == [{"reference": f"Task/{task['id']}"}]
    assert at(secured, "2026-12-14T08:00:00+01:00")["follow-up"] == 0

    # an unrelated municipality sees none of it
    other = client_for(secured, "kommun-b", OTHER_TOWN, "system/*.rus")
    world.http.headers.update(bearer(other.token(world.http, "system/*.rus")))
    assert search(world.http, "Task", code=FOLLOW_UP) == []
    assert world.http.get(f"/fhir/Task/{task['id']}").status_code == 404
    assert search(world.http, "Communication", **{"based-on": f"Task/{task['id']}"}) == []


def test_the_follow_up_tasks_due_date_is_searchable_with_due(world: World, secured: Services) -> None:
    """The 21-day follow-up's Task is due 2026-12-11T23:59:59+01:00: the lung clinic finds it before the
    12th, not before the 11th."""
    world.order(golden("01"))
    assert at(secured, "2026-12-04T08:00:00+01:00")["follow-up"] == 1
    world.http.headers.update(world.lung)
    [task] = search(world.http, "Task", code=FOLLOW_UP, due="lt2026-12-12")
    assert task["restriction"]["period"]["end"] == "2026-12-11T23:59:59+01:00"
    assert search(world.http, "Task", code=FOLLOW_UP, due="lt2026-12-11") == []
    assert [t["id"] for t in search(world.http, "Task", code=FOLLOW_UP, due="ge2026-12-11")] == [task["id"]]


def test_a_pass_after_downtime_makes_every_missed_follow_up_overdue_and_makulerad_cancels(
    world: World, secured: Services
) -> None:
    order = golden("01")
    world.order(order)
    assert at(secured, "2027-06-01T08:00:00+02:00")["follow-up"] >= 3  # both follow-ups, both overdue
    tasks = follow_ups(world)
    assert len(tasks) == 2
    assert all(t["businessStatus"]["coding"][0]["code"] == "overdue" for t in tasks)
    world.order(version(order, 2, "2027-06-02T08:00:00+02:00", status="makulerad"))
    at(secured, "2027-06-02T09:00:00+02:00")
    tasks = follow_ups(world)
    assert {t["status"] for t in tasks} == {"cancelled"}
    assert tasks[0]["statusReason"]["text"].startswith("Order BP-2026-004711 makulerades")


def test_the_registers_return_without_a_pick_up_order_cancels_the_open_follow_ups(
    world: World, secured: Services
) -> None:
    line = world.order(golden("01"))
    world.rows(row_of("02"))  # delivered
    assert at(secured, "2026-12-05T08:00:00+01:00")["follow-up"] == 1
    world.rows(changed("02", status="Återlämnad"))  # returned, no hämtorder
    at(secured, "2026-12-05T09:00:00+01:00")
    [task] = follow_ups(world)
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0]["code"] == "plan-ended"
    assert task["statusReason"]["text"].startswith("Hjälpmedlet är återlämnat enligt hjälpmedelsregistret")
    ended = {a["id"]: a["detail"]["status"] for a in world.plan(line)["activity"] if "detail" in a}
    assert set(ended.values()) == {"cancelled"}
    assert at(secured, "2027-06-01T08:00:00+02:00")["follow-up"] == 0  # nothing more for the unit


def test_a_pick_up_and_a_death_cancel_the_open_follow_ups(world: World, secured: Services) -> None:
    line = world.order(golden("01"))
    world.rows(row_of("02"))
    assert at(secured, "2026-12-05T08:00:00+01:00")["follow-up"] == 1
    world.order(golden("08"))  # hämtorder of the concentrator: the plan's activities end
    at(secured, "2026-12-05T09:00:00+01:00")
    [task] = follow_ups(world)
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0]["code"] == "plan-ended"
    assert task["statusReason"]["text"].startswith("Hjälpmedlet hämtas tillbaka")

    # another order for the patient; the patient dies before its follow-up
    second = version(golden("01"), 1, "2026-11-22T10:00:00+01:00", ordernummer="BP-2026-004712")
    world.order(second)
    assert at(secured, "2026-12-06T08:00:00+01:00")["follow-up"] == 1
    patient = world.plan(line)["subject"]["reference"]

    def die(uow: Any) -> None:
        stored = uow.repository.current("Patient", patient.removeprefix("Patient/"))
        resource = {**stored.json(), "deceasedDateTime": "2026-12-06T10:00:00+01:00"}
        resource.pop("meta")
        secured.write_path.update(uow, "Patient", stored.res_id, resource)

    secured.write_path.run(CLI_CONTEXT, die)
    at(secured, "2026-12-06T12:00:00+01:00")
    statuses = {(t["status"], t["statusReason"]["coding"][0]["code"]) for t in follow_ups(world)}
    assert statuses == {("cancelled", "plan-ended"), ("cancelled", "patient-deceased")}
    assert at(secured, "2027-06-01T12:00:00+02:00")["follow-up"] == 0  # nothing more for the deceased


def test_a_move_to_another_municipality_cancels_the_municipal_units_follow_ups_only(
    world: World, secured: Services
) -> None:
    """A follow-up the municipality's occupational therapist does (the activity's performer a municipal
    unit, kommunkod 0180) and one the clinic does: the patient moves to Göteborg (1480); the municipal one
    is cancelled `patient-moved`, the clinic's goes on, and no new one is made for the municipal unit."""
    kommunkod = f"{BASE}/CodeSystem/kommunkod"

    def address(code: str) -> list[dict[str, Any]]:
        coding = {"system": kommunkod, "code": code}
        return [{"extension": [{"url": MUNICIPALITY_CODE, "valueCoding": coding}]}]

    def activity(name: str, day: str, performer: str) -> dict[str, Any]:
        detail = {
            "kind": "Appointment",
            "status": "not-started",
            "scheduledPeriod": {"start": day},
            "performer": [{"reference": performer}],
            "description": "Uppföljning",
        }
        return {"id": name, "detail": detail}

    plan = {
        "resourceType": "CarePlan",
        "id": "moving-plan",
        "status": "active",
        "intent": "plan",
        "category": [
            {"coding": [{"system": f"{BASE}/CodeSystem/careplan-category", "code": "device-follow-up"}]}
        ],
        "subject": {"reference": "Patient/mover"},
        "author": {"reference": "Organization/clinic"},
        "activity": [
            activity("kommun-1", "2026-12-10", "Organization/kommun"),
            activity("kommun-2", "2027-01-20", "Organization/kommun"),
            activity("klinik-1", "2026-12-10", "Organization/clinic"),
        ],
    }

    def write(uow: Any, *resources: dict[str, Any]) -> None:
        for resource in resources:
            secured.write_path.update(uow, resource["resourceType"], resource["id"], resource)

    def setup(uow: Any) -> None:
        write(
            uow,
            {"resourceType": "Organization", "id": "kommun", "name": "Kommun A", "address": address("0180")},
            {"resourceType": "Organization", "id": "clinic", "name": "Kliniken"},
            {"resourceType": "Patient", "id": "mover", "address": address("0180")},
            plan,
        )

    secured.write_path.run(CLI_CONTEXT, setup)
    assert at(secured, "2026-12-05T08:00:00+01:00")["follow-up"] == 2

    def move(uow: Any) -> None:
        write(uow, {"resourceType": "Patient", "id": "mover", "address": address("1480")})

    secured.write_path.run(CLI_CONTEXT, move)
    assert at(secured, "2026-12-05T09:00:00+01:00")["follow-up"] == 1
    with secured.engine.connect() as connection:
        found = secured.write_path.searcher.match(connection, "Task", f"code={FOLLOW_UP}", limit=10)
    tasks = {str(s.json()["owner"]["reference"]): s.json() for s in found}
    assert tasks["Organization/kommun"]["status"] == "cancelled"
    assert tasks["Organization/kommun"]["statusReason"]["coding"][0]["code"] == "patient-moved"
    assert tasks["Organization/clinic"]["status"] == "requested"
    assert at(secured, "2027-01-15T08:00:00+01:00")["follow-up"] >= 1  # the clinic's overdue, nothing new
    with secured.engine.connect() as connection:
        after = secured.write_path.searcher.match(connection, "Task", f"code={FOLLOW_UP}", limit=10)
    assert len(after) == 2


def test_a_pass_later_the_same_day_looks_only_at_what_changed(
    world: World, secured: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a complete pass, a pass the same day reads only the plans, patients and Tasks written since
    (and the Tasks falling due since); the day's first pass reads everything again
    (gateway/schedule/changes.py). Here the passes follow each other within seconds of real time: the
    margin for long transactions is set to none."""
    monkeypatch.setattr(changes, "MARGIN", timedelta(0))

    def seen(moment: str) -> int:
        tally = run_pass(secured, clock.parse(moment))["follow-up"]
        assert tally is not None
        return tally.seen

    world.order(golden("01"))
    assert seen("2026-12-04T08:00:00+01:00") == 1  # the first pass: whole
    assert seen("2026-12-04T09:00:00+01:00") == 0  # nothing written since: no plan read
    second = version(golden("01"), 1, "2026-11-22T10:00:00+01:00", ordernummer="BP-2026-004712")
    world.order(second)
    assert seen("2026-12-04T10:00:00+01:00") == 2  # the new plan; the order wrote the patient: both its
    assert seen("2026-12-04T07:00:00+01:00") == 1  # the clock moved back: whole (the new plan is not due)
    world.order(version(golden("01"), 2, "2026-12-04T10:30:00+01:00", status="makulerad"))
    seen("2026-12-04T11:00:00+01:00")
    [task] = follow_ups(world)
    assert task["status"] == "cancelled"  # the changed plan's open Task looked at: cancelled the same day
    assert seen("2026-12-04T12:00:00+01:00") == 0
    # a new day: whole; the new plan's follow-up (2026-12-13) falls within the lead time on 2026-12-06
    assert seen("2026-12-06T08:00:00+01:00") == 1
