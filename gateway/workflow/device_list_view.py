"""The device list as a person reads it: one row per item (what it is, serial and article, owner,
prescriber, who handles it, who to call for faults and for treatment questions with opening hours, the
next follow-up, control and service dates, open Tasks), from what `device_list.gather` found. Pure: no
database."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.model.types import Json
from gateway.risk.marks import GATEWAY_AUTHOR, is_proposed
from gateway.workflow.device_list import SELF_CARE, Gathered
from gateway.workflow.prescribers import UNCONFIRMED

BASE = "https://fhir.home-device-gateway.se"
ISO9999 = f"{BASE}/CodeSystem/iso9999"
ARTICLE = f"{BASE}/CodeSystem/hjalpmedel-artikel"
MAINTENANCE = f"{BASE}/StructureDefinition/device-maintenance"
HSA = "urn:oid:1.2.752.29.4.19"
DAYS = {"mon": "mån", "tue": "tis", "wed": "ons", "thu": "tor", "fri": "fre", "sat": "lör", "sun": "sön"}
ORDER = list(DAYS)
TASK_STATUS = {
    "draft": "utkast",
    "requested": "begärd",
    "received": "mottagen",
    "accepted": "accepterad",
    "ready": "klar att utföra",
    "in-progress": "pågår",
    "on-hold": "vilande",
}


@dataclass
class Contact:
    """Someone to call: a unit's or service's name, phone numbers and opening hours."""

    name: str
    phones: list[str] = field(default_factory=list)
    hours: list[str] = field(default_factory=list)


@dataclass
class Row:
    reference: str
    what: str
    iso9999: str = ""
    serial: str = ""
    article: str = ""
    owner: str = ""
    prescriber: str = ""
    handled_by: str = ""
    faults: list[Contact] = field(default_factory=list)
    treatment: list[Contact] = field(default_factory=list)
    follow_up: str = ""
    control: str = ""
    service: str = ""
    tasks: list[str] = field(default_factory=list)


@dataclass
class FlagView:
    """A patient's active Flag as the list shows it first: its text ("Högriskpatient (…)"), whether the
    gateway only proposed it (the `proposed` tag: "föreslagen, ej bekräftad"), and the fired rules'
    explanations as its RiskAssessment's gateway notes carry them (when the reader may read it)."""

    text: str
    proposed: bool = False
    reasons: list[str] = field(default_factory=list)

    def heading(self) -> str:
        return f"{self.text} – föreslagen, ej bekräftad" if self.proposed else self.text


@dataclass
class View:
    patient: str
    rows: list[Row]
    flags: list[FlagView]
    tasks: list[str]


def _text(concept: object) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("display"):
            return str(coding["display"])
    return ""


def _code(concept: object, system: str) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == system and coding.get("code"):
            return str(coding["code"])
    return ""


def person_name(resource: Json | None) -> str:
    for name in (resource or {}).get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or []), name.get("family") or ""]
        joined = " ".join(str(p) for p in parts if p)
        if joined:
            return joined
    return ""


def unit_name(resource: Json | None) -> str:
    """A unit's name, else its HSA-id (a unit the directory does not know yet)."""
    if not resource:
        return ""
    if resource.get("name"):
        return str(resource["name"])
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("value"):
            return f"HSA-id {identifier['value']}"
    return ""


def phones(resource: Json) -> list[str]:
    return [
        str(t["value"])
        for t in resource.get("telecom") or []
        if isinstance(t, dict) and t.get("value") and t.get("system", "phone") == "phone"
    ]


def hours(times: object) -> list[str]:
    """`availableTime` or `hoursOfOperation` in Swedish: "mån–fre 08:00–16:00"."""
    found = []
    for time in times if isinstance(times, list) else []:
        if not isinstance(time, dict):
            continue
        days = sorted((d for d in time.get("daysOfWeek") or [] if d in DAYS), key=ORDER.index)
        day_text = _days(days)
        if time.get("allDay"):
            span = "dygnet runt"
        else:
            start, end = (
                time.get("availableStartTime") or time.get("openingTime"),
                time.get("availableEndTime") or time.get("closingTime"),
            )
            span = f"{str(start)[:5]}–{str(end)[:5]}" if start and end else ""
        text = " ".join(p for p in (day_text, span) if p)
        if text:
            found.append(text)
    return found


