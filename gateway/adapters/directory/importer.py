"""Writing an HSA catalogue extract's units through the write path (validate → authorize → store → index
→ audit → notify), one unit of work per unit: its Organization (HSA-id, name, telecom, `partOf` its
parent), a Location when the extract gives opening hours or an address (`hoursOfOperation`,
`managingOrganization`), and a HealthcareService per service (`telecom`, `availableTime`, `providedBy`),
each found by identifier (a conditional update) and merged field by field by source time
(`master_data.merge`: the unit's `changed` is the event time; a field a client wrote over FHIR dates from
when it was written, `master_data.dated`). So a later write by a region client wins, and an older extract
changes nothing it wrote after."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gateway.adapters import master_data
from gateway.adapters.directory.records import Hours, Unit
from gateway.errors import precondition_failed
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import Stored

HSA = "urn:oid:1.2.752.29.4.19"
BASE = "https://fhir.home-device-gateway.se"
LOCATION_ID = f"{BASE}/identifier/hsa-directory-location"
SERVICE_ID = f"{BASE}/identifier/hsa-directory-service"
PROFILE = "http://hl7.se/fhir/ig/base/StructureDefinition/SEBaseOrganization"


@dataclass
class Written:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def available(hours: tuple[Hours, ...]) -> list[Json]:
    """Opening hours as `availableTime` (HealthcareService) and `hoursOfOperation` (Location) alike."""
    found = []
    for h in hours:
        item: Json = {"daysOfWeek": list(h.days)}
        if h.all_day:
            item["allDay"] = True
        else:
            item["availableStartTime"], item["availableEndTime"] = h.opens, h.closes
        found.append(item)
    return found


def opening(hours: tuple[Hours, ...]) -> list[Json]:
    found = []
    for item in available(hours):
        shaped: Json = {"daysOfWeek": item["daysOfWeek"]}
        if item.get("allDay"):
            shaped["allDay"] = True
        else:
            shaped["openingTime"], shaped["closingTime"] = (
                item["availableStartTime"],
                item["availableEndTime"],
            )
        found.append(shaped)
    return found


class DirectoryWriter:
    def __init__(self, svc: Services, context: RequestContext) -> None:
        self.svc = svc
        self.context = context

    def write(self, unit: Unit, tally: Counter[str]) -> None:
        """One unit in one unit of work; counts what was created, updated or unchanged."""

        def work(uow: UnitOfWork) -> Counter[str]:
            counted: Counter[str] = Counter()
            parent = self._parent(uow, unit)
            organization: Json = {
                "resourceType": "Organization",
                "meta": {"profile": [PROFILE]},
                "identifier": [{"system": HSA, "value": unit.hsa_id}],
                "active": True,
                "name": unit.name,
            }
            if unit.telecom:
                organization["telecom"] = list(unit.telecom)
            if parent is not None:
                organization["partOf"] = parent
            org = self._put(
                uow, "Organization", f"identifier={HSA}|{unit.hsa_id}", organization, unit, counted
            )
            owner = {"reference": f"Organization/{org.res_id}", "display": unit.name}
            if unit.hours or unit.address:
                location: Json = {
                    "resourceType": "Location",
                    "identifier": [{"system": LOCATION_ID, "value": unit.hsa_id}],
                    "status": "active",
                    "name": unit.name,
                    "managingOrganization": owner,
                }
                if unit.telecom:
                    location["telecom"] = list(unit.telecom)
                if unit.address:
                    location["address"] = unit.address
                if unit.hours:
                    location["hoursOfOperation"] = opening(unit.hours)
                self._put(uow, "Location", f"identifier={LOCATION_ID}|{unit.hsa_id}", location, unit, counted)
            for service in unit.services:
                key = f"{unit.hsa_id}/{service.key}"
                resource: Json = {
                    "resourceType": "HealthcareService",
                    "identifier": [{"system": SERVICE_ID, "value": key}],
                    "active": True,
                    "providedBy": owner,
                    "name": service.name,
                }
                if service.telecom:
                    resource["telecom"] = list(service.telecom)
                if service.hours:
                    resource["availableTime"] = available(service.hours)
                self._put(uow, "HealthcareService", f"identifier={SERVICE_ID}|{key}", resource, unit, counted)
            return counted

        tally.update(self.svc.write_path.run(self.context, work, True))

    def _parent(self, uow: UnitOfWork, unit: Unit) -> Json | None:
        if unit.parent is None:
            return None
        found = self.svc.write_path.match(uow, "Organization", f"identifier={HSA}|{unit.parent}", "read")
        if found:
            return {"reference": f"Organization/{found[0].res_id}"}
        return {"identifier": {"system": HSA, "value": unit.parent}}

    def _put(
        self, uow: UnitOfWork, res_type: str, query: str, incoming: Json, unit: Unit, counted: Counter[str]
    ) -> Stored:
        """The resource found by `query`, merged with `incoming` by source time, written when changed."""
        path = self.svc.write_path
        found = path.match(uow, res_type, query, "update")
        if len(found) > 1:
            raise precondition_failed(f"The condition '{query}' matches more than one {res_type}")
        if not found:
            created = path.conditional_update(
                uow, res_type, query, master_data.new_master(incoming, unit.changed)
            )
            counted["created"] += 1
            return created.stored
        current = found[0]
        held = master_data.dated(current.json(), to_instant(current.last_updated))
        merged = master_data.merge(held, incoming, unit.changed)
        if merged is held:
            counted["unchanged"] += 1
            return current
        result = path.update(uow, res_type, current.res_id, merged, if_match=current.version_id)
        counted["updated" if result.changed else "unchanged"] += 1
        return result.stored
