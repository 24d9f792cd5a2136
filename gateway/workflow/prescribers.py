"""Who a return report goes to: the actual prescriber(s) of the devices it concerns, found by following
every link the gateway stores (docs/workflow.md, return reports).

- a DeviceRequest: its `requester` (never the orderer, who is a Provenance `enterer` agent);
- a DeviceUseStatement: the DeviceRequest its unit was delivered for (extension `device-request`);
- a Device: the DeviceRequests of its use at its patient (the active DeviceUseStatement, else one of
  its patient's), and those that name it as their `assigned-unit`.

A request whose prescriber is unconfirmed (tag `unconfirmed-prescriber`) or missing, or a device no
request can be found for, goes instead, in this order, to the ordering unit (the Provenance `enterer`
agent's organisation), the unit responsible for the order's follow-up (the follow-up CarePlan's author),
or the Device's owner (else the request's performer, the device unit that delivers it); the report
carries a Swedish note saying which and why. `Links` reads either as the gateway (everything) or as a
client sees it (a visibility): the same routing serves both."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.store.repository import Stored
from gateway.store.visibility import Visibility, visible_keys
from gateway.workflow.at_home import (
    assigned_unit,
    identifiers,
    local_id,
    referring,
    request_of_use,
)

UNCONFIRMED = "unconfirmed-prescriber"
ORDER_FLAGS = "https://fhir.home-device-gateway.se/CodeSystem/adapter-tags"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
UNITS = ("Organization/", "HealthcareService/")
DEVICE_TYPES = frozenset({"Device", "DeviceUseStatement", "DeviceRequest"})
NOTES = {
    "unconfirmed": "Förskrivaren är obekräftad: rapporten går till den beställande enheten.",
    "ordering": "För ett av hjälpmedlen finns ingen känd förskrivare: rapporten går till den beställande "
    "enheten.",
    "follow-up": "För ett av hjälpmedlen finns varken känd förskrivare eller beställande enhet: rapporten "
    "går till den enhet som ansvarar för uppföljningen.",
    "owner": "För ett av hjälpmedlen finns varken känd förskrivare, beställande enhet eller enhet som "
    "ansvarar för uppföljningen: rapporten går till hjälpmedlets ägare.",
}


def split(reference: object) -> tuple[str, str] | None:
    """(Type, id) of a relative (or versioned) reference, else None."""
    if not isinstance(reference, str):
        return None
    res_type = reference.split("/", 1)[0]
    res_id = local_id(reference, res_type)
    return (res_type, res_id) if res_id else None


class Links:
    """The reads of a routing: the gateway's own (`visibility` None), or as a client sees them."""

    def __init__(self, uow: UnitOfWork, visibility: Visibility | None = None) -> None:
        self.uow = uow
        self.visibility = None if visibility is None or visibility.everything else visibility

    def _seen(self, found: list[Stored]) -> list[Stored]:
        found = [stored for stored in found if not stored.deleted]
        if self.visibility is None or not found:
            return found
        keys = visible_keys(self.uow.connection, self.visibility, [(s.res_type, s.res_id) for s in found])
        return [stored for stored in found if (stored.res_type, stored.res_id) in keys]

    def get(self, reference: object) -> Json | None:
        key = split(reference)
        stored = self.uow.repository.current(*key) if key else None
        seen = self._seen([stored]) if stored is not None else []
        return seen[0].json() if seen else None

    def referring(self, res_type: str, param: str, target: tuple[str, str]) -> list[Json]:
        return [s.json() for s in self._seen(list(referring(self.uow.connection, res_type, param, target)))]

    def by_identifier(self, res_type: str, identifier: tuple[str, str]) -> Json | None:
        held = self.uow.repository.held_by([(res_type, *identifier)])
        seen = self._seen(list(held.values()))
        return seen[0].json() if seen else None


@dataclass
class Routing:
    """The recipients found (by reference, in order), the notes the report carries, and what was followed
    to find them (`Type/id`, for the audit trail)."""

    recipients: dict[str, Json] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    followed: list[str] = field(default_factory=list)

    def add(self, recipient: object, note: str | None = None) -> bool:
        if not isinstance(recipient, dict):
            return False
        reference = recipient.get("reference")
        if not isinstance(reference, str) or not reference:
            return False
        if reference not in self.recipients:
            self.recipients[reference] = {k: v for k, v in recipient.items() if k in ("reference", "display")}
        if note is not None and NOTES[note] not in self.notes:
            self.notes.append(NOTES[note])
        return True

    def follow(self, reference: str) -> None:
        if reference not in self.followed:
            self.followed.append(reference)


def route(links: Links, references: list[str], routing: Routing | None = None) -> Routing:
    """The prescribers of the devices these references (Device, DeviceUseStatement, DeviceRequest) are."""
    routing = routing or Routing()
    for reference in references:
        key = split(reference)
        if key is None:
            continue
        res_type, res_id = key
        resource = links.get(reference) if res_type in DEVICE_TYPES else None
        if resource is None:
            continue
        if res_type == "DeviceRequest":
            _request(links, routing, f"DeviceRequest/{res_id}", resource, None)
        elif res_type == "DeviceUseStatement":
            _use(links, routing, resource)
        else:
            _device(links, routing, f"Device/{res_id}", resource)
    return routing