def _days(days: list[str]) -> str:
    if not days:
        return ""
    indexes = [ORDER.index(d) for d in days]
    if len(days) > 2 and indexes == list(range(indexes[0], indexes[-1] + 1)):
        return f"{DAYS[days[0]]}–{DAYS[days[-1]]}"
    return ", ".join(DAYS[d] for d in days)


class Viewer:
    def __init__(self, found: Gathered) -> None:
        self.found = found

    def contacts(self, unit: Json | None) -> list[Contact]:
        """Whom to call at a unit: itself, its services and its locations, each with phones and hours;
        the parent's when the unit has no phone of its own and no service."""
        if not unit:
            return []
        found = [Contact(unit_name(unit), phones(unit))]
        unit_key = f"Organization/{unit.get('id')}"
        for service in self.found.of_type("HealthcareService"):
            if _points_at(service.get("providedBy"), unit_key):
                found.append(
                    Contact(
                        str(service.get("name") or ""), phones(service), hours(service.get("availableTime"))
                    )
                )
        for location in self.found.of_type("Location"):
            if _points_at(location.get("managingOrganization"), unit_key):
                opening = hours(location.get("hoursOfOperation"))
                name = str(location.get("name") or "")
                if name in ("", found[0].name):  # the unit's own premises: its hours, with its phones
                    found[0].phones += [p for p in phones(location) if p not in found[0].phones]
                    found[0].hours += [h for h in opening if h not in found[0].hours]
                elif phones(location) or opening:
                    found.append(Contact(name, phones(location), opening))
        if not any(c.phones for c in found):
            parent = self.found.get(unit.get("partOf"))
            if parent is not None and parent is not unit:
                found += [c for c in self.contacts_flat(parent) if c.phones]
        return [c for c in found if c.name or c.phones or c.hours]

    def contacts_flat(self, unit: Json) -> list[Contact]:
        return [Contact(unit_name(unit), phones(unit))]

    def prescriber(self, request: Json | None) -> tuple[str, Json | None]:
        """The actual prescriber (name, profession, unit) and their unit; a requester the order marked
        unconfirmed (tag `unconfirmed-prescriber`: whoever keyed the order may not be the prescriber) is
        shown as such, never as the actual prescriber."""
        if not request:
            return "", None
        text, unit = self._requester(request)
        tags = (request.get("meta") or {}).get("tag") or []
        if text and any(isinstance(t, dict) and t.get("code") == UNCONFIRMED for t in tags):
            text += " (förskrivaren är inte bekräftad)"
        return text, unit

    def _requester(self, request: Json) -> tuple[str, Json | None]:
        requester = request.get("requester")
        role = self.found.get(requester)
        if role is None:
            display = (requester or {}).get("display") if isinstance(requester, dict) else None
            return str(display or ""), None
        if role.get("resourceType") == "Practitioner":
            return person_name(role), None
        if role.get("resourceType") == "Organization":
            return unit_name(role), role
        person = self.found.get(role.get("practitioner"))
        name = person_name(person) or str((role.get("practitioner") or {}).get("display") or "")
        profession = next((_text(c) for c in role.get("code") or [] if _text(c)), "")
        unit = self.found.get(role.get("organization"))
        parts = [p for p in (name, profession.lower() if profession else "", unit_name(unit)) if p]
        return ", ".join(parts), unit

    def handled_by(self, request: Json | None) -> str:
        for reference in (request or {}).get("supportingInfo") or []:
            assessment = self.found.get(reference)
            if assessment is None:
                continue
            for component in assessment.get("component") or []:
                if _code(component.get("code"), SELF_CARE) == "handled-by":
                    return _text(component.get("valueCodeableConcept"))
            return _text(assessment.get("valueCodeableConcept"))
        return ""

    def row(self, key: str, item: Json) -> Row:
        found = self.found
        requests = [r for k in found.requests_of.get(key, []) if (r := found.by_key.get(k))]
        request = requests[-1] if requests else None
        if item.get("resourceType") == "Device":
            concept = item.get("type") or {}
            names = [n.get("name") for n in item.get("deviceName") or [] if isinstance(n, dict)]
            what = _text(concept) or str(next((n for n in names if n), "")) or "Hjälpmedel"
            owner = found.get(item.get("owner")) or found.get((request or {}).get("performer"))
            serial = str(item.get("serialNumber") or "")
            article = _code(concept, ARTICLE) or _code((request or {}).get("codeCodeableConcept"), ARTICLE)
            iso = _code(concept, ISO9999) or _code((request or {}).get("codeCodeableConcept"), ISO9999)
            service = _next_service(item)
            faults = [_device_contact(c) for c in item.get("contact") or [] if isinstance(c, dict)]
        else:
            concept = item.get("codeCodeableConcept") or {}
            what = _text(concept) or "Tillbehör"
            owner = found.get(item.get("performer"))
            serial, service, faults = "", "", []
            article, iso = _code(concept, ARTICLE), _code(concept, ISO9999)
        prescriber, unit = self.prescriber(request)
        row = Row(key, what, iso, serial, article, unit_name(owner), prescriber, self.handled_by(request))
        row.faults = [c for c in faults if c.phones] + self.contacts(owner)
        row.treatment = self.contacts(unit)
        row.follow_up = found.follow_up_of.get(key, "")
        row.control = found.control_of.get(key, "")
        row.service = service
        row.tasks = [self.task(t) for t in found.tasks if _concerns(found.by_key[t], key, requests)]
        return row

    def task(self, key: str) -> str:
        task = self.found.by_key[key]
        what = str(task.get("description") or "") or _text(task.get("code")) or "Uppgift"
        due = ((task.get("restriction") or {}).get("period") or {}).get("end")
        status = TASK_STATUS.get(str(task.get("status")), str(task.get("status")))
        owner = unit_name(self.found.get(task.get("owner")))
        parts = [what, status, f"senast {str(due)[:10]}" if due else "", owner]
        return ", ".join(p for p in parts if p)

    def view(self) -> View:
        found = self.found
        rows = [
            self.row(f"{s.res_type}/{s.res_id}", found.by_key[f"{s.res_type}/{s.res_id}"])
            for s in found.items
        ]
        flags = [_flag(found.by_key[f], found.flag_details.get(f)) for f in found.flags]
        tasks = [self.task(t) for t in found.tasks]
        return View(person_name(found.patient_json), rows, flags, tasks)


