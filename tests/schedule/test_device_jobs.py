"""Service and retirement (issue 18, finding 8): the register delivers the concentrator (next service
2027-01-10, bought 2023-05-02 with a lifetime of 7 years); with the clock set, the owner gets a
`service-due` Task 14 days ahead (the supplier named), overdue after the date, cancelled when the register
moves the date; a passed lifetime gives a `retirement-review` Task and a report to the prescriber. An
unrelated municipality sees none of it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.device_register.lifetime import lifetime_end as adapter_lifetime_end
from gateway.app import create_app
from gateway.schedule import clock
from gateway.schedule.devices import lifetime_end
from gateway.schedule.registry import run_pass
from gateway.schedule.writer import TASK_CODES
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import changed
from tests.security.conftest import bearer
from tests.workflow.test_follow_up_dates import World
from tests.workflow.test_order_to_return_report import client_for, read, search, secured

__all__ = ["secured"]


@pytest.fixture
def world(secured: Services) -> Iterator[World]:
    with TestClient(create_app(secured.settings, services=secured)) as http:
        yield World(secured, http)


def at(services: Services, moment: str, job: str) -> int:
    tally = run_pass(services, clock.parse(moment))[job]
    assert tally is not None
    return tally.total()


def stored(services: Services, res_type: str, query: str) -> list[dict[str, Any]]:
    with services.engine.connect() as connection:
        return [s.json() for s in services.write_path.searcher.match(connection, res_type, query, limit=50)]


def test_service_due_and_retirement_review(world: World, secured: Services) -> None:
    line = world.order(golden("01"))
    world.rows(changed("02", leverantor_service="Acme Service AB"))
    assert at(secured, "2026-12-26T12:00:00+01:00", "service-due") == 0
    assert at(secured, "2026-12-27T08:00:00+01:00", "service-due") == 1
    [task] = stored(secured, "Task", f"code={TASK_CODES}|service-due")
    [device] = stored(secured, "Device", f"_id={task['focus']['reference'].split('/')[1]}")
    assert task["owner"] == device["owner"]
    assert task["description"] == (
        "Service av Syrgaskoncentrator stationär MAH-000123 senast 2027-01-10; "
        "serviceleverantör: Acme Service AB"
    )
    assert task["restriction"]["period"]["end"] == "2027-01-10T23:59:59+01:00"
    assert at(secured, "2026-12-28T08:00:00+01:00", "service-due") == 0
    assert at(secured, "2027-01-11T08:00:00+01:00", "service-due") == 1  # overdue
    [task] = stored(secured, "Task", f"code={TASK_CODES}|service-due")
    assert task["businessStatus"]["coding"][0]["code"] == "overdue"

    # the register moves the next service: the open Task is cancelled, the next one comes in time
    world.rows(changed("02", leverantor_service="Acme Service AB", nasta_service="2028-01-10"))
    assert at(secured, "2027-01-12T08:00:00+01:00", "service-due") == 1
    [task] = stored(secured, "Task", f"code={TASK_CODES}|service-due")
    assert task["status"] == "cancelled"
    assert task["statusReason"]["coding"][0]["code"] == "service-rescheduled"

    # the lifetime (7 years from 2023-05-02) passes: a review Task to the owner, a report to the prescriber
    assert lifetime_end(device).isoformat() == "2030-05-02"  # type: ignore[union-attr]
    assert at(secured, "2030-05-01T12:00:00+02:00", "retirement-review") == 0
    assert at(secured, "2030-05-02T08:00:00+02:00", "retirement-review") == 2
    assert at(secured, "2030-05-03T08:00:00+02:00", "retirement-review") == 0
    [review] = stored(secured, "Task", f"code={TASK_CODES}|retirement-review")
    assert review["owner"] == device["owner"]
    assert review["description"].startswith("Livslängden för Syrgaskoncentrator stationär MAH-000123")
    [report] = stored(secured, "Communication", f"based-on=Task/{review['id']}")
    world.http.headers.update(world.lung)
    assert report["recipient"][0]["reference"] == read(world.http, line)["requester"]["reference"]

    other = client_for(secured, "kommun-b", "SE2321000016-KOMMUNB", "system/*.rus")
    world.http.headers.update(bearer(other.token(world.http, "system/*.rus")))
    assert search(world.http, "Task", focus=task["focus"]["reference"]) == []
    assert search(world.http, "Communication", **{"based-on": f"Task/{review['id']}"}) == []


def test_the_job_computes_a_lifetime_end_as_the_register_adapter_stores_it() -> None:
    """A Device without the stored lifetime end (written before the backfill): the job's day is the one
    the adapter would store and the `lifetime-end` SearchParameter would index (whole months, the day
    clamped to the month's last), not a count of days."""
    maintenance = "https://fhir.home-device-gateway.se/StructureDefinition/device-maintenance"
    facts = [
        {"url": "purchaseDate", "valueDate": "2020-08-31"},
        {"url": "lifetime", "valueDuration": {"value": 2.5, "unit": "years"}},
    ]
    device = {"resourceType": "Device", "extension": [{"url": maintenance, "extension": facts}]}
    assert lifetime_end(device) == date(2023, 2, 28)
    assert lifetime_end(device) == date.fromisoformat(str(adapter_lifetime_end("2020-08-31", 2.5)))
