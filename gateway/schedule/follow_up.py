"""Job `follow-up` (finding 4): each planned follow-up of an order (an open activity of a device
follow-up CarePlan, gateway/adapters/bestallningsportalen/follow_up.py) becomes a Task (task-code
`follow-up`) owned by the responsible unit (the activity's performer, else the plan's author), `for`
the patient, `focus` the order's DeviceRequest, `basedOn` the CarePlan, due (`restriction.period.end`)
at the end of the planned day in the gateway's zone, created `follow_up_lead_days` ahead (default 7).

Each pass, over the open follow-up Tasks: one past its due date gets businessStatus `overdue` and the
actual prescriber a return report (in Swedish); one whose activity ended (the order makulerad, the device
picked up, the plan changed), whose patient died, or whose patient moved to another municipality than its
municipal owning unit's, is cancelled with a Swedish statusReason. Completing
the Task completes the activity (gateway/workflow/scheduled_tasks.py).

For a patient with a `final` high-risk RiskAssessment, a follow-up not yet made a Task is planned earlier
(its days after the plan's `created` times GATEWAY_RISK_INTERVAL_FACTOR, never later, never before today),
the Task with a Swedish `note` saying why (gateway/schedule/risk_interval.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from urllib.parse import quote

from gateway.adapters.bestallningsportalen import follow_up as plans
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule import changes, common, risk_interval
from gateway.schedule.lease import Lease
from gateway.schedule.scan import batches, changed_since, current, dated_between, matching, read, scan
from gateway.schedule.writer import (
    BASE,
    TASK_CODES,
    Refusals,
    Tally,
    coded,
    has_code,
    local,
    provenance,
    task_id,
    write_for,
)
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services
from gateway.store.repository import Repository, Stored

NAME = "follow-up"
PLAN_CATEGORY = f"{plans.CATEGORY['system']}|{plans.CATEGORY['code']}"
CODE = f"{TASK_CODES}|follow-up"


def _planned_day(activity: Json) -> date | None:
    return common.day_of((((activity.get("detail") or {}).get("scheduledPeriod")) or {}).get("start"))


def _lines(plan: Json) -> list[str]:
    found = [local((a.get("reference") or {}).get("reference")) for a in plan.get("activity") or []]
    return [r for r in found if r.startswith("DeviceRequest/")]


def _owner(plan: Json, activity: Json) -> Json | None:
    for performer in (activity.get("detail") or {}).get("performer") or []:
        if isinstance(performer, dict) and performer.get("reference"):
            return {k: v for k, v in performer.items() if k in ("reference", "display")}
    author = plan.get("author")
    return dict(author) if isinstance(author, dict) and author.get("reference") else None


class _Due:
    """An open activity falling due: its day (moved earlier for a confirmed high-risk patient), the day
    planned, the Task's id and the assessment that moved it."""

    def __init__(self, day: date, planned: date, task: str, assessment: str | None) -> None:
        self.day, self.planned, self.task, self.assessment = day, planned, task, assessment


def _task(services: Services, plan: Json, activity: Json, due_at: _Due, now: datetime) -> Json:
    owner = _owner(plan, activity)
    lines = _lines(plan)
    detail = activity.get("detail") or {}
    day, task_id = due_at.day, due_at.task
    due = common.due_of(day, services)
    described = str(detail.get("description") or "Uppföljning")
    task: Json = {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "intent": "order",
        "code": coded(TASK_CODES, "follow-up", "Uppföljning av hjälpmedel"),
        "description": f"{described}, planerad {day.isoformat()} ({plan.get('title', 'uppföljningsplan')})",
        "for": plan.get("subject"),
        "basedOn": [{"reference": f"CarePlan/{plan['id']}"}],
        "authoredOn": to_instant(now),
        "restriction": {"period": {"end": common.fhir_time(due)}},
        "input": [
            {
                "type": coded(f"{BASE}/CodeSystem/task-input-type", "planned-activity", "Planerad aktivitet"),
                "valueString": str(activity.get("id") or ""),
            }
        ],
    }
    if lines:
        task["focus"] = {"reference": lines[0]}
    if owner:
        task["owner"] = owner
    if plan.get("author"):
        task["requester"] = plan["author"]
    if due_at.assessment and day < due_at.planned:
        task["note"] = [risk_interval.note(due_at.assessment, due_at.planned, day)]
    if common.as_utc(due) < now:
        task["businessStatus"] = common.overdue_status()
    return task


