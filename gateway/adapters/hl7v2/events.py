"""What one ADT message says, read and checked: an `Event` of a stay (MSH-4 + PV1-19)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from gateway.adapters.hl7v2.mappings import MAPPINGS
from gateway.adapters.hl7v2.message import Hl7Error, Message, as_instant, parse_time

PERSONNUMMER_OID = "1.2.752.129.2.1.3.1"
SAMORDNINGSNUMMER_OID = "1.2.752.129.2.1.3.3"


@dataclass(frozen=True)
class Person:
    hsa: str
    family: str = ""
    given: str = ""


@dataclass(frozen=True)
class Receiver:
    """A receiving organisation: a municipality's unit (ZSV-2) or the primary-care unit (ZSV-3/PD1-3)."""

    hsa: str
    name: str
    kind: str  # kommun | primarvard
    kommunkod: str = ""


@dataclass
class Event:
    message: Message
    trigger: str
    event_time: datetime  # EVN-2, else MSH-7: orders the stay's events
    sent: datetime  # MSH-7
    control_id: str
    facility: str
    facility_name: str
    visit: str
    identifier: tuple[str, str]  # (system, value) of the personnummer or samordningsnummer
    patient_class: str
    attending: Person | None
    admitted: datetime | date | None
    discharged: datetime | date | None
    expected_discharge: datetime | date | None
    needs_services: bool | None  # ZSV-1; None when there is no ZSV segment
    receivers: list[Receiver] = field(default_factory=list)
    primary_care: Receiver | None = None
    ready: datetime | date | None = None  # ZSV-4 utskrivningsklar
    contact: Person | None = None  # ZSV-5 fast vårdkontakt
    services: list[str] = field(default_factory=list)
    sip: bool = False

    @property
    def order(self) -> tuple[datetime, datetime, str]:
        return (self.event_time, self.sent, self.control_id)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _identifier(message: Message) -> tuple[str, str]:
    systems: dict[str, str] = MAPPINGS.patient["identifiers"]
    found: dict[str, str] = {}
    for rep in message.repetitions("PID-3"):
        oid = rep.get(4, 2) or rep.get(4, 1)
        if oid in systems:
            found.setdefault(oid, rep.get(1).replace("-", "").strip())
    for oid in (PERSONNUMMER_OID, SAMORDNINGSNUMMER_OID):
        value = found.get(oid)
        if value is None:
            continue
        if len(value) != 12 or not value.isdigit() or not luhn_ok(value[2:]):
            raise Hl7Error(
                "AE", f"PID-3 holds an invalid personnummer or samordningsnummer: {value}", "PID-3", "102"
            )
        day = int(value[6:8]) - (60 if oid == SAMORDNINGSNUMMER_OID else 0)
        if not 1 <= int(value[4:6]) <= 12 or not 1 <= day <= 31:
            raise Hl7Error("AE", f"PID-3 holds an impossible date of birth: {value}", "PID-3", "102")
        return systems[oid], value
    raise Hl7Error("AE", "PID-3 holds no personnummer or samordningsnummer", "PID-3", "101")


def _person(message: Message, path: str) -> Person | None:
    hsa = message.get(f"{path}.1")
    if not hsa:
        return None
    return Person(hsa, message.get(f"{path}.2"), message.get(f"{path}.3"))


def _flag(message: Message, path: str) -> bool:
    return message.get(path).upper() in ("Y", "J", "1")


def read_event(message: Message, zone: ZoneInfo) -> Event:
    """Check the fields the mapping needs and read them; a missing or invalid one is an AE Hl7Error."""
    if not message.control_id:
        raise Hl7Error("AR", "MSH-10 (message control id) is missing", "MSH-10", "101")
    if not message.facility:
        raise Hl7Error("AR", "MSH-4 (sending facility) is missing", "MSH-4", "101")
    sent = parse_time(message.get("MSH-7"), zone, "MSH-7")
    if sent is None:
        raise Hl7Error("AE", "MSH-7 (message date-time) is missing", "MSH-7", "101")
    recorded = parse_time(message.get("EVN-2"), zone, "EVN-2")
    if message.segment("PID") is None:
        raise Hl7Error("AE", "The PID segment is missing", "PID", "100")
    if message.segment("PV1") is None:
        raise Hl7Error("AE", "The PV1 segment is missing", "PV1", "100")
    visit = message.get("PV1-19.1")
    if not visit:
        raise Hl7Error("AE", "PV1-19 (visit number) is missing", "PV1-19", "101")
    identifier = _identifier(message)
    zsv = message.segment("ZSV") is not None
    primary_hsa = message.get("ZSV-3.1") or message.get("PD1-3.10")
    primary_name = message.get("PD1-3.1") if message.get("PD1-3.10") == primary_hsa else ""
    receivers: list[Receiver] = []
    for rep in message.repetitions("ZSV-2"):
        hsa = rep.get(3)
        if not hsa:
            raise Hl7Error(
                "AE", "ZSV-2 names a municipality without the receiving unit's HSA-id", "ZSV-2", "101"
            )
        receivers.append(Receiver(hsa, rep.get(2), "kommun", rep.get(1)))
    primary = Receiver(primary_hsa, primary_name, "primarvard") if primary_hsa else None
    if primary is not None:
        receivers.append(primary)
    services = []
    for rep in message.repetitions("ZSV-6"):
        code = MAPPINGS.code("services", rep.get(1).upper())
        if code is None:
            raise Hl7Error("AE", f"ZSV-6 names an unknown service: {rep.get(1)}", "ZSV-6", "103")
        services.append(code)
    patient_class = message.get("PV1-2") or MAPPINGS.encounter["class"]["default"]
    if MAPPINGS.code("patient-class", patient_class) is None:
        raise Hl7Error("AE", f"PV1-2 holds an unknown patient class: {patient_class}", "PV1-2", "103")
    return Event(
        message=message,
        trigger=message.trigger,
        event_time=as_instant(recorded or sent, zone),
        sent=as_instant(sent, zone),
        control_id=message.control_id,
        facility=message.facility,
        facility_name=message.facility_name,
        visit=visit,
        identifier=identifier,
        patient_class=patient_class,
        attending=_person(message, "PV1-7"),
        admitted=parse_time(message.get("PV1-44"), zone, "PV1-44"),
        discharged=parse_time(message.get("PV1-45"), zone, "PV1-45"),
        expected_discharge=parse_time(message.get("PV2-9"), zone, "PV2-9"),
        needs_services=_flag(message, "ZSV-1") if zsv else None,
        receivers=receivers,
        primary_care=primary,
        ready=parse_time(message.get("ZSV-4"), zone, "ZSV-4"),
        contact=_person(message, "ZSV-5"),
        services=services,
        sip=_flag(message, "ZSV-7"),
    )