def _flag(flag: Json, assessment: Json | None) -> FlagView:
    proposed = is_proposed(flag)
    notes = (assessment or {}).get("note") or []
    reasons = [
        str(n["text"])
        for n in notes
        if isinstance(n, dict) and n.get("authorString") == GATEWAY_AUTHOR and n.get("text")
    ]
    return FlagView(_text(flag.get("code")) or "Flagga", proposed, reasons)


def _device_contact(point: Json) -> Contact:
    value = str(point.get("value") or "")
    return Contact(
        "Enligt hjälpmedlets uppgifter", [value] if point.get("system", "phone") == "phone" else []
    )


def _points_at(reference: object, key: str) -> bool:
    references = reference if isinstance(reference, list) else [reference]
    return any(isinstance(r, dict) and str(r.get("reference", "")).endswith(key) for r in references)


def _next_service(device: Json) -> str:
    for extension in device.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == MAINTENANCE:
            for part in extension.get("extension") or []:
                if part.get("url") == "nextService" and part.get("valueDate"):
                    return str(part["valueDate"])
    return ""


def _concerns(task: Json, key: str, requests: list[Json]) -> bool:
    """Whether a Task is about the item (its focus, basedOn or an input names it or its request)."""
    keys = {key, *(f"DeviceRequest/{r.get('id')}" for r in requests)}
    references = [task.get("focus"), *(task.get("basedOn") or [])]
    references += [i.get("valueReference") for i in task.get("input") or [] if isinstance(i, dict)]
    return any(isinstance(r, dict) and str(r.get("reference", "")) in keys for r in references)


def view(found: Gathered) -> View:
    return Viewer(found).view()
