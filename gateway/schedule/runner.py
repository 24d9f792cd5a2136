"""The scheduler of `gateway serve`: a thread that runs a pass of every job every GATEWAY_SCHEDULE_SECONDS
(default 300; 0: none), with the same clock as `gateway schedule run` (GATEWAY_NOW, else the real one).
Several processes may run it: each job's lease lets one of them run it at a time."""

from __future__ import annotations

import logging

from gateway.periodic import Periodic
from gateway.schedule import clock
from gateway.schedule.lease import holder_name
from gateway.schedule.registry import run_pass
from gateway.services import Services

log = logging.getLogger("gateway.schedule")


class Scheduler(Periodic):
    def __init__(self, services: Services) -> None:
        super().__init__("scheduler", services.settings.schedule_seconds, log)
        self.services = services
        self.holder = holder_name()

    def round(self) -> None:
        results = run_pass(self.services, clock.now(self.services.settings), self.holder)
        for name, tally in results.items():
            if tally is not None and tally.total():
                log.info("job %s: %s", name, tally)


def start_scheduler(services: Services) -> Scheduler | None:
    """The scheduler of `gateway serve` (GATEWAY_SCHEDULE_SECONDS above 0)."""
    if services.settings.schedule_seconds <= 0:
        return None
    return Scheduler(services).start()
