"""The stay as a function of its messages: every event of a stay, ordered by event time, folded into the
Encounter, the Tasks, the SIP CarePlan and CareTeam it should have. Because the result depends only on the
set of messages, arrival order does not matter, and every id derives from the source's own keys (a UUID
from an HMAC under the installation's secret: gateway/adapters/ids.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.adapters import master_data
from gateway.adapters.hl7v2.events import Event, Person, Receiver
from gateway.adapters.hl7v2.mappings import MAPPINGS
from gateway.adapters.hl7v2.message import as_instant, fhir_time, parse_time
from gateway.adapters.ids import SourceIds
from gateway.model.types import Json

BASE = "https://fhir.home-device-gateway.se"
HSA = "urn:oid:1.2.752.29.4.19"
TASK_SYSTEM = f"{BASE}/CodeSystem/care-transition-task"
FLAG_SYSTEM = f"{BASE}/CodeSystem/care-transition-flag"
CAREPLAN_CATEGORY = f"{BASE}/CodeSystem/careplan-category"
INPUT_SYSTEM = f"{BASE}/CodeSystem/task-input-type"
TERMINAL = frozenset({"completed", "cancelled", "rejected", "failed", "entered-in-error"})


SOURCE = "hl7v2"


def det_id(ids: SourceIds, kind: str, facility: str, *parts: str) -> str:
    """A resource id derived from the source (the sending facility) and its keys: the same message always
    gives the same id."""
    return ids.id(SOURCE, facility, kind, *parts)


def stay_ids(ids: SourceIds, facility: str, visit: str) -> tuple[str, str, str]:
    """Encounter, CarePlan and CareTeam ids of a stay."""
    return (
        det_id(ids, "encounter", facility, visit),
        det_id(ids, "sip", facility, visit),
        det_id(ids, "careteam", facility, visit),
    )


def message_id(ids: SourceIds, facility: str, control_id: str) -> str:
    """Provenance and Binary id of a message: MSH-4 + MSH-10, the idempotency key."""
    return det_id(ids, "message", facility, control_id)


@dataclass
class Refs:
    """References to the resources a Bundle creates when missing (Patient, Organizations, Practitioners)
    and the entries that do it."""

    ids: SourceIds
    patient: str
    organizations: dict[str, tuple[str, str]] = field(default_factory=dict)  # hsa → (fullUrl, name)
    practitioners: dict[str, tuple[str, Person]] = field(default_factory=dict)

    def org(self, hsa: str, name: str = "") -> Json:
        full_url, known = self.organizations.get(hsa, (self.ids.urn("Organization", hsa), ""))
        self.organizations[hsa] = (full_url, known or name)
        return (
            {"reference": full_url, "display": known or name} if (known or name) else {"reference": full_url}
        )

    def practitioner(self, person: Person) -> Json:
        full_url = self.ids.urn("Practitioner", person.hsa)
        self.practitioners.setdefault(person.hsa, (full_url, person))
        shown = " ".join(p for p in (person.given, person.family) if p)
        return {"reference": full_url, "display": shown} if shown else {"reference": full_url}


@dataclass
class Context:
    zone: ZoneInfo
    refs: Refs
    devices: list[str] = field(default_factory=list)  # Device/… and DeviceRequest/… of the patient
    device_requests: list[str] = field(default_factory=list)


@dataclass
class Stay:
    """The folded state of one stay."""

    facility: str
    visit: str
    encounter: Json = field(default_factory=dict)
    tasks: dict[str, Json] = field(default_factory=dict)
    careplan: Json | None = None
    careteam: Json | None = None
    admits: int = 0
    discharges: int = 0
    needs_services: bool = False
    ready_seen: bool = False
    sip: bool = False
    sip_called: bool = False
    receivers: list[Receiver] = field(default_factory=list)
    primary_care: Receiver | None = None
    created_by: dict[str, str] = field(default_factory=dict)  # task id → control id of its message


def _deadline(kind: str, start: datetime | date, zone: ZoneInfo) -> datetime:
    spec = MAPPINGS.tasks["kinds"][kind]
    moment = as_instant(start, zone).astimezone(zone)
    if spec.get("endOfDay"):
        moment = datetime.combine(moment.date(), time(23, 59, 59), tzinfo=zone)
    return moment + timedelta(hours=MAPPINGS.deadline_hours(kind))


def _task(stay: Stay, ctx: Context, e: Event, kind: str, cycle: int, owner: Receiver, focus: str) -> Json:
    spec = MAPPINGS.tasks["kinds"][kind]
    starts: dict[str, datetime | date | None] = {
        "PV1-44": e.admitted,
        "ZSV-4": e.ready,
        "PV1-45": e.discharged,
    }
    due = _deadline(kind, starts.get(spec["from"]) or e.event_time, ctx.zone)
    ids = ctx.refs.ids
    task_id = det_id(ids, "task", stay.facility, stay.visit, kind, str(cycle), owner.hsa)
    enc_id = stay_ids(ids, stay.facility, stay.visit)[0]
    task: Json = {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "businessStatus": {"text": spec["businessStatus"]},
        "intent": "order",
        "code": {"coding": [{"system": TASK_SYSTEM, "code": kind, "display": spec["display"]}]},
        "focus": {"reference": focus},
        "for": {"reference": ctx.refs.patient},
        "encounter": {"reference": f"Encounter/{enc_id}"},
        "authoredOn": fhir_time(e.sent),
        "requester": ctx.refs.org(stay.facility, e.facility_name),
        "owner": ctx.refs.org(owner.hsa, owner.name),
        "restriction": {"period": {"end": fhir_time(due)}},
    }
    if e.sent > due:
        hours = int((e.sent - due).total_seconds() // 3600)
        task["meta"] = {"tag": [{"system": FLAG_SYSTEM, "code": "late-notice", "display": "Sent notice"}]}
        task["note"] = [{"text": f"Meddelandet skickades {hours} timmar efter tidsfristen"}]
    if kind == "handover":
        inputs = [
            {
                "type": {"coding": [{"system": INPUT_SYSTEM, "code": "device"}]},
                "valueReference": {"reference": r},
            }
            for r in ctx.devices
        ] + [
            {
                "type": {"coding": [{"system": INPUT_SYSTEM, "code": "device-request"}]},
                "valueReference": {"reference": r},
            }
            for r in ctx.device_requests
        ]
        if inputs:
            task["input"] = inputs
    stay.created_by[task_id] = e.control_id
    return task


def _create(stay: Stay, ctx: Context, e: Event, kind: str, cycle: int, receivers: list[Receiver]) -> None:
    enc_id, plan_id, _ = stay_ids(ctx.refs.ids, stay.facility, stay.visit)
    enc_ref = f"Encounter/{enc_id}"
    focus = f"CarePlan/{plan_id}" if kind == "kalla-till-sip" else enc_ref
    for receiver in receivers:
        task = _task(stay, ctx, e, kind, cycle, receiver, focus)
        stay.tasks.setdefault(task["id"], task)


def _cancel(stay: Stay, kinds: list[str], reason: str) -> None:
    for task in stay.tasks.values():
        if task["code"]["coding"][0]["code"] in kinds and task["status"] not in TERMINAL:
            task["status"] = "cancelled"
            task["statusReason"] = {"text": reason}
            task["businessStatus"] = {"text": MAPPINGS.tasks["cancelledBusinessStatus"]}


def _sip(stay: Stay, ctx: Context, e: Event) -> None:
    enc_id, plan_id, team_id = stay_ids(ctx.refs.ids, stay.facility, stay.visit)
    participants = [{"member": ctx.refs.org(stay.facility, e.facility_name)}]
    participants += [{"member": ctx.refs.org(r.hsa, r.name)} for r in stay.receivers]
    stay.careteam = {
        "resourceType": "CareTeam",
        "id": team_id,
        "status": "active",
        "name": "SIP",
        "subject": {"reference": ctx.refs.patient},
        "participant": participants,
    }
    author = (
        ctx.refs.practitioner(e.contact)
        if e.contact
        else ctx.refs.org(stay.primary_care.hsa, stay.primary_care.name)
        if stay.primary_care
        else ctx.refs.org(stay.facility, e.facility_name)
    )
    stay.careplan = {
        "resourceType": "CarePlan",
        "id": plan_id,
        "status": "draft",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {"system": CAREPLAN_CATEGORY, "code": "sip", "display": "Samordnad individuell plan"}
                ]
            }
        ],
        "title": "Samordnad individuell plan (SIP)",
        "subject": {"reference": ctx.refs.patient},
        "encounter": {"reference": f"Encounter/{enc_id}"},
        "created": fhir_time(e.sent),
        "author": author,
        "careTeam": [{"reference": f"CareTeam/{team_id}"}],
    }


def _call_sip(stay: Stay, ctx: Context, e: Event) -> None:
    if stay.sip_called or not (stay.sip and stay.ready_seen and stay.primary_care):
        return
    stay.sip_called = True
    _create(stay, ctx, e, "kalla-till-sip", stay.admits, [stay.primary_care])
    if stay.careplan is not None:
        kalla = [t for t in stay.tasks.values() if t["code"]["coding"][0]["code"] == "kalla-till-sip"]
        stay.careplan["activity"] = [{"reference": {"reference": f"Task/{t['id']}"}} for t in kalla]


def _encounter(stay: Stay, ctx: Context, e: Event, status: str | None, period: dict[str, Any]) -> None:
    enc = stay.encounter
    enc_id = stay_ids(ctx.refs.ids, stay.facility, stay.visit)[0]
    enc.update(
        {
            "resourceType": "Encounter",
            "id": enc_id,
            "identifier": [
                {"system": f"{MAPPINGS.encounter['identifierSystem']}/{stay.facility}", "value": stay.visit}
            ],
            "subject": {"reference": ctx.refs.patient},
            "serviceProvider": ctx.refs.org(stay.facility, e.facility_name),
        }
    )
    code = MAPPINGS.code("patient-class", e.patient_class) or "IMP"
    enc["class"] = {
        "system": MAPPINGS.codes["patient-class"]["target"],
        "code": code,
        "display": MAPPINGS.codes["patient-class"]["display"][code],
    }
    if status:
        enc["status"] = status
    enc.setdefault("status", "in-progress")
    if e.attending:
        enc["participant"] = [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "ATND",
                            }
                        ]
                    }
                ],
                "individual": ctx.refs.practitioner(e.attending),
            }
        ]
    times = enc.setdefault("period", {})
    if "start" in period and e.admitted:
        times["start"] = fhir_time(e.admitted)
    if "end" in period and e.discharged:
        times["end"] = fhir_time(e.discharged)
    if period.get("clearEnd"):
        times.pop("end", None)
    if not times:
        enc.pop("period")


def fold(events: list[Event], ctx: Context) -> Stay:
    """Apply the stay's events in event-time order; the result is the same whatever order they came in."""
    ordered = sorted(events, key=lambda x: x.order)
    stay = Stay(ordered[0].facility, ordered[0].visit)
    for e in ordered:
        spec = MAPPINGS.triggers[e.trigger]
        if e.needs_services is not None:
            stay.needs_services = e.needs_services
        if e.receivers:
            stay.receivers = e.receivers
        if e.primary_care:
            stay.primary_care = e.primary_care
        if spec["event"] == "admit":
            stay.admits += 1
        if spec["event"] == "discharge":
            stay.discharges += 1
        _encounter(stay, ctx, e, spec["encounterStatus"], spec["period"])
        if spec["cancels"]:
            _cancel(stay, spec["cancels"], spec["reason"])
            if spec["event"] == "cancel-admit":
                stay.ready_seen = stay.sip_called = False
        for kind in spec["creates"]:
            if stay.needs_services:
                cycle = stay.discharges if kind == "handover" else stay.admits
                _create(stay, ctx, e, kind, cycle, stay.receivers)
        if spec["event"] in ("cancel-admit", "cancel-discharge"):
            continue
        if e.sip and not stay.sip:
            stay.sip = True
            _sip(stay, ctx, e)
        if e.ready and not stay.ready_seen:
            stay.ready_seen = True
            if stay.needs_services:
                _create(stay, ctx, e, "utskrivningsklar", stay.admits, stay.receivers)
        _call_sip(stay, ctx, e)
    return stay


