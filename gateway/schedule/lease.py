"""One runner per job at a time: a row per job in `schedule_lease`, held by one process until
`lease_until` (the real clock, never the jobs' clock), renewed while the job runs. A process that dies
stops renewing, so its lease expires and another process takes the job over; a process that finds the
lease held skips the job this pass (its Tasks would be the same: ids are deterministic). The row also
keeps when the job's last complete pass started and what it depended on (`last_done`, `done`), for a
job that reads only what changed since (the high-risk job)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.search.dates import utc_now
from gateway.store.database import WRITE_OPTION
from gateway.store.tables import ScheduleLease

LEASE = cast(Table, ScheduleLease.__table__)


def holder_name() -> str:
    """This process, uniquely: host, pid and a random part (a restarted pid is another holder)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """The lease of one job for one holder."""

    def __init__(self, engine: Engine, job: str, holder: str, seconds: float) -> None:
        self.engine = engine
        self.job = job
        self.holder = holder
        self.seconds = max(seconds, 1.0)
        self._renewed = 0.0

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction from its start (SQLite: BEGIN IMMEDIATE), committed at the end."""
        with (
            self.engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
            connection.begin(),
        ):
            yield connection

    def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours."""
        now = utc_now()
        with self._write() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            row = dialect.insert(LEASE).values(job=self.job, holder=None, lease_until=None)
            connection.execute(row.on_conflict_do_nothing(index_elements=["job"]))
            taken = connection.execute(
                update(LEASE)
                .where(
                    LEASE.c.job == self.job,
                    or_(
                        LEASE.c.lease_until.is_(None),
                        LEASE.c.lease_until < now,
                        LEASE.c.holder == self.holder,
                    ),
                )
                .values(holder=self.holder, lease_until=now + timedelta(seconds=self.seconds))
            )
        if taken.rowcount == 1:
            self._renewed = time.monotonic()
            return True
        return False

    def renew(self) -> bool:
        """Extend the lease when a third of it has passed; False when it was lost (taken over)."""
        if time.monotonic() - self._renewed < self.seconds / 3:
            return True
        with self._write() as connection:
            renewed = connection.execute(
                update(LEASE)
                .where(LEASE.c.job == self.job, LEASE.c.holder == self.holder)
                .values(lease_until=utc_now() + timedelta(seconds=self.seconds))
            )
        self._renewed = time.monotonic()
        return renewed.rowcount == 1

    def last_done(self) -> tuple[datetime | None, str | None]:
        """When the job's last complete pass started (UTC, the real clock) and its mark; None, None if
        it never completed one."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(LEASE.c.done_at, LEASE.c.done_mark).where(LEASE.c.job == self.job)
            ).first()
        return (row[0], row[1]) if row is not None else (None, None)

    def done(self, started: datetime, mark: str | None) -> bool:
        """Record a complete pass that started at `started`, while the lease is ours; False if lost."""
        with self._write() as connection:
            recorded = connection.execute(
                update(LEASE)
                .where(LEASE.c.job == self.job, LEASE.c.holder == self.holder)
                .values(done_at=started, done_mark=mark)
            )
        return recorded.rowcount == 1

    def release(self) -> None:
        with self._write() as connection:
            connection.execute(
                update(LEASE)
                .where(LEASE.c.job == self.job, LEASE.c.holder == self.holder)
                .values(holder=None, lease_until=None)
            )
