"""Job `control-cleaning` (finding 9): every fourth week (configurable per ISO 9999 class; 0: none) a Task
(task-code `control-cleaning`) to the municipal unit that cares for the patient at home, for each
personally prescribed device there (an active DeviceUseStatement delivered for an order line, extension
`device-request`), replacing the paper signing list.

Only a municipal unit that accepted a handover for the patient, or was registered as providing personal
care for the patient, gets them (gateway/schedule/control_units.py says how: never inferred from ZSV
services or the kommunkod, since a Task to a unit discloses the patient to it). Occurrence n is due
`interval * n` days after the later of the delivery and that acceptance, created `control_lead_days`
ahead; after downtime every missed occurrence is created, overdue. The series ends when the device leaves
the patient (its use no longer active: open Tasks are cancelled) or the unit rejects one with the reason
`insats-upphord`.

For a patient with a `final` high-risk RiskAssessment the occurrences not yet made Tasks follow the last one
made at the interval times GATEWAY_RISK_INTERVAL_FACTOR (the next one never later than it would have been,
never before today unless it was due before), each Task with a Swedish `note` saying why
(gateway/schedule/risk_interval.py). Occurrence numbers, and so the Task ids, go on from the last one made."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from itertools import takewhile
from urllib.parse import quote

from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule import common, risk_interval
from gateway.schedule.control_units import first_acceptances, of_patient
from gateway.schedule.lease import Lease
from gateway.schedule.scan import scan
from gateway.schedule.writer import (
    BASE,
    TASK_CODES,
    Tally,
    coded,
    has_code,
    local,
    provenance,
    task_id,
    write_for,
)
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import Repository

NAME = "control-cleaning"
CODE = f"{TASK_CODES}|control-cleaning"
DEVICE_REQUEST = f"{BASE}/StructureDefinition/device-request"
ISO9999 = f"{BASE}/CodeSystem/iso9999"
STOP_REASON = f"{BASE}/CodeSystem/control-stop-reason"
MAX_OCCURRENCES = 1000  # a series of 28-day controls for 76 years: beyond it a date is surely wrong


def interval_days(services: Services, device: Json | None) -> int:
    """The control interval of a device: the longest configured ISO 9999 class prefix of its type
    (GATEWAY_CONTROL_INTERVALS "CLASS=DAYS"), else GATEWAY_CONTROL_INTERVAL_DAYS; 0: no control."""
    classes = [
        str(c.get("code", "")).replace(" ", "")
        for c in ((device or {}).get("type") or {}).get("coding") or []
        if c.get("system") == ISO9999
    ]
    best, days = -1, services.settings.control_interval_days
    for item in services.settings.control_intervals:
        prefix, _, value = item.partition("=")
        prefix = prefix.strip().replace(" ", "")
        if any(c.startswith(prefix) for c in classes) and len(prefix) > best and value.strip().isdigit():
            best, days = len(prefix), int(value)
    return days


def _uses(services: Services, patient: str) -> list[Json]:
    """The patient's active uses of personally prescribed devices."""
    query = "subject=" + quote(patient, safe="/")
    found = []
    for stored in scan(services, "DeviceUseStatement", query):
        use = stored.json()
        if use.get("status") == "active" and any(
            e.get("url") == DEVICE_REQUEST for e in use.get("extension") or []
        ):
            found.append(use)
    return found


def _stopped(task: Json) -> bool:
    return task.get("status") == "rejected" and has_code(
        task.get("statusReason"), STOP_REASON, "insats-upphord"
    )


