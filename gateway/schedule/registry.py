"""The jobs, and one pass of every job: each under its lease (one runner per job at a time), each
catching up on everything that fell due since the last pass (a pass after downtime makes every missed
occurrence)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter

from gateway.schedule import control, deadlines, devices, follow_up, high_risk
from gateway.schedule.lease import Lease, holder_name
from gateway.schedule.writer import Tally
from gateway.services import Services
from gateway.telemetry.metrics import SCHEDULE_DURATION, SCHEDULE_RUNS

log = logging.getLogger("gateway.schedule")


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Services, datetime, Lease | None], Tally]
    description: str


JOBS: tuple[Job, ...] = (
    Job(follow_up.NAME, follow_up.run, "planned follow-ups of orders → Tasks, overdue, reports"),
    Job(control.NAME, control.run, "control and cleaning every fourth week → Tasks, overdue"),
    Job(devices.SERVICE, devices.run_service, "next service dates falling due → service-due Tasks"),
    Job(devices.RETIREMENT, devices.run_retirement, "passed lifetimes → retirement-review Tasks, reports"),
    Job(
        deadlines.NAME,
        deadlines.run,
        "unanswered care-transition Tasks past their deadline → deadline-passed",
    ),
    Job(
        high_risk.NAME,
        high_risk.run,
        "the high-risk rules for the patients time may have changed → RiskAssessment and Flag",
    ),
)


def run_pass(
    services: Services, now: datetime, holder: str | None = None, jobs: tuple[Job, ...] = JOBS
) -> dict[str, Tally | None]:
    """One pass of every job at `now` (the jobs' clock); a job whose lease another process holds is
    skipped (None)."""
    holder = holder or holder_name()
    results: dict[str, Tally | None] = {}
    for job in jobs:
        lease = Lease(services.engine, job.name, holder, services.settings.schedule_lease_seconds)
        if not lease.acquire():
            log.info("job %s: its lease is held by another process; skipped", job.name)
            results[job.name] = None
            SCHEDULE_RUNS.labels(job.name, "skipped").inc()
            continue
        started = perf_counter()
        outcome = "failed"
        try:
            results[job.name] = job.run(services, now, lease)
            outcome = "done"
        except Exception as error:  # the database away for a moment: the other jobs still run
            log.exception("job %s failed", job.name)
            results[job.name] = Tally(errors=[f"{type(error).__name__}: {error}"])
        finally:
            lease.release()
            SCHEDULE_RUNS.labels(job.name, outcome).inc()
            SCHEDULE_DURATION.labels(job.name).observe(perf_counter() - started)
    return results
