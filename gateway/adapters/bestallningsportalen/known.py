"""What an order touches that the gateway already holds, read before its Bundle is built: its own
resources by id (its Provenance, this version's Binary, the first resource it wrote: a replay is answered
from these alone), the master data and units it names, and the lines of an earlier version; each kind
read for a chunk of orders at once."""

from __future__ import annotations

from gateway.adapters import mapping as m
from gateway.adapters.bestallningsportalen.order_keys import (
    SOURCE,
    SOURCE_VERSION,
    Known,
    OrderIds,
    extra_practitioners,
    order_ids,
    patient_identifier,
    people,
    unit_refs,
    units,
    version_of,
)
from gateway.adapters.ids import SourceIds
from gateway.adapters.intake import found, holders, identifier_search
from gateway.adapters.mapping import Found
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.services import Services


def read(svc: Services, context: RequestContext, order: Json) -> tuple[Known, Known | None]:
    """In one read-only unit of work: what is stored of the order (its Provenance, this version's Binary,
    the first resource it wrote: a replay is answered from these alone) and, unless this version or a
    later one is stored, everything else the order touches."""
    return read_all(svc, context, [order])[0]


def read_all(svc: Services, context: RequestContext, orders: list[Json]) -> list[tuple[Known, Known | None]]:
    """`read` for many orders in one read-only unit of work, each kind of thing read for all at once."""

    ids = SourceIds.of(svc.settings)

    def work(uow: UnitOfWork) -> list[tuple[Known, Known | None]]:
        helds = _held(uow, ids, orders)
        new = [
            i
            for i, (order, held) in enumerate(zip(orders, helds, strict=True))
            if (stored := stored_version(held, order_ids(ids, order))) is None or stored < version_of(order)
        ]
        knowns = _known(svc, uow, ids, [orders[i] for i in new], [helds[i] for i in new])
        by_index = dict(zip(new, knowns, strict=True))
        return [(held, by_index.get(i)) for i, held in enumerate(helds)]

    return svc.write_path.run(context, work, write=False)


def visible(svc: Services, context: RequestContext, order: Json, held: Known) -> bool:
    """Whether the client may see the stored order's first resource (its DeviceRequest or Task)."""
    first = held.by_id.get(first_written(order, order_ids(SourceIds.of(svc.settings), order)))
    return first is None or svc.write_path.can_read(
        context, str(first.resource["resourceType"]), first.res_id
    )


def _held(uow: UnitOfWork, ids: SourceIds, orders: list[Json]) -> list[Known]:
    """Each order's own resources (deterministic ids) as stored, in one query for them all."""
    wanted = [_own_ids(order_ids(ids, order), order) for order in orders]
    stored = uow.repository.current_of(key for keys in wanted for key in keys)
    helds = []
    for keys in wanted:
        held = Known()
        for res_type, res_id in keys:
            if (holder := found(stored.get((res_type, res_id)))) is not None:
                held.by_id[f"{res_type}/{res_id}"] = holder
        helds.append(held)
    return helds


def _own_ids(oids: OrderIds, order: Json) -> list[tuple[str, str]]:
    """(type, id) of the order's own resources other than its lines: its Provenance, this version's
    Binary, the first resource it writes, its Tasks, follow-up plan and self-care assessment."""
    first = first_written(order, oids).split("/")
    return [
        ("Provenance", oids.provenance),
        ("Binary", oids.binary(version_of(order))),
        (first[0], first[1]),
        ("Task", oids.confirm),
        ("Task", oids.task),
        ("CarePlan", oids.followup),
        ("Observation", oids.selfcare),
    ]


def _own_line(oids: OrderIds, stored: Found) -> bool:
    """Whether a DeviceRequest of the order's number is a line of this portal's order (its id is the
    one its line identifier gives), not one of another portal's order of the same number."""
    for identifier in stored.resource.get("identifier", []):
        if identifier.get("system") == m.ORDER_LINE and isinstance(identifier.get("value"), str):
            number, _, radnummer = identifier["value"].rpartition(":")
            return number == oids.ordernummer and stored.res_id == oids.line(radnummer)
    return False


def _known(
    svc: Services, uow: UnitOfWork, ids: SourceIds, orders: list[Json], helds: list[Known]
) -> list[Known]:
    """Everything each order touches that the gateway already holds (`helds`: what `_held` read): the
    master data they name, in a query per type for them all, and the lines of an earlier version of an
    order."""
    wanted = [_master_keys(order) for order in orders]
    every = [key for keys in wanted for kind in keys.values() for key in kind]
    held_by = holders(uow, every, by_type=len(orders) > 1)
    knowns = []
    for order, held, keys in zip(orders, helds, wanted, strict=True):
        known = Known(by_id=dict(held.by_id))
        [patient] = keys["patient"]
        known.patient = held_by.get(patient)
        known.organizations = {key[2]: held_by[key] for key in keys["units"] if key in held_by}
        known.practitioners = {key[2]: held_by[key] for key in keys["practitioners"] if key in held_by}
        known.roles = {key[2]: held_by[key] for key in keys["roles"] if key in held_by}
        known.devices = {key[1:]: held_by[key] for key in keys["devices"] if key in held_by}
        oids = order_ids(ids, order)
        if f"Provenance/{oids.provenance}" in held.by_id:
            # An earlier version is stored (every version writes the Provenance): its lines, to revoke the
            # ones this version no longer has (only this portal's: another's order may have the number).
            group = identifier_search(m.ORDER, order["ordernummer"], "group-identifier")
            for stored in svc.searcher.match(uow.connection, "DeviceRequest", group, limit=10_000):
                line = Found(stored.res_id, stored.version_id, stored.json())
                if _own_line(oids, line):
                    known.lines[stored.res_id] = line
                    known.by_id[f"DeviceRequest/{stored.res_id}"] = line
        knowns.append(known)
    return knowns


def _master_keys(order: Json) -> dict[str, list[tuple[str, str, str]]]:
    """The identifiers (type, system, value) of the master data and units an order names, by kind."""
    hsaids = [p["hsaid"] for p in people(order)] + extra_practitioners(order)
    return {
        "patient": [("Patient", *patient_identifier(order))],
        "units": [("Organization", m.HSA, hsaid) for hsaid in units(order)],
        "practitioners": [("Practitioner", m.HSA, hsaid) for hsaid in hsaids],
        "roles": [
            ("PractitionerRole", m.PRACTITIONER_ROLE, f"{person['hsaid']}@{person['enhet_hsaid']}")
            for person in people(order)
        ],
        "devices": [("Device", system, value) for system, value in unit_refs(order)],
    }


def stored_version(known: Known, oids: OrderIds) -> int | None:
    provenance = known.by_id.get(f"Provenance/{oids.provenance}")
    if provenance is None:
        return None
    for extension in provenance.resource.get("extension", []):
        if extension.get("url") == SOURCE_VERSION:
            return int(extension["valueInteger"])
    return None


def first_written(order: Json, oids: OrderIds) -> str:
    kind = m.code_map(SOURCE, "ordertyp")[order["ordertyp"]]
    if kind["resource"] == "DeviceRequest":
        return f"DeviceRequest/{oids.line(order['rader'][0]['radnummer'])}"
    return f"Task/{oids.task}"
