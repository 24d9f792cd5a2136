"""The scheduler's pass (issue 18, docs/scheduling.md): seconds per pass of every job and the writes
made, over a store of BENCH_PLANS follow-up plans (each an order line and a CarePlan with two planned
follow-ups, one due within the lead time) and BENCH_DEVICES devices (each with a next service date far
ahead and a lifetime not yet passed), then a second pass (the same day: it looks at what was written since
the first began, less a margin of ten minutes: the seed and the first pass's Tasks) and a third with
nothing written since (the idle pass: what a pass of `gateway serve` costs when nothing happens; the
margin set to a second, as nothing is still committing).

    .venv/bin/python -m bench.schedule            # SQLite in a temporary directory
    SCHEDULE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test SCHEDULE_SCHEMA=bench_schedule \\
        .venv/bin/python -m bench.schedule

Environment: BENCH_PLANS (default 2000), BENCH_DEVICES (default 10000). Prints a `RESULT {json}` line."""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta
from typing import Any

from bench.common import migrated
from gateway.config import Settings
from gateway.hooks import Principal, RequestContext
from gateway.schedule import changes
from gateway.schedule.registry import JOBS, run_pass
from gateway.schedule.writer import HSA
from gateway.search.dates import utc_now
from gateway.services import Services

PLANS = int(os.environ.get("BENCH_PLANS", "2000"))
DEVICES = int(os.environ.get("BENCH_DEVICES", "10000"))
BATCH = 200
CLI = RequestContext(principal=Principal(client_id="cli", scopes=frozenset({"system/*.cruds"})))
CATEGORY = {
    "system": "https://fhir.home-device-gateway.se/CodeSystem/careplan-category",
    "code": "device-follow-up",
}
MAINTENANCE = "https://fhir.home-device-gateway.se/StructureDefinition/device-maintenance"


def settings() -> Settings:
    url, schema = migrated("SCHEDULE", "schedule")
    return Settings(database_url=url, database_schema=schema, auth=False, audit=False, notify=False)


def plan(number: int, today: date) -> list[dict[str, Any]]:
    patient = {"resourceType": "Patient", "id": f"p{number}", "name": [{"family": f"Bench{number}"}]}
    request = {
        "resourceType": "DeviceRequest",
        "id": f"dr{number}",
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"text": "Syrgaskoncentrator"},
        "subject": {"reference": f"Patient/p{number}"},
        "requester": {"reference": "Organization/clinic"},
    }
    activities: list[dict[str, Any]] = [{"reference": {"reference": f"DeviceRequest/dr{number}"}}]
    for days, name in ((3, "uppfoljning-21-aterbesok"), (180, "uppfoljning-180-telefon")):
        activities.append(
            {
                "id": name,
                "detail": {
                    "kind": "Appointment",
                    "status": "not-started",
                    "scheduledPeriod": {"start": (today + timedelta(days=days)).isoformat()},
                    "performer": [{"reference": "Organization/clinic"}],
                    "description": "Uppföljning",
                },
            }
        )
    care_plan = {
        "resourceType": "CarePlan",
        "id": f"cp{number}",
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [CATEGORY]}],
        "subject": {"reference": f"Patient/p{number}"},
        "author": {"reference": "Organization/clinic"},
        "activity": activities,
    }
    return [patient, request, care_plan]


def device(number: int, today: date) -> dict[str, Any]:
    facts = [
        {"url": "nextService", "valueDate": (today + timedelta(days=200)).isoformat()},
        {"url": "purchaseDate", "valueDate": (today - timedelta(days=400)).isoformat()},
        {
            "url": "lifetime",
            "valueDuration": {
                "value": 7,
                "unit": "years",
                "system": "http://unitsofmeasure.org",
                "code": "a",
            },
        },
    ]
    return {
        "resourceType": "Device",
        "id": f"d{number}",
        "status": "active",
        "owner": {"reference": "Organization/owner"},
        "extension": [{"url": MAINTENANCE, "extension": facts}],
    }


def seed(services: Services, today: date) -> float:
    started = time.perf_counter()
    write = services.write_path

    def organisations(uow: Any) -> None:
        for res_id, hsa in (("clinic", "SE2321000016-BCLI"), ("owner", "SE2321000016-BOWN")):
            unit = {
                "resourceType": "Organization",
                "id": res_id,
                "identifier": [{"system": HSA, "value": hsa}],
            }
            write.update(uow, "Organization", res_id, unit)

    write.run(CLI, organisations)
    resources = [r for n in range(PLANS) for r in plan(n, today)] + [device(n, today) for n in range(DEVICES)]
    for start in range(0, len(resources), BATCH):
        chunk = resources[start : start + BATCH]

        def work(uow: Any, chunk: list[dict[str, Any]] = chunk) -> None:
            for resource in chunk:
                write.update(uow, resource["resourceType"], resource["id"], resource)

        write.run(CLI, work)
    return time.perf_counter() - started


def timed_pass(services: Services) -> dict[str, Any]:
    """One pass of every job, each timed on its own."""
    now = utc_now()
    jobs: dict[str, Any] = {}
    for job in JOBS:
        started = time.perf_counter()
        tally = run_pass(services, now, jobs=(job,))[job.name]
        jobs[job.name] = {
            "seconds": round(time.perf_counter() - started, 2),
            "writes": tally.total() if tally else None,
        }
    return {"seconds": round(sum(job["seconds"] for job in jobs.values()), 2), "jobs": jobs}


def main() -> None:
    config = settings()
    services = Services.build(config)
    today = utc_now().date()
    seeded = seed(services, today)
    first = timed_pass(services)  # the day's first pass: whole
    second = timed_pass(services)  # the same day: what was written since the first began (less the margin)
    changes.MARGIN = timedelta(seconds=1)  # here passes follow each other: no write is still committing
    idle = timed_pass(services)  # nothing written since the second began
    result = {
        "database": "postgresql" if config.database_url.startswith("postgresql") else "sqlite",
        "plans": PLANS,
        "devices": DEVICES,
        "seed_seconds": round(seeded, 1),
        "first_pass": first,
        "second_pass": second,
        "idle_pass": idle,
    }
    services.close()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
