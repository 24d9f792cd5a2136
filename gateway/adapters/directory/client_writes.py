"""Write rule: a client's change to directory data dates from its write (issue 19, docs/adapters/
directory.md). Organization, Location and HealthcareService fields carry the time of the source event that
gave their value (`field-event-time`, master_data.py); an HSA extract only replaces a field whose value is
from an older event. A client (a region's system over FHIR) that changes a field's value but leaves its
recorded time as it was would otherwise keep the extract's old time, and an older extract imported later
would overwrite it: so the changed fields' times become the time of the write. A time the client changes
itself (its own source time) is kept; the gateway's own writers (adapters, the CLI, reactions) are left
alone, as they record their sources' times."""

from __future__ import annotations

from gateway.adapters import master_data
from gateway.hooks import internal_client
from gateway.model.types import Json
from gateway.search.dates import to_instant
from gateway.unit_of_work import UnitOfWork

TYPES = frozenset({"Organization", "Location", "HealthcareService"})


def client_field_times(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if action != "update" or current is None or resource.get("resourceType") not in TYPES:
        return resource
    context = uow.context
    if (
        context.source is not None
        or context.on_behalf_of is not None
        or internal_client(context.principal.client_id)
    ):
        return resource
    held_times = master_data.event_times(current)
    if not held_times:
        return resource
    old, new, new_times = (
        master_data.fields(current),
        master_data.fields(resource),
        master_data.event_times(resource),
    )
    stale = [
        name
        for name, value in new.items()
        if name in held_times and old.get(name) != value and new_times.get(name) == held_times[name]
    ]
    if not stale:
        return resource
    return master_data.retimed(resource, dict.fromkeys(stale, to_instant(uow.now)))
