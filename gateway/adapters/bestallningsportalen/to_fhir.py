"""One checked Beställningsportalen order → one transaction Bundle (the mapping; the tables it reads are
in mappings/bestallningsportalen/). Pure: what the gateway already holds comes in as `Known`, read before.

Ids derive from the portal, the order number and what the resource is of the order (`OrderIds`: UUIDs
from an HMAC under the installation's secret, gateway/adapters/ids.py), so a replay writes to the same
resources and an id tells nothing of the order number; master data (Patient, Organization, Practitioner,
PractitionerRole) is found by its identifier and merged (never erased), or created with a conditional
create on that identifier.

What an order is known by and names is in order_keys.py, the entries collected (master data merged) in
builder.py, the Tasks in tasks.py."""

from __future__ import annotations

import base64
from typing import Any

from gateway.adapters import mapping as m
from gateway.adapters.bestallningsportalen import follow_up
from gateway.adapters.bestallningsportalen.builder import Builder
from gateway.adapters.bestallningsportalen.order_keys import (
    SOURCE,
    SOURCE_VERSION,
    Known,
    extra_practitioners,
    people,
    units,
    version_of,
)
from gateway.adapters.bestallningsportalen.tasks import confirm_task, confirmed_requester, work_task
from gateway.adapters.ids import SourceIds
from gateway.model.types import Json

ORDER_TYPE_EXT = f"{m.EXT}/order-type"
ASSIGNED_UNIT_EXT = f"{m.EXT}/assigned-unit"
ORDER_TAG = {"system": m.TAGS, "code": "bestallningsportalen-order", "display": "Beställningsportalen order"}
UNCONFIRMED = {
    "system": m.TAGS,
    "code": "unconfirmed-prescriber",
    "display": "The requester is the person who keyed the order, assumed to be the prescriber",
}


def _coding(table: str, code: str) -> Json:
    display = m.code_map(SOURCE, table)[code].get("display")
    coding: Json = {"system": f"{m.ORDER_CODES}-{table}", "code": code}
    if display:
        coding["display"] = display
    return coding


def _parameter(code: str, display: str, **value: Any) -> Json:
    return {
        "code": {"coding": [{"system": f"{m.ORDER_CODES}-parameter", "code": code, "display": display}]},
        **value,
    }


