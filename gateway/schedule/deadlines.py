"""Job `care-transition-deadline`: a care-transition Task (care-transition-task: a handover, an
inskrivningsmeddelande, utskrivningsklar, a SIP call) still unanswered (`requested` or `received`) past
its deadline (`restriction.period.end`) gets businessStatus `deadline-passed` (CodeSystem
task-business-status), which the subscription topic `care-transition-deadline` announces. The text the
adapter gave stays; the Task is not otherwise changed."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule import common
from gateway.schedule.lease import Lease
from gateway.schedule.scan import scan
from gateway.schedule.writer import BASE, BUSINESS_STATUS, Tally, has_code, provenance, write_for
from gateway.search.dates import to_instant
from gateway.services import Services

NAME = "care-transition-deadline"
SYSTEM = f"{BASE}/CodeSystem/care-transition-task"
UNANSWERED = ("requested", "received")
PASSED = {"system": BUSINESS_STATUS, "code": "deadline-passed", "display": "Svarstiden har passerat"}


def _passed(task: Json) -> bool:
    return has_code(task.get("businessStatus"), BUSINESS_STATUS, "deadline-passed")


def _mark(services: Services, held: Json, now: datetime, tally: Tally) -> None:
    def work(uow: UnitOfWork, organisation: Json | None) -> None:
        stored = uow.current_for_write("Task", str(held["id"]))
        if stored is None or stored.deleted:
            return
        task = stored.json()
        if task.get("status") not in UNANSWERED or _passed(task):
            return
        status = dict(task.get("businessStatus") or {})
        status["coding"] = [*(status.get("coding") or []), PASSED]
        status.setdefault("text", PASSED["display"])
        changed = {k: v for k, v in task.items() if k != "meta"} | {"businessStatus": status}
        result = services.write_path.update(uow, "Task", stored.res_id, changed)
        tally.updated += 1
        targets = [f"Task/{stored.res_id}/_history/{result.stored.version_id}"]
        reason = (
            f"Svarstiden passerade {task['restriction']['period']['end']} (konstaterat {to_instant(now)})"
        )
        services.write_path.create(uow, provenance(uow, targets, organisation, reason))

    write_for(services, held.get("owner"), work)


def run(services: Services, now: datetime, lease: Lease | None = None) -> Tally:
    """One pass: mark every unanswered care-transition Task whose deadline passed."""
    tally = Tally()
    query = "code=" + quote(f"{SYSTEM}|", safe=":/|") + "&status=" + ",".join(UNANSWERED) + "&due=lt"
    query += quote(to_instant(now), safe=":")
    for stored in scan(services, "Task", query):
        task = stored.json()
        tally.seen += 1
        if not _passed(task) and common.lapsed({**task, "businessStatus": None}, now):
            _mark(services, task, now, tally)
        if lease is not None and not lease.renew():
            break
    return tally
