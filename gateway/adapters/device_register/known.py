"""What a register row touches that the gateway already holds, read before its Bundle is built: its unit,
owner, patient, the unit's active uses and open return Tasks, the order line it was delivered for, and its
own resources by id; each kind read for a chunk of rows at once."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from gateway.adapters import mapping as m
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.device import unit_key
from gateway.adapters.ids import SourceIds
from gateway.adapters.intake import by_id, found, holders
from gateway.adapters.mapping import Found
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.extract import parse_reference
from gateway.services import Services


def _has_article(request: Json, article: str) -> bool:
    codings = (request.get("codeCodeableConcept") or {}).get("coding", [])
    return any(c.get("system") == m.ARTICLE and c.get("code") == article for c in codings)


def read_known(
    svc: Services, context: RequestContext, rows: list[Json], restricted: bool = False
) -> list[to_fhir.Known]:
    """Everything each row touches that the gateway already holds, in one read-only unit of work; when
    `restricted` (a registered client's rows), only order lines its owner performs."""
    return svc.write_path.run(context, lambda uow: _known(svc, uow, rows, restricted), write=False)


def names_organization(reference: Json, organization: Found | None, hsaid: str) -> bool:
    """Whether a Reference names this organisation: its Organization as stored (by id), or its HSA-id."""
    identifier = reference.get("identifier") or {}
    if identifier.get("system") == m.HSA and identifier.get("value") == hsaid:
        return True
    target = str(reference.get("reference") or "").split("/_history/")[0]
    return organization is not None and target.endswith(f"Organization/{organization.res_id}")


def foreign(row: Json, known: to_fhir.Known) -> bool:
    """The row's unit is stored with an owner other than the row's (a unit without one, a stub an order
    made, is the register's to take)."""
    if known.device is None or not known.device.resource.get("owner"):
        return False
    return not names_organization(known.device.resource["owner"], known.owner, row["agare_hsaid"])


def _known(svc: Services, uow: UnitOfWork, rows: list[Json], restricted: bool) -> list[to_fhir.Known]:
    """What each row touches: its unit, owner, patient, the unit's active uses and open return Tasks,
    the order line it was delivered for, and its own resources by id. Each kind is read for all the
    rows at once (a few queries a chunk, not a few a row)."""
    repository = uow.repository
    source_ids = SourceIds.of(svc.settings)
    # One query per kind: a single one would probe every type × system × value asked, here ~100 each.
    persons = [to_fhir.patient_identifier(row) for row in rows]
    held_by = holders(uow, [("Device", *unit_key(row)) for row in rows])
    held_by |= holders(uow, [("Organization", m.HSA, row["agare_hsaid"]) for row in rows])
    held_by |= holders(uow, [("Patient", *person) for person in persons if person])
    devices = [held_by.get(("Device", *unit_key(row))) for row in rows]
    units = sorted({device.res_id for device in devices if device})
    uses = _grouped(svc, uow, "DeviceUseStatement", "device", units, "device")
    tasks = _grouped(svc, uow, "Task", "focus", units, "focus", _returns_device)
    orders = sorted({row["forskrivning_ordernummer"] for row in rows if row.get("forskrivning_ordernummer")})
    lines = _order_lines(svc, uow, orders)
    own = [(row, _own_ids(source_ids, row)) for row in rows]
    held = {key: f for key, stored in repository.current_of(k for _, ids in own for k in ids).items()
            if (f := found(stored)) is not None}  # fmt: skip
    knowns = []
    for (row, ids), device, person in zip(own, devices, persons, strict=True):
        known = to_fhir.Known(device=device, owner=held_by.get(("Organization", m.HSA, row["agare_hsaid"])))
        known.patient = held_by.get(("Patient", *person)) if person else None
        if device:
            reference = f"Device/{device.res_id}"
            known.uses = [u for u in uses.get(reference, []) if u.resource.get("status") == "active"]
            known.return_tasks = [
                t for t in tasks.get(reference, []) if t.resource.get("status") in m.OPEN_TASK
            ]
        if row.get("forskrivning_ordernummer"):
            matching = sorted(
                (line for line in lines.get(row["forskrivning_ordernummer"], [])
                 if _has_article(line.resource, row["artikelnummer"])
                 and (not restricted or _performed_by(line, known.owner, row["agare_hsaid"]))),
                key=lambda line: line.res_id,
            )  # fmt: skip
            known.order_line = matching[0] if matching else None
        else:
            known.order_line = _delivered_for(uow, known.uses)
        known.by_id = {
            f"{res_type}/{res_id}": held[(res_type, res_id)]
            for res_type, res_id in ids
            if (res_type, res_id) in held
        }
        knowns.append(known)
    return knowns


_LIMIT = 1_000_000  # searches of a chunk's resources are not paged


def _escaped(value: str) -> str:
    """A search value with the characters FHIR search gives a meaning escaped (`,` `|` `$` `\\`)."""
    for char in ("\\", ",", "|", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _performed_by(line: Found, organization: Found | None, hsaid: str) -> bool:
    """The order line is performed by this organisation (its DeviceRequest.performer)."""
    return names_organization(line.resource.get("performer") or {}, organization, hsaid)


def _returns_device(task: Json) -> bool:
    """A `return-device` Task (its code in the gateway's task-code CodeSystem)."""
    codings = (task.get("code") or {}).get("coding", [])
    return any(c.get("system") == m.TASK_CODES and c.get("code") == "return-device" for c in codings)


def _grouped(
    svc: Services,
    uow: UnitOfWork,
    res_type: str,
    param: str,
    devices: list[str],
    element: str,
    keep: Callable[[Json], bool] = lambda _: True,
) -> dict[str, list[Found]]:
    """The resources of `res_type` whose `param` names any of these Devices (by id) and that `keep`
    takes, by the reference their `element` holds."""
    base = svc.settings.base_url.rstrip("/")
    grouped: dict[str, list[Found]] = {}
    for stored in uow.repository.referring(res_type, param, "Device", devices, base):
        resource = found(stored)
        if resource is None or not keep(resource.resource):
            continue
        values = resource.resource.get(element)
        for value in values if isinstance(values, list) else [values]:
            reference = (value or {}).get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str):
                key = parse_reference(reference, (base,))
                grouped.setdefault(f"{key.target_type}/{key.target_id}", []).append(resource)
    return grouped


def _order_lines(svc: Services, uow: UnitOfWork, orders: list[str]) -> dict[str, list[Found]]:
    """The DeviceRequests (with a status) of each order number."""
    if not orders:
        return {}
    values = ",".join(f"{_escaped(m.ORDER)}|{_escaped(number)}" for number in orders)
    query = "group-identifier=" + quote(values, safe=":/|,\\")
    lines: dict[str, list[Found]] = {}
    for stored in svc.searcher.match(uow.connection, "DeviceRequest", query, limit=_LIMIT):
        line = found(stored)
        if line is None or not line.resource.get("status"):
            continue
        group = line.resource.get("groupIdentifier") or {}
        if group.get("system") == m.ORDER and isinstance(group.get("value"), str):
            lines.setdefault(group["value"], []).append(line)
    return lines


def _delivered_for(uow: UnitOfWork, uses: list[Found]) -> Found | None:
    """The order line an active use points at (its DeviceRequest extension), when the row names none."""
    line = None
    for use in uses:
        for extension in use.resource.get("extension", []):
            reference = str((extension.get("valueReference") or {}).get("reference", ""))
            if extension.get("url") == to_fhir.DEVICE_REQUEST_EXT and "/" in reference:
                res_type, res_id = reference.split("/")[:2]
                line = by_id(uow, res_type, res_id)
    return line


def _own_ids(ids: SourceIds, row: Json) -> list[tuple[str, str]]:
    task_id, message_id = to_fhir.recall_ids(ids, row)
    use = to_fhir.use_id(ids, row)
    return [("DeviceUseStatement", use), ("Task", task_id), ("Communication", message_id)]