class _Series:
    """The control Tasks of one device at one patient for one unit."""

    def __init__(
        self,
        services: Services,
        patient: str,
        unit: Json,
        device: str,
        start: date,
        every: int,
        assessment: str | None = None,
    ) -> None:
        self.services, self.patient, self.unit, self.device = services, patient, unit, device
        self.start, self.every, self.assessment = start, every, assessment

    def id(self, number: int) -> str:
        return task_id(
            self.services, NAME, self.device, str(self.unit["reference"]), self.patient, str(number)
        )

    def due_day(self, number: int) -> date:
        return self.start + timedelta(days=self.every * number)

    def last_due(self, now: datetime) -> int:
        """The number of occurrences whose Task should exist by `now` (the ordinary interval)."""
        lead = timedelta(days=self.services.settings.control_lead_days)
        number = 0
        while (
            number < MAX_OCCURRENCES
            and common.start_of(self.due_day(number + 1) - lead, self.services) <= now
        ):
            number += 1
        return number

    def made(self, repository: Repository, number: int) -> Json | None:
        held = repository.current("Task", self.id(number))
        return held.json() if held is not None and not held.deleted else None

    def upcoming(self, repository: Repository, now: datetime) -> Iterator[tuple[int, date]]:
        """(number, due day) of the occurrences not made yet, in order: after the last one made. With
        a confirmed high-risk assessment the interval is shortened: after the last one made (its
        Task's due day), each `shorter(every)` days on; the first never later than the ordinary
        interval would put it, and not before today unless that was before today."""
        last = self.last_due(now)
        while last > 0 and self.made(repository, last) is None:
            last -= 1
        while last < MAX_OCCURRENCES and self.made(repository, last + 1) is not None:
            last += 1
        if not self.assessment:
            for number in range(last + 1, MAX_OCCURRENCES + 1):
                yield number, self.due_day(number)
            return
        anchor = self.start
        if last > 0:
            end = (((self.made(repository, last) or {}).get("restriction") or {}).get("period") or {}).get(
                "end"
            )
            anchor = common.day_of(end) or self.due_day(last)
        short = risk_interval.shorter(self.every, self.services)
        today = common.local_day(now, self.services)
        day = max(anchor + timedelta(days=short), min(today, anchor + timedelta(days=self.every)))
        for number in range(last + 1, MAX_OCCURRENCES + 1):
            yield number, day
            day += timedelta(days=short)

    def missing(self, repository: Repository, now: datetime) -> list[tuple[int, date]]:
        """(number, day) of the occurrences due by `now` (created `control_lead_days` ahead) not made."""
        lead = timedelta(days=self.services.settings.control_lead_days)
        return list(
            takewhile(
                lambda found: common.start_of(found[1] - lead, self.services) <= now,
                self.upcoming(repository, now),
            )
        )

    def task(self, number: int, now: datetime, acceptance: str, day: date | None = None) -> Json:
        ordinary = self.due_day(number)
        day = day or ordinary
        due = common.due_of(day, self.services)
        task: Json = {
            "resourceType": "Task",
            "id": self.id(number),
            "status": "requested",
            "intent": "order",
            "code": coded(TASK_CODES, "control-cleaning", "Kontroll och rengöring av hjälpmedel"),
            "description": (
                f"Kontroll och rengöring av hjälpmedel, tillfälle {number} (senast {day.isoformat()})"
            ),
            "for": {"reference": self.patient},
            "focus": {"reference": self.device},
            "basedOn": [{"reference": acceptance}],
            "owner": self.unit,
            "authoredOn": to_instant(now),
            "restriction": {"period": {"end": common.fhir_time(due)}},
        }
        if self.assessment and day < ordinary:
            task["note"] = [risk_interval.note(self.assessment, ordinary, day)]
        if common.as_utc(due) < now:
            task["businessStatus"] = common.overdue_status()
        return task


def _make(series: _Series, now: datetime, acceptance: str, tally: Tally) -> None:
    """Create the occurrences due by `now` that do not exist yet (those after the last one made)."""
    with series.services.engine.connect() as connection:
        missing = dict(series.missing(Repository(connection), now))
    if not missing:
        return

    def work(uow: UnitOfWork, organisation: Json | None) -> None:
        if common.deceased(uow, series.patient):
            return
        targets = []
        for number in sorted(missing):
            wanted = series.id(number)
            if uow.repository.current("Task", wanted) is not None:
                continue  # another process made it meanwhile
            result = series.services.write_path.update(
                uow, "Task", wanted, series.task(number, now, acceptance, missing[number])
            )
            targets.append(f"Task/{wanted}/_history/{result.stored.version_id}")
            tally.created += 1
        if targets:
            reason = f"Kontroll och rengöring var {series.every}:e dag av {series.device}"
            series.services.write_path.create(uow, provenance(uow, targets, organisation, reason))

    write_for(series.services, series.unit, work)