def _overdue_report(
    services: Services, uow: UnitOfWork, task: Json, plan_lines: list[str], now: datetime
) -> int:
    due = str(((task.get("restriction") or {}).get("period") or {}).get("end", ""))[:10]
    text = (
        f"Uppföljningen är inte genomförd: {task.get('description', 'uppföljning')} "
        f"skulle vara gjord senast {due}."
    )
    report_id = task_id(services, NAME, "overdue-report", str(task["id"]))
    if uow.repository.current("Communication", report_id) is not None:
        return 0
    found = common.report(uow, report_id, task, plan_lines, text)
    if found is None:
        return 0
    services.write_path.update(uow, "Communication", report_id, found)
    return 1


def _due(
    services: Services, plan: Json, activity: Json, last: date, risk: dict[str, str], today: date
) -> _Due | None:
    """The day and Task id of an open activity due by `last` (the last day whose Task is due to exist:
    today in the gateway's zone plus the lead time), else None. The id is the activity's whatever the day,
    so a day moved earlier never makes a second Task."""
    planned = _planned_day(activity)
    if planned is None or not plans.is_open(activity) or not activity.get("id"):
        return None
    day, assessment = planned, risk.get(local((plan.get("subject") or {}).get("reference")))
    base = common.day_of(plan.get("created"))
    if assessment and base is not None:
        day = risk_interval.moved(base, planned, today, services)
    if day > last:
        return None
    return _Due(day, planned, task_id(services, NAME, str(plan["id"]), str(activity["id"]), "1"), assessment)


def next_follow_ups(services: Services, patient: str, now: datetime) -> dict[str, tuple[date, list[str]]]:
    """Order line (`DeviceRequest/id`) → (the due day of its next follow-up, what it was read from: the
    CarePlan, its open Task, the assessment that moved it), as this job plans it: each open planned
    activity's day (moved earlier for a confirmed high-risk patient), its open Task's due day once made;
    the device list's "next follow-up" (issue 19)."""
    today = common.local_day(now, services)
    risk = risk_interval.confirmed(services, patient)
    query = (
        "category=" + quote(PLAN_CATEGORY, safe=":/|") + "&status=active&subject=" + quote(patient, safe="/")
    )
    wanted: list[tuple[Json, _Due]] = []
    for stored in scan(services, "CarePlan", query):
        plan = stored.json()
        for activity in plan.get("activity") or []:
            due = _due(services, plan, activity, date.max, risk, today) if "detail" in activity else None
            if due is not None:
                wanted.append((plan, due))
    held = current(services, [f"Task/{due.task}" for _, due in wanted])
    found: dict[str, tuple[date, list[str]]] = {}
    for plan, due in wanted:
        day: date | None = due.day
        sources = [f"CarePlan/{plan['id']}"]
        task = held.get(f"Task/{due.task}")
        if task is not None:
            end = common.day_of(((task.get("restriction") or {}).get("period") or {}).get("end"))
            day = (end or day) if task.get("status") in common.OPEN else None
            sources.append(f"Task/{due.task}")
        elif due.assessment and due.day < due.planned:
            sources.append(due.assessment)
        for line in _lines(plan):
            if day is not None and (line not in found or day < found[line][0]):
                found[line] = (day, sources)
    return found


