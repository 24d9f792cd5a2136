"""The scheduler of `gateway serve`: a thread that runs a pass of every job every GATEWAY_SCHEDULE_SECONDS
(default 300; 0: none), with the same clock as `gateway schedule run` (GATEWAY_NOW, else the real one).
Several processes may run it: each job's lease lets one of them run it at a time."""

from __future__ import annotations

import logging
import threading

from gateway.schedule import clock
from gateway.schedule.lease import holder_name
from gateway.schedule.registry import run_pass
from gateway.services import Services

log = logging.getLogger("gateway.schedule")


class Scheduler:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.holder = holder_name()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> Scheduler:
        self.thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the pass in progress, waiting for it `timeout` seconds at most (a job cut short
        leaves its work to the next pass: its transaction is undone, its lease runs out)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                results = run_pass(self.services, clock.now(self.services.settings), self.holder)
                for name, tally in results.items():
                    if tally is not None and tally.total():
                        log.info("job %s: %s", name, tally)
            except Exception:  # the database away for a moment: the next pass tries again
                log.exception("The scheduler's pass failed")
            self.stopping.wait(self.services.settings.schedule_seconds)


def start_scheduler(services: Services) -> Scheduler | None:
    """The scheduler of `gateway serve` (GATEWAY_SCHEDULE_SECONDS above 0)."""
    if services.settings.schedule_seconds <= 0:
        return None
    return Scheduler(services).start()