def _stopped_series(services: Services, patient: str | None = None) -> set[tuple[str, str, str]]:
    """(device, unit, patient) of every series a unit stopped (a control Task rejected `insats-upphord`),
    of `patient` alone when given."""
    query = "code=" + quote(CODE, safe=":/|") + "&status=rejected" + of_patient(patient, "patient")
    found = set()
    for stored in scan(services, "Task", query):
        task = stored.json()
        if _stopped(task):
            key = (
                local((task.get("focus") or {}).get("reference")),
                str((task.get("owner") or {}).get("reference")),
                local((task.get("for") or {}).get("reference")),
            )
            found.add(key)
    return found


def _device(services: Services, reference: str) -> Json | None:
    with services.engine.connect() as connection:
        held = Repository(connection).current("Device", reference.removeprefix("Device/"))
    return held.json() if held is not None and not held.deleted else None


def _close_open(services: Services, now: datetime, tally: Tally) -> None:
    """Open control Tasks: cancelled when the device left the patient, the patient moved to another
    municipality or died; overdue once their due date passed."""
    query = "code=" + quote(CODE, safe=":/|") + "&status=" + common.OPEN_QUERY
    for stored in scan(services, "Task", query):
        task = stored.json()
        patient = local((task.get("for") or {}).get("reference"))
        device = local((task.get("focus") or {}).get("reference"))
        at_patient = any(
            local((u.get("device") or {}).get("reference")) == device for u in _uses(services, patient)
        )
        with services.engine.connect() as connection:
            repository = Repository(connection)
            gone = common.moved(repository, patient, task.get("owner"))
            dead = common.deceased_in(repository, patient)
        reason = None
        if not at_patient:
            reason = common.end_reason("device-left")
        elif gone:
            reason = common.end_reason("patient-moved")
        if reason is None and not dead and not common.lapsed(task, now):
            continue
        common.settle(services, task, now, tally, reason)


def _series(
    services: Services,
    acceptance: tuple[str, Json, date, str],
    stopped: set[tuple[str, str, str]],
    risk: dict[str, str],
) -> Iterator[_Series]:
    """The control series of one acceptance: one per personally prescribed device at the patient's home
    whose class is controlled, unless the unit stopped it or the patient moved away from the unit."""
    patient, unit, since, _ = acceptance
    with services.engine.connect() as connection:
        if common.moved(Repository(connection), patient, unit):
            return
    for use in _uses(services, patient):
        device = local((use.get("device") or {}).get("reference"))
        delivered = common.day_of((use.get("timingPeriod") or {}).get("start")) or since
        if not device or (device, str(unit["reference"]), patient) in stopped:
            continue
        every = interval_days(services, _device(services, device))
        if every > 0:
            yield _Series(services, patient, unit, device, max(since, delivered), every, risk.get(patient))


def next_controls(services: Services, patient: str, now: datetime) -> dict[str, tuple[date, str]]:
    """Device reference → (the due day of its next control at `patient`'s home, what it was read from):
    the earliest open control Task's (the Task), else the next occurrence not made yet (the accepting
    Task or CareTeam); the device list's "next control" (issue 19)."""
    found: dict[str, tuple[date, str]] = {}
    stopped = _stopped_series(services, patient)
    risk = risk_interval.confirmed(services, patient)
    with services.engine.connect() as connection:
        repository = Repository(connection)
        for acceptance in first_acceptances(services, patient):
            for series in _series(services, acceptance, stopped, risk):
                day = next(series.upcoming(repository, now), (0, None))[1]
                if day is not None and (series.device not in found or day < found[series.device][0]):
                    found[series.device] = (day, acceptance[3])
    query = (
        "code=" + quote(CODE, safe=":/|") + "&status=" + common.OPEN_QUERY + of_patient(patient, "patient")
    )
    for stored in scan(services, "Task", query):
        task = stored.json()
        device = local((task.get("focus") or {}).get("reference"))
        due = common.day_of(((task.get("restriction") or {}).get("period") or {}).get("end"))
        if device in found and due is not None and due <= found[device][0]:
            found[device] = (due, f"Task/{stored.res_id}")
    return found


def run(services: Services, now: datetime, lease: Lease | None = None) -> Tally:
    """One pass: make the control Tasks due, then mark and cancel the open ones."""
    tally = Tally()
    stopped = _stopped_series(services)
    risk = risk_interval.confirmed(services)
    for acceptance in first_acceptances(services):
        tally.seen += 1
        for series in _series(services, acceptance, stopped, risk):
            _make(series, now, acceptance[3], tally)
        if lease is not None and not lease.renew():
            return tally
    _close_open(services, now, tally)
    return tally
