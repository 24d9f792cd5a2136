"""Changes-only passes: a job that looked at everything in a complete pass earlier the same day (the jobs'
clock, in the gateway's zone) looks next at what changed since, read from its lease row (`done_at`, the
real clock, when that pass started; `done_mark`, its settings and the jobs' clock then). A whole pass runs
when there is none on record, the settings differ, the jobs' clock moved back, or the day changed: so
every day's first pass looks at everything, which also catches what a changes-only pass cannot see (a
write whose transaction outlasted MARGIN)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.schedule import clock, common
from gateway.schedule.lease import Lease
from gateway.services import Services

MARGIN = timedelta(minutes=10)  # a write stamped before a pass started may commit after it read
NOW = " now="


@dataclass(frozen=True)
class Since:
    """The complete pass to go on from: `written` the real time from which writes count as changes (its
    start less MARGIN), `now` the jobs' clock it ran at."""

    written: datetime
    now: datetime


def since(lease: Lease | None, services: Services, now: datetime, settings: str) -> Since | None:
    """The earlier complete pass of the same day with the same `settings`, else None (a whole pass)."""
    if lease is None:
        return None
    started, mark = lease.last_done()
    stated, _, moment = (mark or "").rpartition(NOW)
    if started is None or stated != settings:
        return None
    try:
        previous = clock.parse(moment)
    except ValueError:
        return None
    if previous > now or common.local_day(previous, services) != common.local_day(now, services):
        return None
    return Since(started - MARGIN, previous)


def record(lease: Lease | None, started: datetime, now: datetime, settings: str) -> None:
    """A complete pass that started at `started` (the real clock) at the jobs' `now`, while the lease is
    still ours."""
    if lease is not None:
        lease.done(started, f"{settings}{NOW}{now.isoformat()}")