def _create(
    services: Services, plan: Json, activity: Json, due_at: _Due, now: datetime, tally: Tally
) -> None:
    wanted = due_at.task

    def work(uow: UnitOfWork, organisation: Json | None) -> None:
        if uow.repository.current("Task", wanted) is not None:
            return  # another process made it meanwhile
        patient = local((plan.get("subject") or {}).get("reference"))
        if common.deceased(uow, patient) or common.moved(uow.repository, patient, _owner(plan, activity)):
            return
        task = _task(services, plan, activity, due_at, now)
        result = services.write_path.update(uow, "Task", wanted, task)
        targets = [f"Task/{wanted}/_history/{result.stored.version_id}"]
        tally.created += 1
        if common.is_overdue(task):
            tally.reports += _overdue_report(services, uow, task, _lines(plan), now)
        reason = f"Planerad uppföljning ({activity['id']}) i CarePlan/{plan['id']}"
        services.write_path.create(uow, provenance(uow, targets, organisation, reason))

    write_for(services, _owner(plan, activity), work)


def _plans(
    services: Services, last: date, risk: dict[str, str], since: changes.Since | None
) -> Iterator[list[Stored]]:
    """The active follow-up plans with an activity planned by `last` (after a complete pass the same day:
    those written since, and those of the patients written since, as no other plan's activities can have
    come due), then every active plan of the confirmed high-risk patients (their days move earlier), each
    plan once."""
    category = "category=" + quote(PLAN_CATEGORY, safe=":/|") + "&status=active"
    seen: set[str] = set()
    if since is None:
        found = batches(
            services, "CarePlan", category + "&activity-date=lt" + (last + timedelta(days=1)).isoformat()
        )
    else:
        written = read(services, changed_since(services, "CarePlan", since.written).values())
        found = (
            [s for s in plans_ if s.json().get("status") == "active" and _is_follow_up(s.json())]
            for plans_ in written
        )
    patients = set(risk)
    if since is not None:  # a patient written since (moved back, a death entered in error) may be due again
        patients |= {f"Patient/{res_id}" for res_id in changed_since(services, "Patient", since.written)}
    queries = [category + "&subject=" + quote(patient, safe="/") for patient in sorted(patients)]
    for batch in [found, *(batches(services, "CarePlan", query) for query in queries)]:
        for stored_batch in batch:
            fresh = [stored for stored in stored_batch if stored.res_id not in seen]
            seen.update(stored.res_id for stored in fresh)
            yield fresh


def _is_follow_up(plan: Json) -> bool:
    return any(
        f"{c.get('system')}|{c.get('code')}" == PLAN_CATEGORY
        for category in plan.get("category") or []
        for c in (category or {}).get("coding") or []
    )


def _make(
    services: Services, now: datetime, tally: Tally, lease: Lease | None, since: changes.Since | None
) -> bool:
    """The Tasks of follow-ups falling due; False when the lease was lost."""
    today = common.local_day(now, services)
    last = today + timedelta(days=services.settings.follow_up_lead_days)
    risk = risk_interval.confirmed(services)
    for found in _plans(services, last, risk, since):
        wanted: list[tuple[Json, Json, _Due]] = []
        for stored in found:
            plan = stored.json()
            tally.seen += 1
            for activity in plan.get("activity") or []:
                due = _due(services, plan, activity, last, risk, today) if "detail" in activity else None
                if due is not None:
                    wanted.append((plan, activity, due))
        held = current(services, [f"Task/{item[2].task}" for item in wanted])
        for plan, activity, due in wanted:
            if f"Task/{due.task}" not in held:
                _create(services, plan, activity, due, now, tally)
        if lease is not None and not lease.renew():
            return False
    return True


def _references(task: Json) -> tuple[str, str, str]:
    """The patient, the plan and the activity's element id of a follow-up Task."""
    patient = local((task.get("for") or {}).get("reference"))
    plan = next((local(b.get("reference")) for b in task.get("basedOn") or []), "")
    name = next((str(i.get("valueString")) for i in task.get("input") or [] if "valueString" in i), "")
    return patient, plan, name


