"""Jobs `service-due` and `retirement-review` (finding 8), from the register's maintenance facts on the
Device (extension device-maintenance: `nextService`, `purchaseDate` + `lifetime`), read directly.

- `service-due`: a next service date within `GATEWAY_SERVICE_LEAD_DAYS` (default 14) makes a Task
  (task-code `service-due`) to the device's owner, always (the supplier's name from the register in the
  Swedish description: suppliers get no access to patient data), due at the end of that day; one per
  device and date (a new date from the register is a new Task; the open one for the old date is cancelled
  `service-rescheduled`). Past its date unanswered: `overdue`.
- `retirement-review`: a passed lifetime (purchase date + lifetime in years) makes a Task (task-code
  `retirement-review`) to the owner, once per device and end date, and, when the device is at a patient,
  a return report to the actual prescriber (prescribers are hard to reach: this loop reaches them).

The Devices are selected by `Device?next-service=lt…` and `Device?lifetime-end=lt…` (profiles/): a
Device stored before its lifetime end was, needs `gateway backfill device-lifetime` first."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from urllib.parse import quote

from gateway.adapters.device_register.lifetime import lifetime_end as computed_end
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule import common
from gateway.schedule.lease import Lease
from gateway.schedule.scan import scan
from gateway.schedule.writer import BASE, TASK_CODES, Tally, coded, local, provenance, task_id, write_for
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import Repository

SERVICE = "service-due"
RETIREMENT = "retirement-review"
MAINTENANCE = f"{BASE}/StructureDefinition/device-maintenance"
STATUSES = "active,inactive,unknown"  # not entered-in-error


def maintenance(device: Json) -> dict[str, object]:
    """The device-maintenance sub-extensions by name, with their values."""
    found: dict[str, object] = {}
    for extension in device.get("extension") or []:
        if extension.get("url") != MAINTENANCE:
            continue
        for part in extension.get("extension") or []:
            value = next((v for k, v in part.items() if k.startswith("value")), None)
            if part.get("url") and value is not None:
                found[str(part["url"])] = value
    return found


def lifetime_end(device: Json) -> date | None:
    """Purchase date + lifetime (years): the lifetime-end sub-extension when stored, else computed as the
    register adapter computes what it stores (gateway/adapters/device_register/lifetime.py), so the
    job and the `lifetime-end` SearchParameter agree on the day."""
    facts = maintenance(device)
    stored = common.day_of(facts.get("lifetimeEnd"))
    if stored is not None:
        return stored
    lifetime = facts.get("lifetime")
    return common.day_of(
        computed_end(facts.get("purchaseDate"), lifetime.get("value") if isinstance(lifetime, dict) else None)
    )


def _name(device: Json) -> str:
    units = [str(i.get("value")) for i in device.get("identifier") or [] if i.get("value")]
    kind = str((device.get("type") or {}).get("text") or "hjälpmedel")
    return f"{kind} {', '.join(units)}".strip()


def _task(device: Json, code: str, display: str, key_id: str, text: str, now: datetime) -> Json:
    task: Json = {
        "resourceType": "Task",
        "id": key_id,
        "status": "requested",
        "intent": "order",
        "code": coded(TASK_CODES, code, display),
        "description": text,
        "focus": {"reference": f"Device/{device['id']}"},
        "owner": device["owner"],
        "authoredOn": to_instant(now),
    }
    if device.get("patient"):
        task["for"] = device["patient"]
    return task


def _write(
    services: Services, device: Json, task: Json, report: str | None, now: datetime, tally: Tally
) -> None:
    def work(uow: UnitOfWork, organisation: Json | None) -> None:
        if uow.repository.current("Task", task["id"]) is not None:
            return
        result = services.write_path.update(uow, "Task", task["id"], task)
        tally.created += 1
        targets = [f"Task/{task['id']}/_history/{result.stored.version_id}"]
        if report is not None and device.get("patient"):
            report_id = task_id(services, RETIREMENT, "report", str(task["id"]))
            found = common.report(uow, report_id, task, [f"Device/{device['id']}"], report)
            if found is not None:
                services.write_path.update(uow, "Communication", report_id, found)
                tally.reports += 1
        services.write_path.create(uow, provenance(uow, targets, organisation, str(task["description"])))

    write_for(services, device.get("owner"), work)


def _exists(services: Services, wanted: str) -> bool:
    with services.engine.connect() as connection:
        return Repository(connection).current("Task", wanted) is not None


def _service(services: Services, device: Json, now: datetime, tally: Tally) -> None:
    day = common.day_of(maintenance(device).get("nextService"))
    lead = timedelta(days=services.settings.service_lead_days)
    if day is None or now < common.start_of(day - lead, services):
        return
    wanted = task_id(services, SERVICE, str(device["id"]), day.isoformat())
    if _exists(services, wanted):
        return
    supplier = maintenance(device).get("serviceSupplier")
    text = f"Service av {_name(device)} senast {day.isoformat()}"
    text += f"; serviceleverantör: {supplier}" if supplier else ""
    task = _task(device, SERVICE, "Service av hjälpmedel", wanted, text, now)
    due = common.due_of(day, services)
    task["restriction"] = {"period": {"end": common.fhir_time(due)}}
    if common.as_utc(due) < now:
        task["businessStatus"] = common.overdue_status()
    _write(services, device, task, None, now, tally)


def _retirement(services: Services, device: Json, now: datetime, tally: Tally) -> None:
    end = lifetime_end(device)
    if end is None or now < common.start_of(end, services):
        return
    wanted = task_id(services, RETIREMENT, str(device["id"]), end.isoformat())
    if _exists(services, wanted):
        return
    text = f"Livslängden för {_name(device)} passerades {end.isoformat()}: bedöm om det ska utrangeras"
    task = _task(device, RETIREMENT, "Utrangeringsbedömning", wanted, text, now)
    report = (
        f"Hjälpmedlet {_name(device)} har passerat sin livslängd ({end.isoformat()}); ägaren bedömer om det "
        "ska utrangeras. Ta ställning till om patienten behöver ett nytt."
    )
    _write(services, device, task, report, now, tally)


def _rescheduled(services: Services, now: datetime, tally: Tally) -> None:
    """Open service Tasks: cancelled when the register moved the next service date, else overdue once
    their date passed."""
    query = "code=" + quote(f"{TASK_CODES}|{SERVICE}", safe=":/|") + "&status=" + common.OPEN_QUERY
    for stored in scan(services, "Task", query):
        task = stored.json()
        device = local((task.get("focus") or {}).get("reference"))
        with services.engine.connect() as connection:
            held = Repository(connection).current("Device", device.removeprefix("Device/"))
        day = (
            common.day_of(maintenance(held.json()).get("nextService"))
            if held is not None and not held.deleted
            else None
        )
        due = common.day_of(((task.get("restriction") or {}).get("period") or {}).get("end"))
        reason = None
        if day is not None and due is not None and day > due:
            reason = common.end_reason(
                "service-rescheduled", f"Nästa service är flyttad till {day.isoformat()}"
            )
        if reason is not None or common.lapsed(task, now):
            common.settle(services, task, now, tally, reason)


def run_service(services: Services, now: datetime, lease: Lease | None = None) -> Tally:
    tally = Tally()
    last = common.local_day(now, services) + timedelta(days=services.settings.service_lead_days + 1)
    for stored in scan(services, "Device", f"status={STATUSES}&next-service=lt{last.isoformat()}"):
        device = stored.json()
        tally.seen += 1
        if isinstance(device.get("owner"), dict):
            _service(services, device, now, tally)
        if lease is not None and not lease.renew():
            return tally
    _rescheduled(services, now, tally)
    return tally


def run_retirement(services: Services, now: datetime, lease: Lease | None = None) -> Tally:
    tally = Tally()
    tomorrow = common.local_day(now, services) + timedelta(days=1)
    for stored in scan(services, "Device", f"status={STATUSES}&lifetime-end=lt{tomorrow.isoformat()}"):
        device = stored.json()
        tally.seen += 1
        if isinstance(device.get("owner"), dict):
            _retirement(services, device, now, tally)
        if lease is not None and not lease.renew():
            break
    return tally
