"""What the jobs share: due times, the Task statuses, a patient's end of care, the prescriber's report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.adapters.master_data import MUNICIPALITY_CODE, OLD_MUNICIPALITY_CODE
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule.writer import (
    BASE,
    BUSINESS_STATUS,
    Tally,
    coded,
    has_code,
    local,
    organisation_of,
    provenance,
    write_for,
)
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import Repository
from gateway.workflow.prescribers import Links, route

OPEN = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")
OPEN_QUERY = ",".join(OPEN)
CATEGORY = f"{BASE}/CodeSystem/communication-category"
END_REASON = f"{BASE}/CodeSystem/scheduled-task-end-reason"
END_REASONS = {
    "patient-deceased": "Patienten har avlidit",
    "patient-moved": "Patienten har flyttat till en annan kommun",
    "plan-ended": "Den planerade aktiviteten har avslutats",
    "device-left": "Hjälpmedlet finns inte längre hos patienten",
    "service-rescheduled": "Nästa service är flyttad i registret",
}


def due_of(day: date, services: Services) -> datetime:
    """The end of `day` in the gateway's zone (Europe/Stockholm), as an aware datetime."""
    zone = ZoneInfo(services.settings.local_timezone)
    return datetime.combine(day + timedelta(days=1), time(0), zone) - timedelta(seconds=1)


def start_of(day: date, services: Services) -> datetime:
    """The start of `day` in the gateway's zone, as naive UTC."""
    zone = ZoneInfo(services.settings.local_timezone)
    return as_utc(datetime.combine(day, time(0), zone))


def day_of(value: object) -> date | None:
    """The day of a date or dateTime as written (its first ten characters: a scheduled Task's due date is
    written in the gateway's zone), else None."""
    try:
        return date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def local_day(moment: datetime, services: Services) -> date:
    """The day it is at `moment` (naive UTC) in the gateway's zone."""
    zone = ZoneInfo(services.settings.local_timezone)
    return moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).date()


def fhir_time(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def as_utc(moment: datetime) -> datetime:
    """An aware datetime as the naive UTC the clock gives."""
    return moment.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def overdue_status() -> Json:
    return coded(BUSINESS_STATUS, "overdue", "Försenad")


def is_overdue(task: Json) -> bool:
    return has_code(task.get("businessStatus"), BUSINESS_STATUS, "overdue")


def end_reason(code: str, text: str | None = None) -> Json:
    display = END_REASONS[code]
    return {"coding": [{"system": END_REASON, "code": code, "display": display}], "text": text or display}


def deceased(uow: UnitOfWork, patient: str) -> bool:
    """Whether the patient is recorded as deceased (deceasedBoolean true or a deceasedDateTime)."""
    return deceased_in(uow.repository, patient)


def deceased_in(repository: Repository, patient: str) -> bool:
    if not patient.startswith("Patient/"):
        return False
    stored = repository.current("Patient", patient.removeprefix("Patient/"))
    if stored is None or stored.deleted:
        return False
    resource = stored.json()
    return resource.get("deceasedBoolean") is True or bool(resource.get("deceasedDateTime"))


def report(uow: UnitOfWork, report_id: str, task: Json, requests: list[str], text: str) -> Json | None:
    """A return report (Communication, category returrapport) about `task` to the actual prescriber(s)
    of `requests` (gateway.workflow.prescribers), or None when nobody is found."""
    routing = route(Links(uow), requests)
    if not routing.recipients:
        return None
    result: Json = {
        "resourceType": "Communication",
        "id": report_id,
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": "returrapport", "display": "Återrapport"}]}],
        "subject": task.get("for"),
        "basedOn": [{"reference": r} for r in requests] + [{"reference": f"Task/{task['id']}"}],
        "about": [{"reference": f"Task/{task['id']}"}],
        "sent": to_instant(uow.now),  # the write's time: the jobs' clock sets due dates only
        "recipient": list(routing.recipients.values()),
        "payload": [{"contentString": text}, *({"contentString": n} for n in routing.notes)],
    }
    if task.get("owner"):
        result["sender"] = task["owner"]
    return result


def municipality(resource: Json) -> str | None:
    """The kommunkod of a resource's first address that has one (a Patient's home address first)."""
    for address in resource.get("address") or []:
        for extension in (address or {}).get("extension") or []:
            if extension.get("url") in (MUNICIPALITY_CODE, OLD_MUNICIPALITY_CODE):
                code = (extension.get("valueCoding") or {}).get("code")
                if code:
                    return str(code)
    return None


def unit_municipality(repository: Repository, owner: object) -> str | None:
    """The kommunkod of the organisation of an owning unit (a Task's `owner`), if its address has one."""
    organisation, _ = organisation_of(
        repository, (owner or {}).get("reference") if isinstance(owner, dict) else None
    )
    key = local((organisation or {}).get("reference"))
    unit = repository.current("Organization", key.removeprefix("Organization/")) if key else None
    return municipality(unit.json()) if unit is not None and not unit.deleted else None


def moved(repository: Repository, patient: str, owner: object) -> bool:
    """Whether the patient lives in another municipality than the owning unit's organisation (both
    known by their addresses' kommunkod): the unit no longer cares for the patient at home."""
    held = (
        repository.current("Patient", patient.removeprefix("Patient/"))
        if patient.startswith("Patient/")
        else None
    )
    if held is None or held.deleted:
        return False
    return away(held.json(), unit_municipality(repository, owner))


def away(patient: Json | None, town: str | None) -> bool:
    """Whether the patient's home municipality is known and another than `town` (a unit's kommunkod)."""
    home = municipality(patient) if patient else None
    return home is not None and town is not None and home != town


def lapsed(task: Json, now: datetime) -> bool:
    """An open Task past its due date that is not yet marked overdue."""
    due = ((task.get("restriction") or {}).get("period") or {}).get("end")
    if not due or is_overdue(task):
        return False
    try:
        return as_utc(datetime.fromisoformat(str(due))) < now
    except ValueError:
        return False


def settle(
    services: Services,
    held: Json,
    now: datetime,
    tally: Tally,
    reason: Json | None,
    report_of: Callable[[UnitOfWork, Json], int] | None = None,
) -> None:
    """An open scheduled Task cancelled for `reason` (or because its patient died), else marked overdue
    once past its due date (and `report_of` it, the prescriber's report); with its Provenance."""

    def work(uow: UnitOfWork, organisation: Json | None) -> None:
        stored = uow.current_for_write("Task", str(held["id"]))
        if stored is None or stored.deleted:
            return
        task = stored.json()
        if task.get("status") not in OPEN:
            return
        why = (
            end_reason("patient-deceased")
            if deceased(uow, local((task.get("for") or {}).get("reference")))
            else reason
        )
        changed: Json | None = None
        if why is not None:
            changed = {**task, "status": "cancelled", "statusReason": why}
            tally.cancelled += 1
        elif lapsed(task, now):
            changed = {**task, "businessStatus": overdue_status()}
            tally.updated += 1
            if report_of is not None:
                tally.reports += report_of(uow, changed)
        if changed is None:
            return
        changed.pop("meta", None)
        result = services.write_path.update(uow, "Task", str(task["id"]), changed)
        text = (why or {}).get("text") or "Uppgiften är försenad"
        targets = [f"Task/{task['id']}/_history/{result.stored.version_id}"]
        services.write_path.create(uow, provenance(uow, targets, organisation, str(text)))

    write_for(services, held.get("owner"), work)