def _request(links: Links, routing: Routing, reference: str, request: Json, device: Json | None) -> None:
    routing.follow(reference)
    tags = (request.get("meta") or {}).get("tag") or []
    unconfirmed = any(isinstance(t, dict) and t.get("code") == UNCONFIRMED for t in tags)
    if not unconfirmed and routing.add(request.get("requester")):
        return
    ordering = _ordering_unit(links, reference, request, unconfirmed)
    if routing.add(ordering, "unconfirmed" if unconfirmed else "ordering"):
        return
    if routing.add(_follow_up_unit(links, reference), "follow-up"):
        return
    if device is None:
        unit = assigned_unit(request)
        device = links.by_identifier("Device", unit) if unit is not None else None
    routing.add((device or {}).get("owner") or request.get("performer"), "owner")


def _use(links: Links, routing: Routing, use: Json) -> None:
    device = links.get((use.get("device") or {}).get("reference"))
    request_id = request_of_use(use)
    request = links.get(f"DeviceRequest/{request_id}") if request_id else None
    if request is not None:
        _request(links, routing, f"DeviceRequest/{request_id}", request, device)
    elif device is not None:
        routing.add(device.get("owner"), "owner")


def _device(links: Links, routing: Routing, reference: str, device: Json) -> None:
    """The requests the unit was delivered for at its patient: by its use there, and by the requests that
    name it as their assigned unit."""
    routing.follow(reference)
    patient = (device.get("patient") or {}).get("reference")
    device_id = reference.split("/", 1)[1]
    uses = links.referring("DeviceUseStatement", "device", ("Device", device_id))
    uses = [u for u in uses if u.get("status") == "active"] or [
        u for u in uses if patient and (u.get("subject") or {}).get("reference") == patient
    ]
    wanted = {request_of_use(use) for use in uses} - {None}
    requests: dict[str, Json] = {}
    for request_id in sorted(str(i) for i in wanted):
        request = links.get(f"DeviceRequest/{request_id}")
        if request is not None:
            requests[request_id] = request
    patient_key = split(patient)
    units = identifiers(device)
    if patient_key is not None and patient_key[0] == "Patient" and units:
        for request in links.referring("DeviceRequest", "subject", patient_key):
            if assigned_unit(request) in units and request.get("status") != "entered-in-error":
                requests.setdefault(str(request.get("id")), request)
    for request_id, request in requests.items():
        _request(links, routing, f"DeviceRequest/{request_id}", request, device)
    if not requests:
        routing.add(device.get("owner"), "owner")


def _coded(agent: Json, code: str) -> bool:
    codings = ((agent.get("type") or {}).get("coding")) or []
    return any(isinstance(c, dict) and c.get("code") == code for c in codings)


def _organisation_of(links: Links, node: object) -> Json | None:
    """The unit a reference names: itself when an Organization or HealthcareService, a PractitionerRole's
    organization."""
    reference = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(reference, str):
        return None
    if reference.startswith(UNITS):
        return node  # type: ignore[return-value]
    if reference.startswith("PractitionerRole/"):
        role = links.get(reference)
        organization = (role or {}).get("organization")
        return organization if isinstance(organization, dict) else None
    return None


def _ordering_unit(links: Links, reference: str, request: Json, unconfirmed: bool) -> Json | None:
    """The unit that keyed the order: the Provenance `enterer` agent's organisation (its onBehalfOf when
    that is a unit, else the unit of its PractitionerRole); for an unconfirmed prescriber, also the
    requester's unit (the requester is then the orderer's role)."""
    key = split(reference)
    assert key is not None
    for provenance in links.referring("Provenance", "target", key):
        for agent in provenance.get("agent") or []:
            if not isinstance(agent, dict) or not _coded(agent, "enterer"):
                continue
            behalf = agent.get("onBehalfOf")
            if isinstance(behalf, dict) and str(behalf.get("reference", "")).startswith(UNITS):
                return behalf
            unit = _organisation_of(links, agent.get("who"))
            if unit is not None:
                return unit
    return _organisation_of(links, request.get("requester")) if unconfirmed else None


def _follow_up_unit(links: Links, reference: str) -> Json | None:
    """The unit responsible for the order's follow-up: the author of a CarePlan with an activity for the
    request (the order's follow-up plan), else a planned activity's performer."""
    key = split(reference)
    assert key is not None
    for plan in links.referring("CarePlan", "activity-reference", key):
        if isinstance(plan.get("author"), dict) and plan["author"].get("reference"):
            return dict(plan["author"])
        for activity in plan.get("activity") or []:
            for performer in ((activity or {}).get("detail") or {}).get("performer") or []:
                if isinstance(performer, dict) and performer.get("reference"):
                    return performer
    return None