# -- the Patient ----------------------------------------------------------------------------------------


def _set(target: Any, path: list[str], value: Any) -> None:
    for i, key in enumerate(path):
        last = i == len(path) - 1
        next_is_index = not last and path[i + 1].isdigit()
        if isinstance(target, list):
            index = int(key)
            while len(target) <= index:
                target.append([] if next_is_index else {})
            if last:
                target[index] = value
            else:
                target = target[index]
        elif last:
            target[key] = value
        else:
            target = target.setdefault(key, [] if next_is_index else {})


def _message_patient(e: Event, zone: ZoneInfo) -> Json:
    """The Patient as one message gives it (PID and PD1 through mappings/hl7v2/patient.json)."""
    system, value = e.identifier
    result: Json = {"resourceType": "Patient", "identifier": [{"system": system, "value": value}]}
    for element in MAPPINGS.patient["elements"]:
        raw = e.message.get(element["source"])
        if not raw:
            continue
        value_out: Any = raw
        if element["type"] == "date":
            moment = parse_time(raw, zone, element["source"])
            if moment is None:
                continue
            value_out = (moment.date() if isinstance(moment, datetime) else moment).isoformat()
        elif element["type"] == "code":
            value_out = MAPPINGS.code(element["map"], raw.upper())
            if value_out is None:
                continue
        _set(result, element["target"].split("."), value_out)
    kommun = MAPPINGS.patient["kommunkod"]
    code = e.message.get(kommun["source"])
    if code:
        home = (result.setdefault("address", [{}]))[0]
        home["extension"] = [
            {"url": kommun["extension"], "valueCoding": {"system": kommun["system"], "code": code}}
        ]
    return result


def patient(existing: Json | None, events: list[Event], zone: ZoneInfo) -> Json:
    """The Patient as it is, with each message's fields merged in event order, field by field by event
    time (gateway/adapters/master_data.py): a field the messages lack is kept as it was, never erased, and
    a field another source gave at a later event stays."""
    result: Json = dict(existing) if existing else {"resourceType": "Patient"}
    result.pop("meta", None)
    for e in sorted(events, key=lambda x: x.order):
        incoming = _message_patient(e, zone)
        result = master_data.merge(result, incoming, fhir_time(e.event_time))
        result.pop("meta", None)
    return result


def organization(hsa: str, name: str) -> Json:
    org: Json = {
        "resourceType": "Organization",
        "identifier": [{"system": HSA, "value": hsa}],
        "active": True,
    }
    if name:
        org["name"] = name
    return org


def practitioner(person: Person) -> Json:
    resource: Json = {"resourceType": "Practitioner", "identifier": [{"system": HSA, "value": person.hsa}]}
    name: Json = {}
    if person.family:
        name["family"] = person.family
    if person.given:
        name["given"] = [person.given]
    if name:
        resource["name"] = [name]
    return resource
