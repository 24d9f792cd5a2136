"""The scheduler's lease taken by several processes at the same moment (each `gateway serve` runs the
scheduler's thread, gateway/schedule/lease.py): exactly one holds it, whether the job's row is new, free
or held by a process that died (its lease expired). Two real processes' passes: test_passes.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gateway.schedule.lease import Lease, holder_name
from tests.conftest import Database

AT_ONCE = 6


def taken_at_once(database: Database, job: str, seconds: float = 60.0) -> list[Lease]:
    """The leases of `AT_ONCE` holders that tried to take `job` at the same moment and got it."""
    leases = [Lease(database.engine, job, holder_name(), seconds) for _ in range(AT_ONCE)]
    barrier = threading.Barrier(AT_ONCE)

    def acquire(lease: Lease) -> bool:
        barrier.wait(timeout=30)
        return lease.acquire()

    with ThreadPoolExecutor(AT_ONCE) as pool:
        got = list(pool.map(acquire, leases))
    return [lease for lease, won in zip(leases, got, strict=True) if won]


def test_one_holder_when_all_take_a_new_free_or_expired_lease_at_once(database: Database) -> None:
    database.clear()
    for round_ in range(5):
        [holder] = taken_at_once(database, f"job-{round_}")  # the job's row made by one of them
        holder.release()
        [holder] = taken_at_once(database, f"job-{round_}")  # a free row
        assert not Lease(database.engine, f"job-{round_}", holder_name(), 60).acquire()
    [dying] = taken_at_once(database, "short", seconds=1.0)
    time.sleep(1.1)  # its process died: it renews no more
    [taker] = taken_at_once(database, "short")
    assert taker.holder != dying.holder
    dying._renewed = 0.0  # its next renew goes to the database
    assert not dying.renew()  # taken over: the old holder learns it lost the job