def build(order: Json, raw: bytes, known: Known, recorded: str, ids: SourceIds) -> Json:
    """The transaction Bundle for one checked order."""
    b = Builder(order, known, recorded, ids)
    oids, ordernummer, version = b.oids, str(order["ordernummer"]), version_of(order)
    kind = m.code_map(SOURCE, "ordertyp")[order["ordertyp"]]
    status = m.code_map(SOURCE, "status")[order["status"]]
    group = {"system": m.ORDER, "value": ordernummer}

    raw_ref = b.own(
        {
            "resourceType": "Binary",
            "id": oids.binary(version),
            "meta": {"tag": [m.RAW_TAG]},
            "contentType": "application/json",
            "data": base64.b64encode(raw).decode(),
        },
        target=False,
    )
    patient = b.patient()
    orgs = {hsaid: b.organization(hsaid, name) for hsaid, name in units(order).items()}
    device_unit = orgs[m.tables(SOURCE)["device_unit"]["hsaid"]]
    practitioners = {p["hsaid"]: b.practitioner(p) for p in people(order)}
    roles = {p["hsaid"]: b.role(p, practitioners[p["hsaid"]], orgs[p["enhet_hsaid"]]) for p in people(order)}
    orderer = order["registrerad_av"]
    prescriber = order.get("forskrivare")
    entered_by = roles[orderer["hsaid"]]
    if (
        prescriber
        and prescriber["hsaid"] == orderer["hsaid"]
        and prescriber["enhet_hsaid"] != orderer["enhet_hsaid"]
    ):
        # the prescriber keyed it at another unit: their role there entered it
        entered_by = b.role(orderer, practitioners[orderer["hsaid"]], orgs[orderer["enhet_hsaid"]])
    for hsaid in extra_practitioners(order):
        practitioners[hsaid] = b.practitioner({"hsaid": hsaid})
    requester = roles[prescriber["hsaid"]] if prescriber else roles[orderer["hsaid"]]
    requester_display = (prescriber or orderer)["namn"]

    confirm = known.by_id.get(f"Task/{oids.confirm}")
    confirmed = confirmed_requester(confirm.resource) if confirm else None
    if prescriber is None and confirmed is not None:
        requester, requester_display = confirmed["reference"], confirmed.get("display", "")
    unconfirmed = prescriber is None and confirmed is None

    written_lines: list[str] = []
    supporting: list[Json] = []
    if order.get("egenvard") and kind["resource"] == "DeviceRequest":
        supporting.append(m.ref(_self_care(b, order, status, patient, practitioners, roles)))
    elif kind["resource"] == "DeviceRequest":
        _withdraw(b, "observation", f"Observation/{oids.selfcare}", "egenvårdsbedömning")
    if kind["resource"] == "DeviceRequest":
        for line in order["rader"]:
            written_lines.append(
                _device_request(
                    b,
                    order,
                    line,
                    kind,
                    status,
                    group,
                    patient,
                    requester,
                    requester_display,
                    device_unit,
                    supporting,
                    unconfirmed,
                )
            )
        kept = {oids.line(line["radnummer"]) for line in order["rader"]}
        for res_id, found in known.lines.items():
            if res_id not in kept and found.resource.get("status") != "revoked":  # a withdrawn line
                b.own({**found.resource, "status": "revoked"})
        if order.get("uppfoljning"):
            _follow_up(b, order, status, patient, orgs, written_lines)
        else:
            _withdraw(b, "careplan", f"CarePlan/{oids.followup}", "uppföljningsplan")
        if unconfirmed or (confirm and confirm.resource.get("status") in m.OPEN_TASK):
            confirm_task(b, order, confirm, unconfirmed, status, group, patient, orgs, written_lines)
    else:
        work_task(b, order, kind, status, group, patient, requester, device_unit)

    on_behalf = {"onBehalfOf": m.ref(requester, requester_display)} if prescriber else {}
    agents = [
        m.agent("author", m.ref(requester, requester_display)),
        m.agent("enterer", m.ref(entered_by, orderer["namn"]), **on_behalf),
        m.agent("assembler", {"display": f"{m.tables(SOURCE)['source']['name']} (gateway adapter)"}),
    ]
    first = known.by_id.get(f"Provenance/{oids.provenance}")
    operation = "UPDATE" if first else "CREATE"
    provenance = {
        "resourceType": "Provenance",
        "id": oids.provenance,
        "meta": {"tag": [ORDER_TAG]},
        "extension": [{"url": SOURCE_VERSION, "valueInteger": version}],
        "target": [m.ref(t) for t in b.targets],
        "occurredDateTime": b.event,
        "recorded": recorded,
        "activity": {"coding": [{"system": m.V3_OPERATION, "code": operation}]},
        "agent": agents,
        "entity": [
            {
                "role": "source",
                "what": {
                    **m.ref(raw_ref),
                    "display": f"{m.tables(SOURCE)['source']['name']} order {ordernummer} version {version}",
                },
            }
        ],
    }
    b.own(provenance, target=False)
    return {"resourceType": "Bundle", "type": "transaction", "entry": b.entries}


def _device_request(
    b: Builder,
    order: Json,
    line: Json,
    kind: Json,
    status: Json,
    group: Json,
    patient: str,
    requester: str,
    requester_display: str,
    device_unit: str,
    supporting: list[Json],
    unconfirmed: bool,
) -> str:
    ordernummer = str(order["ordernummer"])
    code: Json = {
        "coding": [{"system": m.ARTICLE, "code": str(line["artikelnummer"]), "display": line["benamning"]}],
        "text": line["benamning"],
    }
    if line.get("iso9999"):
        code["coding"].append({"system": m.ISO9999, "code": line["iso9999"]})
    parameters = [_parameter("antal", "Antal", valueQuantity={"value": line["antal"], "unit": "st"})]
    if line.get("installningar"):
        parameters.append(
            _parameter("installningar", "Inställningar", valueCodeableConcept={"text": line["installningar"]})
        )
    delivery = order.get("leverans") or {}
    if delivery.get("satt"):
        concept = {"coding": [_coding("leveranssatt", delivery["satt"])]}
        parameters.append(_parameter("leveranssatt", "Leveranssätt", valueCodeableConcept=concept))
    for condition in delivery.get("villkor") or []:
        concept = {"coding": [_coding("villkor", condition)]}
        parameters.append(_parameter("leveransvillkor", "Villkor för leverans", valueCodeableConcept=concept))
    resource: Json = {
        "resourceType": "DeviceRequest",
        "id": b.oids.line(line["radnummer"]),
        "extension": [{"url": ORDER_TYPE_EXT, "valueCoding": _coding("ordertyp", order["ordertyp"])}],
        "identifier": [{"system": m.ORDER_LINE, "value": f"{ordernummer}:{line['radnummer']}"}],
        "groupIdentifier": group,
        "status": status["request"],
        "intent": kind["intent"],
        "codeCodeableConcept": code,
        "parameter": parameters,
        "subject": m.ref(patient),
        "authoredOn": order["skapad"],
        "requester": m.ref(requester, requester_display),
        "performer": m.ref(device_unit),
    }
    if unconfirmed:
        resource["meta"] = {"tag": [UNCONFIRMED]}
    if line.get("individnummer"):
        default = m.tables(SOURCE)["default_register"]
        system = m.unit_system(line.get("register") or default)
        unit = {"identifier": {"system": system, "value": line["individnummer"]}}
        resource["extension"].append({"url": ASSIGNED_UNIT_EXT, "valueReference": unit})
    if delivery.get("onskat_datum"):
        resource["occurrenceDateTime"] = delivery["onskat_datum"]
    if supporting:
        resource["supportingInfo"] = supporting
    notes = [
        text
        for text in (
            order.get("meddelande"),
            f"Leveransadress: {delivery['adress']}" if delivery.get("adress") else None,
            f"Kostnadsställe: {order['kostnadsstalle']}" if order.get("kostnadsstalle") else None,
        )
        if text
    ]
    if notes:
        resource["note"] = [{"text": text} for text in notes]
    return b.own(resource)


