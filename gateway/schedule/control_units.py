"""Who receives control-and-cleaning Tasks (job `control-cleaning`, gateway/schedule/control.py): only a
municipal unit (its Organization's HSA-id carries a municipality's organisation number, or the provider
of its HealthcareService: gateway/workflow/recalls.municipal) that accepted (completed) a handover Task
for the patient, or completed a `personal-care` Task for the patient (which only the municipality itself
or a region-wide client may write: gateway/workflow/scheduled_tasks.personal_care_registered), or that
takes part in an active CareTeam of category `personal-care` a region-wide client wrote for the patient
(careteam-category; from its `period.start`). Never inferred from ZSV services or the kommunkod, since a
Task to a unit discloses the patient to it. The day a Task acceptance counts from is the day the gateway
first stored it completed: a client's `lastModified` cannot backdate a series, a later note cannot move
it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from urllib.parse import quote

from gateway.model.types import Json
from gateway.schedule import common
from gateway.schedule.scan import scan
from gateway.schedule.writer import BASE, TASK_CODES, local
from gateway.services import Services
from gateway.store.repository import Repository, Stored
from gateway.workflow.recalls import municipal

HANDOVER = f"{BASE}/CodeSystem/care-transition-task|handover"
PERSONAL_CARE = f"{TASK_CODES}|personal-care"
CARE_TEAM = f"{BASE}/CodeSystem/careteam-category|personal-care"
UNIT_TYPES = ("Organization/", "HealthcareService/")
Acceptance = tuple[str, Json, date, str]  # (patient, unit, since, the accepting Task or CareTeam)


def of_patient(patient: str | None, parameter: str) -> str:
    return f"&{parameter}=" + quote(patient, safe="/") if patient else ""


def _acceptances(services: Services, patient: str | None) -> Iterator[Acceptance]:
    """(patient, unit, since, acceptance Task) of every completed handover or personal-care Task (of
    `patient`, when given) whose owner is a municipal unit; `since` the day the gateway first stored it
    completed (never a client's `lastModified`, and a later note does not move it)."""
    for code in (HANDOVER, PERSONAL_CARE):
        query = "code=" + quote(code, safe=":/|") + "&status=completed" + of_patient(patient, "patient")
        for stored in scan(services, "Task", query):
            task = stored.json()
            subject = local((task.get("for") or {}).get("reference"))
            owner = task.get("owner")
            if (
                not subject.startswith("Patient/")
                or not isinstance(owner, dict)
                or not owner.get("reference")
            ):
                continue
            with services.engine.connect() as connection:
                repository = Repository(connection)
                if not municipal(_reader(repository), owner):
                    continue  # primary care handed the devices too does not control them
                since = _completed_on(services, repository, stored)
            if since is not None:
                unit = {k: v for k, v in owner.items() if k in ("reference", "display")}
                yield subject, unit, since, f"Task/{stored.res_id}"
    yield from _care_teams(services, patient)


def _reader(repository: Repository) -> Callable[[object], Json | None]:
    """Reads a reference's current target as the gateway."""

    def get(reference: object) -> Json | None:
        res_type, _, res_id = local(reference if isinstance(reference, str) else "").partition("/")
        held = repository.current(res_type, res_id) if res_type and res_id else None
        return held.json() if held is not None and not held.deleted else None

    return get


def _completed_on(services: Services, repository: Repository, task: Stored) -> date | None:
    """The day (the gateway's zone) of the first stored version of `task` that is completed with the
    owner, patient and code it has now (a Task moved to another unit is that unit's acceptance from then)."""
    now = task.json()
    same = ("owner", "for", "code")
    for number in range(1, task.version_id + 1):
        version = repository.version("Task", task.res_id, number)
        held = version.json() if version is not None else {}
        if held.get("status") == "completed" and all(held.get(k) == now.get(k) for k in same):
            assert version is not None
            return common.local_day(version.last_updated, services)
    return None


def _care_teams(services: Services, patient: str | None) -> Iterator[Acceptance]:
    """(patient, unit, since, CareTeam) of each unit in an active personal-care CareTeam for the patient
    that a region-wide client (a trusted writer: `writer` None) wrote; a unit's own CareTeam is not
    enough, as a Task to a unit discloses the patient to it."""
    query = "category=" + quote(CARE_TEAM, safe=":/|") + "&status=active" + of_patient(patient, "subject")
    for stored in scan(services, "CareTeam", query):
        if stored.writer is not None:
            continue
        team = stored.json()
        subject = local((team.get("subject") or {}).get("reference"))
        since = common.day_of(
            (team.get("period") or {}).get("start") or (team.get("meta") or {}).get("lastUpdated")
        )
        if not subject.startswith("Patient/") or since is None:
            continue
        for participant in team.get("participant") or []:
            member = participant.get("member")
            if isinstance(member, dict) and local(member.get("reference")).startswith(UNIT_TYPES):
                with services.engine.connect() as connection:
                    if not municipal(_reader(Repository(connection)), member):
                        continue
                unit = {k: v for k, v in member.items() if k in ("reference", "display")}
                unit["reference"] = local(member.get("reference"))
                yield subject, unit, since, f"CareTeam/{stored.res_id}"


def first_acceptances(services: Services, patient: str | None = None) -> list[Acceptance]:
    """One acceptance per patient and unit, the first (a series has one start, whatever else the unit
    accepts later); of `patient` alone, when given."""
    first: dict[tuple[str, str], Acceptance] = {}
    for found in _acceptances(services, patient):
        key = (found[0], str(found[1]["reference"]))
        if key not in first or found[2] < first[key][2]:
            first[key] = found
    return list(first.values())
