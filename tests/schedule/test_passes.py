"""Passes that change nothing: two `gateway schedule run` processes at once (PostgreSQL and SQLite), a
restart, the lease that lets one runner run a job and expires with its process, the thread of `gateway
serve`, and the fake clock refused at start-up with auth on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.cli import CLI_CONTEXT
from gateway.schedule import clock
from gateway.schedule.lease import Lease
from gateway.schedule.registry import Job, run_pass
from gateway.schedule.runner import Scheduler
from gateway.schedule.writer import BASE, Tally
from gateway.security.endpoints import StartupRefused
from gateway.services import Services
from gateway.store.repository import Repository
from tests.adapters.test_bestallningsportalen import golden
from tests.conftest import Database
from tests.schedule.test_follow_up_job import FOLLOW_UP
from tests.workflow.test_follow_up_dates import World
from tests.workflow.test_order_to_return_report import secured

__all__ = ["secured"]
GATEWAY = Path(sys.executable).with_name("gateway")
LATE = "2027-06-01T08:00:00+02:00"  # both follow-ups of order 01 overdue


@pytest.fixture
def world(secured: Services) -> Iterator[World]:
    with TestClient(create_app(secured.settings, services=secured)) as http:
        yield World(secured, http)


def counts(services: Services) -> tuple[int, int]:
    """Follow-up Tasks and return reports stored."""
    searcher = services.write_path.searcher
    with services.engine.connect() as connection:
        tasks = searcher.match(connection, "Task", f"code={FOLLOW_UP}", limit=100)
        reports = searcher.match(connection, "Communication", "category=returrapport", limit=100)
    return len(tasks), len(reports)


def test_two_processes_at_once_and_a_restart_change_nothing(
    world: World, secured: Services, database: Database
) -> None:
    world.order(golden("01"))  # the 21-day follow-up is due 2026-12-11: its Task is made on day 14
    env = {**os.environ, **database.environment(), "COLUMNS": "200"}

    def two_at_once(moment: str) -> None:
        command = [str(GATEWAY), "schedule", "run", "--now", moment]
        runs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            assert "follow-up:" in out

    two_at_once("2026-12-04T08:00:00+01:00")  # day 14: the Task, once
    assert counts(secured) == (1, 0)
    two_at_once("2026-12-08T08:00:00+01:00")  # in between: nothing changes
    assert counts(secured) == (1, 0)
    two_at_once("2026-12-12T08:00:00+01:00")  # day 22: overdue and the prescriber's report, once
    assert counts(secured) == (1, 1)
    two_at_once(LATE)
    assert counts(secured) == (2, 2)
    # a restart: a pass of a new process (in this one) changes nothing
    results = run_pass(secured, clock.parse(LATE))
    assert all(tally is None or tally.total() == 0 for tally in results.values())
    assert counts(secured) == (2, 2)


def test_one_runner_per_job_and_the_lease_expires_with_its_process(database: Database) -> None:
    database.clear()
    first = Lease(database.engine, "a-job", "process-1", seconds=1.0)
    second = Lease(database.engine, "a-job", "process-2", seconds=1.0)
    assert first.acquire()
    assert not second.acquire()
    assert first.renew()
    time.sleep(1.1)  # process 1 died: it renews no more
    assert second.acquire()
    assert not first.renew() or not first.acquire()
    second.release()
    assert first.acquire()


def test_the_thread_of_serve_runs_the_jobs(world: World, secured: Services) -> None:
    world.order(golden("01"))
    services = replace(secured, settings=secured.settings.replace(now=LATE, schedule_seconds=0.2))
    scheduler = Scheduler(services).start()
    try:
        deadline = time.monotonic() + 30
        while counts(secured) != (2, 2) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        scheduler.stop()
    assert counts(secured) == (2, 2)


def test_a_fake_clock_stops_start_up_with_auth_on(database: Database) -> None:
    settings = database.settings(auth=True, now="2027-01-01T00:00:00+01:00")
    with pytest.raises(StartupRefused, match="GATEWAY_ALLOW_FAKE_CLOCK"):
        create_app(settings)
    with pytest.raises(StartupRefused, match="ISO"):
        create_app(database.settings(now="tomorrow"))
    assert clock.now(settings.replace(now="")) is not None


def test_the_worklist_of_a_unit_is_one_search_and_audited(
    world: World, secured: Services, database: Database
) -> None:
    line = world.order(golden("01"))
    run_pass(secured, clock.parse(LATE))
    env = {**os.environ, **database.environment(), "GATEWAY_AUDIT": "on", "COLUMNS": "300"}
    command = [str(GATEWAY), "worklist", "--org", "SE2321000016-LUNG", "--overdue"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("FHIR: Task?owner=Organization/")
    assert "business-status=" in lines[0] and "_sort=due" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["2026-12-11", "2027-05-19"]
    assert lines[-1] == "2 uppgifter, 1 patienter, äldsta förfallodag 2026-12-11"
    patient = world.plan(line)["subject"]["reference"]
    searcher = secured.write_path.searcher
    with secured.engine.connect() as connection:
        events = [s.json() for s in searcher.match(connection, "AuditEvent", f"entity={patient}", limit=500)]
    searches = [e for e in events if e["subtype"][0]["code"] == "search" and e["agent"][0]["name"] == "cli"]
    assert searches and "Task?" in str(searches[-1])


def test_an_unanswered_care_transition_task_past_its_deadline_is_marked_and_announced(
    secured: Services,
) -> None:
    def setup(uow: Any) -> None:
        unit = {"resourceType": "Organization", "id": "kommun-a", "name": "Kommun A"}
        secured.write_path.update(uow, "Organization", "kommun-a", unit)
        patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Tolvansson"}]}
        secured.write_path.update(uow, "Patient", "p1", patient)
        task = {
            "resourceType": "Task",
            "id": "handover-1",
            "status": "requested",
            "intent": "order",
            "businessStatus": {"text": "Väntar på svar"},
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": {"reference": "Patient/p1"},
            "owner": {"reference": "Organization/kommun-a"},
            "restriction": {"period": {"end": "2026-12-01T12:00:00+01:00"}},
        }
        secured.write_path.update(uow, "Task", "handover-1", task)

    secured.write_path.run(CLI_CONTEXT, setup)

    def marked(moment: str) -> int:
        tally = run_pass(secured, clock.parse(moment))["care-transition-deadline"]
        assert tally is not None
        return tally.total()

    assert marked("2026-12-01T11:00:00+01:00") == 0
    assert marked("2026-12-01T13:00:00+01:00") == 1
    assert marked("2026-12-02T13:00:00+01:00") == 0
    with secured.engine.connect() as connection:
        task = Repository(connection).current("Task", "handover-1")
        assert task is not None
        topic = secured.topics[f"{BASE}/SubscriptionTopic/care-transition-deadline"]
        assert topic.triggered(connection, "Task", "handover-1", 2, "PUT")
    status = task.json()["businessStatus"]
    assert status["text"] == "Väntar på svar"
    assert status["coding"][0]["code"] == "deadline-passed"


def test_a_failing_job_does_not_stop_the_others(database: Database) -> None:
    database.clear()
    services = Services.build(database.settings(), engine=database.engine)
    ran: list[str] = []

    def broken(*_: Any) -> Tally:
        raise RuntimeError("the database went away")

    def fine(*_: Any) -> Tally:
        ran.append("fine")
        return Tally()

    jobs = (Job("broken", broken, ""), Job("fine", fine, ""))
    results = run_pass(services, clock.parse(LATE), jobs=jobs)
    assert ran == ["fine"]
    assert results["broken"] is not None and results["broken"].errors == [
        "RuntimeError: the database went away"
    ]
    assert Lease(database.engine, "broken", "another", 60).acquire()  # released despite the failure
    services.close()


def test_schedule_run_refuses_gateway_now_with_auth_on_but_takes_an_explicit_now(database: Database) -> None:
    if database.backend == "postgresql":
        pytest.skip("the clock's check is the same on every database: run once, on SQLite")
    database.clear()
    env = {**os.environ, **database.environment(), "GATEWAY_NOW": "2027-01-01T00:00:00+01:00"}
    refused = subprocess.run(
        [str(GATEWAY), "schedule", "run"], env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 2
    assert "GATEWAY_ALLOW_FAKE_CLOCK" in refused.stderr
    allowed = subprocess.run(
        [str(GATEWAY), "schedule", "run"],
        env={**env, "GATEWAY_ALLOW_FAKE_CLOCK": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "follow-up: 0 created" in allowed.stdout