def _self_care(
    b: Builder, order: Json, status: Json, patient: str, practitioners: dict[str, str], roles: dict[str, str]
) -> str:
    care = order["egenvard"]
    resource: Json = {
        "resourceType": "Observation",
        "id": b.oids.selfcare,
        "status": status["observation"],
        "code": {"coding": [{"system": m.SELF_CARE, "code": "assessment", "display": "Egenvårdsbedömning"}]},
        "subject": m.ref(patient),
        "valueCodeableConcept": {
            "coding": [{**_coding("bedomning", care["bedomning"]), "system": m.SELF_CARE}]
        },
    }
    if care.get("datum"):
        resource["effectiveDateTime"] = care["datum"]
    assessor = care.get("bedomd_av_hsaid")
    if assessor:
        resource["performer"] = [m.ref(roles.get(assessor) or practitioners[assessor])]
    handlers = care.get("hanteras_av") or []
    if handlers:
        # One component whose concept lists every handler. One component per handler is the cleaner
        # shape, but the search index cannot yet take two Observation components with values (the
        # official `(Observation.component.value as CodeableConcept)` raises on a collection).
        codings = [{**_coding("hanteras_av", who), "system": m.SELF_CARE} for who in handlers]
        texts = [str(c.get("display", c["code"])) for c in codings]
        resource["component"] = [
            {
                "code": {"coding": [{"system": m.SELF_CARE, "code": "handled-by", "display": "Hanteras av"}]},
                "valueCodeableConcept": {"coding": codings, "text": ", ".join(texts)},
            }
        ]
    return b.own(resource)


def _follow_up(
    b: Builder, order: Json, status: Json, patient: str, orgs: dict[str, str], lines: list[str]
) -> None:
    current = b.known.by_id.get(f"CarePlan/{b.oids.followup}")
    unit = orgs[order["uppfoljning"]["ansvarig_enhet_hsaid"]]
    b.own(
        follow_up.careplan(
            order,
            version_of(order),
            status,
            b.oids.followup,
            patient,
            unit,
            lines,
            current.resource if current else None,
        )
    )


def _withdraw(b: Builder, kind: str, key: str, what: str) -> None:
    """An earlier version's resource (`key`) that this version of the order no longer has: ended with the
    status `withdrawn` in codes.yaml names and a note saying why, never deleted; left as it is when held
    with an ended status already (so a later version writes nothing more)."""
    found = b.known.by_id.get(key)
    rule = m.tables(SOURCE)["withdrawn"][kind]
    if found is None or found.resource.get("status") in rule["ended"]:
        return
    reason = f"Version {version_of(b.order)} av order {b.order['ordernummer']} har inte längre någon {what}"
    resource = {
        **found.resource,
        "status": rule["status"],
        "note": [*found.resource.get("note", []), {"text": reason}],
    }
    if "activity" in resource:
        why = follow_up.reason("plan-withdrawn", reason)
        resource["activity"] = [follow_up.end(activity, why) for activity in resource["activity"]]
    b.own(resource)
