"""`gateway worklist --org HSA-ID` (issue 18, docs/scheduling.md "Worklists") over Tasks of every scheduled
kind written directly: those owned by the organisation, its HealthcareServices and its PractitionerRoles
are listed and counted, those of another organisation not; the oldest due date ignores Tasks without one;
a unit with more open Tasks than a page is listed whole, page by page, each page audited."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import CLI_CONTEXT
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule.writer import BUSINESS_STATUS, HSA, TASK_CODES
from gateway.services import Services
from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")
UNIT = "SE2321000016-WLST"
OTHER = "SE2321000016-ANNAN"


@pytest.fixture
def services(database: Database) -> Iterator[Services]:
    database.clear()
    built = Services.build(database.settings(), engine=database.engine)
    yield built
    built.close()


def task(
    res_id: str, code: str, owner: str, patient: str | None, due: str | None, overdue: bool = False
) -> Json:
    resource: Json = {
        "resourceType": "Task",
        "id": res_id,
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODES, "code": code}]},
        "owner": {"reference": owner},
        "description": f"Uppgift {res_id}",
    }
    if patient is not None:
        resource["for"] = {"reference": patient}
    if due is not None:
        resource["restriction"] = {"period": {"end": due}}
    if overdue:
        resource["businessStatus"] = {"coding": [{"system": BUSINESS_STATUS, "code": "overdue"}]}
    return resource


def write(services: Services, resources: list[Json]) -> None:
    def work(uow: UnitOfWork) -> None:
        for resource in resources:
            services.write_path.update(uow, resource["resourceType"], resource["id"], resource)

    services.write_path.run(CLI_CONTEXT, work)


def units() -> list[Json]:
    """Two organisations, the first with a HealthcareService, a PractitionerRole and two Devices (one at
    Patient/p2, one in stock); four patients."""
    organisations: list[Json] = [
        {"resourceType": "Organization", "id": res_id, "identifier": [{"system": HSA, "value": hsa}]}
        for res_id, hsa in (("unit", UNIT), ("other", OTHER))
    ]
    service = {
        "resourceType": "HealthcareService",
        "id": "unit-home",
        "providedBy": {"reference": "Organization/unit"},
    }
    role = {
        "resourceType": "PractitionerRole",
        "id": "unit-nurse",
        "organization": {"reference": "Organization/unit"},
    }
    patients: list[Json] = [{"resourceType": "Patient", "id": f"p{n}"} for n in range(1, 5)]
    devices: list[Json] = [
        {"resourceType": "Device", "id": "at-home", "owner": {"reference": "Organization/unit"}},
        {"resourceType": "Device", "id": "in-stock", "owner": {"reference": "Organization/unit"}},
    ]
    devices[0]["patient"] = {"reference": "Patient/p2"}
    return [*organisations, service, role, *patients, *devices]


def fault(res_id: str, device: str, patient: str | None) -> Json:
    """A fault report on `device` (owner and patient as the rule requires: the Device's), no due date."""
    report = task(res_id, "fault-report", "Organization/unit", patient, None)
    return {**report, "focus": {"reference": device}, "requester": {"reference": "Organization/unit"}}


def worklist(database: Database, *options: str, **environment: str) -> list[str]:
    env = {**os.environ, **database.environment(), "COLUMNS": "300", **environment}
    command = [str(GATEWAY), "worklist", "--org", UNIT, *options]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_the_worklist_holds_every_kind_of_the_organisation_and_its_roles(
    services: Services, database: Database
) -> None:
    write(
        services,
        [
            *units(),
            task(
                "control",
                "control-cleaning",
                "HealthcareService/unit-home",
                "Patient/p1",
                "2027-02-01T23:59:59+01:00",
            ),
            fault("fault", "Device/at-home", "Patient/p2"),
            fault("fault-in-stock", "Device/in-stock", None),  # no patient either
            # reassigned within the organisation, to a nurse of it: the oldest due date
            task(
                "follow",
                "follow-up",
                "PractitionerRole/unit-nurse",
                "Patient/p3",
                "2027-01-15T23:59:59+01:00",
            ),
            task("foreign", "follow-up", "Organization/other", "Patient/p4", "2026-01-01T23:59:59+01:00"),
            {
                **task("done", "follow-up", "Organization/unit", "Patient/p4", "2026-06-01T23:59:59+02:00"),
                "status": "completed",
            },
        ],
    )
    lines = worklist(database)
    assert lines[0].startswith("FHIR: Task?owner=Organization/unit,HealthcareService/unit-home,")
    assert "PractitionerRole/unit-nurse" in lines[0]
    listed = [re.findall(r"Task/[\w-]+", line)[0] for line in lines[1:-1]]
    assert sorted(listed[:2]) == ["Task/fault", "Task/fault-in-stock"]
    assert listed[2:] == ["Task/follow", "Task/control"]
    # oldest due first, those without a due date before them
    assert [line.split()[0] for line in lines[1:-1]] == ["-", "-", "2027-01-15", "2027-02-01"]
    assert "Task/foreign" not in "\n".join(lines) and "Patient/p4" not in "\n".join(lines)
    assert lines[-1] == "4 uppgifter, 3 patienter, äldsta förfallodag 2027-01-15"


def test_a_unit_with_more_tasks_than_a_page_gets_them_all_each_page_audited(
    services: Services, database: Database
) -> None:
    follow_ups = [
        task(
            f"f{n}",
            "follow-up",
            "Organization/unit",
            f"Patient/p{n % 3 + 1}",
            f"2027-03-{n + 10:02d}T23:59:59+01:00",
            True,
        )
        for n in range(7)
    ]
    write(services, [*units(), *follow_ups])
    lines = worklist(database, "--overdue", GATEWAY_MAX_PAGE_SIZE="2", GATEWAY_AUDIT="on")
    assert "_count=2" in lines[0]
    assert [line.split()[0] for line in lines[1:-1]] == [f"2027-03-{n + 10:02d}" for n in range(7)]
    assert all(line.endswith(f"FÖRSENAD  Uppgift f{n}") for n, line in enumerate(lines[1:-1]))
    assert lines[-1] == "7 uppgifter, 3 patienter, äldsta förfallodag 2027-03-10"
    # the last page (f6 alone, Patient/p1) is audited as its own search, with its cursor, naming its patient
    with services.engine.connect() as connection:
        events = [
            stored.json()
            for stored in services.write_path.searcher.match(
                connection, "AuditEvent", "entity=Task/f6", limit=10
            )
        ]
    [event] = [e for e in events if e["subtype"][0]["code"] == "search"]
    assert event["agent"][0]["name"] == "cli"
    assert {"Patient/p1", "Task/f6"} <= {
        entity["what"]["reference"] for entity in event["entity"] if "what" in entity
    }
    assert any("_cursor=" in entity.get("description", "") for entity in event["entity"])