def _ended(task: Json, found: dict[str, Json]) -> tuple[Json | None, list[str], bool]:
    """Why the open Task's activity ended (None: it did not), the plan's order lines, and whether its
    patient died, from the resources `found` for its batch."""
    patient, plan_ref, name = _references(task)
    held = found.get(patient) or {}
    dead = held.get("deceasedBoolean") is True or bool(held.get("deceasedDateTime"))
    plan = found.get(plan_ref)
    if plan is None:
        return None, [], dead
    activity = next((a for a in plan.get("activity") or [] if a.get("id") == name), None)
    if activity is None or plans.is_open(activity) or activity["detail"].get("status") == "completed":
        return None, _lines(plan), dead
    why = (activity.get("detail") or {}).get("statusReason") or {}
    return common.end_reason("plan-ended", why.get("text")), _lines(plan), dead


def _moved(services: Services, task: Json, found: dict[str, Json], towns: dict[str, str | None]) -> bool:
    """Whether the patient moved to another municipality than the owning unit's (a municipal unit: its
    organisation's address has a kommunkod; a region's clinic has none, so its follow-ups go on)."""
    owner = str((task.get("owner") or {}).get("reference") or "")
    if owner not in towns:
        with services.engine.connect() as connection:
            towns[owner] = common.unit_municipality(Repository(connection), task.get("owner"))
    return common.away(found.get(_references(task)[0]), towns[owner])


def _settings(services: Services) -> str:
    """What a pass's outcome depends on besides the data and the clock (a changes-only pass needs the
    same)."""
    settings = services.settings
    factor = risk_interval.factor(services)
    return f"lead={settings.follow_up_lead_days} factor={factor} zone={settings.local_timezone}"


def _open(services: Services, now: datetime, since: changes.Since | None) -> Iterator[list[Stored]]:
    """The open follow-up Tasks to look at: all of them in a whole pass; after a complete pass the same
    day, those due since it, those written since (reopened, their mark cleared by the region), and those of
    the plans and patients written since (their activity may have ended, their patient died or moved)."""
    query = "code=" + quote(CODE, safe=":/|") + "&status=" + common.OPEN_QUERY
    if since is None:
        yield from batches(services, "Task", query)
        return
    rids = dated_between(services, "Task", "due", since.now, now)
    rids |= set(changed_since(services, "Task", since.written).values())  # reopened, due moved, mark cleared
    for res_type, param in (("CarePlan", "based-on"), ("Patient", "patient")):
        for res_id in changed_since(services, res_type, since.written):
            rids |= matching(services, "Task", f"{param}=" + quote(f"{res_type}/{res_id}", safe="/"))
    for found in read(services, rids):
        yield [
            s
            for s in found
            if s.json().get("status") in common.OPEN and has_code(s.json().get("code"), TASK_CODES, NAME)
        ]


def run(services: Services, now: datetime, lease: Lease | None = None) -> Tally:
    """One pass: make the Tasks of follow-ups falling due, then mark, report and cancel the open ones. After
    a complete pass earlier the same day only what changed since is looked at (gateway/schedule/changes.py);
    a unit's Organization written since makes the pass whole (its municipality decides `patient-moved`)."""
    tally = Tally()
    started, refused = utc_now(), Refusals.count
    settings = _settings(services)
    since = changes.since(lease, services, now, settings)
    if since is not None and changed_since(services, "Organization", since.written):
        since = None
    if not _make(services, now, tally, lease, since):
        return tally
    towns: dict[str, str | None] = {}  # owner → its organisation's kommunkod, read once a pass
    for tasks in _open(services, now, since):
        # each open Task looked at: its activity or patient may have ended (reads only, unless so)
        found = current(services, [ref for s in tasks for ref in _references(s.json())[:2]])
        for stored in tasks:
            task = stored.json()
            reason, lines, dead = _ended(task, found)
            if reason is None and _moved(services, task, found, towns):
                reason = common.end_reason("patient-moved")
            if reason is None and not dead and not common.lapsed(task, now):
                continue

            def report_of(uow: UnitOfWork, changed: Json, lines: list[str] = lines) -> int:
                return _overdue_report(services, uow, changed, lines, now)

            common.settle(services, task, now, tally, reason, report_of)
        if lease is not None and not lease.renew():
            return tally
    if Refusals.count == refused:  # a write refused: the next pass looks at everything again
        changes.record(lease, started, now, settings)
    return tally
